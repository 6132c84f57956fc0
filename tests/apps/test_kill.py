"""SIGKILL during enrolment loses at most that enrolment and never corrupts the gallery.

A child process enrols people in a loop (each one transaction of many embeddings, then an index
refresh) and is killed at random moments; after every kill the gallery must open, pass SQLite's
integrity check, hold only complete enrolments, and answer searches consistently with SQLite.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from facenet.apps.gallery import FaceRecord, Gallery
from facenet.fingerprint import ModelFingerprint

PER_PERSON = 50
DIM = 64

CHILD = textwrap.dedent(
    f"""
    import sys
    import numpy as np
    from facenet.apps.gallery import FaceRecord, Gallery
    from facenet.fingerprint import ModelFingerprint

    model = ModelFingerprint("tiny", "test", "a" * 64, {DIM})
    g = Gallery(sys.argv[1], approximate_above=int(sys.argv[3]))
    start = int(sys.argv[2])
    for i in range(start, start + 100000):
        rng = np.random.default_rng(i)
        v = rng.normal(size=({PER_PERSON}, {DIM})).astype(np.float32)
        faces = [FaceRecord(x, f"p{{i}}_{{j}}.jpg", 0, (0, 0, 1, 1)) for j, x in enumerate(v)]
        g.enroll(f"person{{i:06d}}", faces, model)
        g.search(v[:1], 1)  # refreshes and rewrites index.faiss
        print(i, flush=True)
    """
)


def check_gallery(directory) -> int:
    with sqlite3.connect(directory / "gallery.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = db.execute(
            "SELECT i.name, COUNT(e.id) FROM identities i LEFT JOIN embeddings e"
            " ON e.identity_id = i.id GROUP BY i.id"
        ).fetchall()
        orphans = db.execute(
            "SELECT COUNT(*) FROM embeddings WHERE identity_id NOT IN (SELECT id FROM identities)"
        ).fetchone()[0]
    assert orphans == 0
    assert all(n == PER_PERSON for _, n in counts), "a torn enrolment survived"
    g = Gallery(directory)
    # the index (possibly stale or half-written before the kill) must agree with SQLite
    for name, _ in counts[-3:]:
        i = int(name[len("person") :])
        v = np.random.default_rng(i).normal(size=(PER_PERSON, DIM)).astype(np.float32)
        assert g.search(v[:1], 1)[0][0].name == name
    g.close()
    return len(counts)


@pytest.mark.slow
@pytest.mark.parametrize("approximate_above", [10**9, 200])  # flat index, then HNSW
def test_sigkill_during_enrolment_never_corrupts(tmp_path, approximate_above):
    directory = tmp_path / "g"
    rng = np.random.default_rng(0)
    enrolled = 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for trial in range(4):
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(directory),
                str(trial * 1000),
                str(approximate_above),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        # let it commit a few enrolments, then kill it at a random moment of the next ones
        done = 0
        deadline = time.monotonic() + 120
        while done < 3 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            done += 1
        assert done == 3, child.stderr.read().decode()
        time.sleep(float(rng.uniform(0.0, 0.15)))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        count = check_gallery(directory)
        assert count >= enrolled + done  # committed enrolments are never lost
        enrolled = count
    # and the gallery still takes new enrolments afterwards
    g = Gallery(directory)
    g.enroll(
        "after",
        [FaceRecord(np.ones(DIM, np.float32), "x.jpg")],
        ModelFingerprint("tiny", "test", "a" * 64, DIM),
    )
    assert g.search(np.ones((1, DIM), np.float32), 1)[0][0].name == "after"
