"""Streaming ``facenet embed --out DIR/``: shards written as it goes, a rerun resumes, a folder
of another run is refused, SIGKILL then rerun equals an uninterrupted run, and the Ray engine
writes what the single process writes."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facenet.apps.embed_stream import embed_to_shards
from facenet.apps.embedder import Face, PhotoResult
from facenet.apps.embedding_table import load_embeddings, shard_files
from facenet.cli import main

DIM = 8
META = {"model": {"name": "fake"}, "crop": "box", "detector": "fake", "subject_only": False}


def fake_results(paths):
    """Deterministic faces per path: 'badN' unreadable, 'noneN' faceless, else N % 3 + 1 faces."""
    for p in paths:
        name = Path(p).stem
        if name.startswith("bad"):
            yield PhotoResult(p, [], f"{p}: cannot be read")
            continue
        n = 0 if name.startswith("none") else int(name.split("_")[-1]) % 3 + 1
        rng = np.random.default_rng(abs(hash(name)) % 2**32)
        faces = []
        for i in range(n):
            v = rng.normal(size=DIM).astype(np.float32)
            faces.append(Face(p, i, (i, i, i + 10.0, i + 10.0), 0.9, np.zeros((1, 1, 3), np.uint8),
                              v / np.linalg.norm(v)))  # fmt: skip
        yield PhotoResult(p, faces)


PHOTOS = [f"/photos/p_{i}.jpg" for i in range(20)] + ["/photos/bad_1.jpg", "/photos/none_2.jpg"]


def rows(table):
    return list(zip(table.paths.tolist(), table.face_index.tolist(), strict=True))


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_shards_hold_every_face_once_in_order(tmp_path, fmt):
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        pytest.skip("Parquet shards need pyarrow (the parquet extra)")
    report = embed_to_shards(fake_results, PHOTOS, tmp_path / "out", META, DIM, 6, fmt, False)
    assert [s.name for s in report.shards] == [f"part-0000{i}.{fmt}" for i in range(4)]
    assert report.unreadable == 1 and report.faceless == 1 and report.with_faces == 20
    whole = load_embeddings(tmp_path / "out")
    expected = [(f.path, f.face_index) for r in fake_results(PHOTOS) for f in r.faces]
    assert rows(whole) == expected and report.faces == len(expected)
    vectors = np.stack([f.embedding for r in fake_results(PHOTOS) for f in r.faces])
    np.testing.assert_array_equal(whole.embeddings, vectors)
    assert whole.meta["model"] == {"name": "fake"} and "photos" not in whole.meta
    assert report.problems == [
        "/photos/bad_1.jpg: cannot be read",
        "/photos/none_2.jpg: no face found",
    ]


def test_a_rerun_after_a_crash_resumes_and_equals_an_uninterrupted_run(tmp_path):
    seen = []

    def crashing(paths):
        for i, r in enumerate(fake_results(paths)):
            if i == 13:
                raise KeyboardInterrupt  # killed in the middle of the third shard
            seen.append(r.path)
            yield r

    with pytest.raises(KeyboardInterrupt):
        embed_to_shards(crashing, PHOTOS, tmp_path / "out", META, DIM, 5, "npz", False)
    assert len(shard_files(tmp_path / "out")) == 2  # whole shards only; nothing half-written
    asked = []

    def counting(paths):
        asked.extend(paths)
        yield from fake_results(paths)

    report = embed_to_shards(counting, PHOTOS, tmp_path / "out", META, DIM, 5, "npz", False)
    assert report.already_done == 10 and asked == PHOTOS[10:]  # the done photos are not redone
    embed_to_shards(fake_results, PHOTOS, tmp_path / "once", META, DIM, 5, "npz", False)
    a, b = load_embeddings(tmp_path / "out"), load_embeddings(tmp_path / "once")
    assert rows(a) == rows(b)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    again = embed_to_shards(counting, PHOTOS, tmp_path / "out", META, DIM, 5, "npz", False)
    assert again.already_done == len(PHOTOS) and again.shards == []  # all done: nothing to do


def test_a_folder_of_another_run_is_refused(tmp_path):
    embed_to_shards(fake_results, PHOTOS[:3], tmp_path / "out", META, DIM, 5, "npz", False)
    other = {**META, "model": {"name": "other", "ref": "o.safetensors", "weights_hash": "b" * 64}}
    with pytest.raises(ValueError, match="part-00000.npz: made with model ") as e:
        embed_to_shards(fake_results, PHOTOS, tmp_path / "out", other, DIM, 5, "npz", False)
    assert "o.safetensors (weights bbbbbbbbbbbb)" in str(e.value) and "b" * 13 not in str(e.value)
    with pytest.raises(ValueError, match="subject_only"):
        embed_to_shards(fake_results, PHOTOS, tmp_path / "out", {**META, "subject_only": True},
                        DIM, 5, "npz", False)  # fmt: skip
    (tmp_path / "out" / "part-00001.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="part-00001.npz: not a facenet embeddings file"):
        embed_to_shards(fake_results, PHOTOS, tmp_path / "out", META, DIM, 5, "npz", False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        embed_to_shards(fake_results, PHOTOS, tmp_path / "file", META, DIM, 5, "npz", False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without embeddings shards"):
        load_embeddings(tmp_path / "empty")


# --------------------------------------------------------------------------- the command, on ORL


@pytest.fixture
def orl_photos(orl_dir):
    return [str(orl_dir / f"s{p}" / f"{k}.pgm") for p in range(1, 9) for k in range(1, 6)]


def test_the_folder_output_equals_the_file_output(orl_photos, tmp_path, trained_tiny, capsys):
    model = ["--model", str(trained_tiny), "--crop", "none", "--no-progress"]
    assert main(["embed", *orl_photos, "--out", str(tmp_path / "one.npz"), *model]) == 0
    assert main(["embed", *orl_photos, "--out", f"{tmp_path}/dir/", "--shard-photos", "7",
                 "--format", "npz", *model]) == 0  # fmt: skip
    assert "6 new shard(s); 0 photo(s) already done" in capsys.readouterr().out
    a, b = load_embeddings(tmp_path / "one.npz"), load_embeddings(tmp_path / "dir")
    assert rows(a) == rows(b) and len(a) == 40
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert main(["embed", *orl_photos, "--out", f"{tmp_path}/dir/", *model]) == 0
    assert "0 new shard(s); 40 photo(s) already done" in capsys.readouterr().out
    # the shard folder is an embeddings input like a file
    assert main(["cluster", "--embeddings", str(tmp_path / "dir"), "--out", str(tmp_path / "c"),
                 "--link", "none"]) == 0  # fmt: skip
    assert "40 faces" in capsys.readouterr().out
    code = main(["embed", *orl_photos, "--out", f"{tmp_path}/x.npz", "--engine", "ray", *model])
    assert code == 2 and "--out DIR/" in capsys.readouterr().err


def test_sigkill_in_the_middle_then_a_rerun_equals_an_uninterrupted_run(
    orl_dir, tmp_path, trained_tiny
):
    photos = sorted(str(p) for p in orl_dir.glob("s*/*.pgm"))  # 400 photos, one shard each
    cmd = [sys.executable, "-m", "facenet", "embed", *photos, "--model", str(trained_tiny),
           "--crop", "none", "--no-progress", "--shard-photos", "1", "--format", "npz"]  # fmt: skip
    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", f"{out}/"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not out.is_dir() or len(shard_files(out)) < 5:
        assert proc.poll() is None and time.monotonic() < deadline, "finished before the kill"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(shard_files(out))
    assert 5 <= written < len(photos), written  # killed in the middle
    assert subprocess.run([*cmd, "--out", f"{out}/"], capture_output=True).returncode == 0
    assert (
        subprocess.run([*cmd, "--out", f"{tmp_path}/whole/"], capture_output=True).returncode == 0
    )
    a, b = load_embeddings(out), load_embeddings(tmp_path / "whole")
    assert rows(a) == rows(b) and len(a) == len(photos)
    # why: the resumed run batches the photos after the kill differently (other summation order)
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-6, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the 'ray' extra")
def test_the_ray_engine_writes_what_the_single_process_writes(orl_photos, tmp_path, trained_tiny):
    model = ["--model", str(trained_tiny), "--crop", "none", "--no-progress", "--format", "npz"]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    photos = [*orl_photos, str(bad)]
    assert main(["embed", *photos, "--out", f"{tmp_path}/local/", *model]) == 1  # 1: unreadable
    assert main(["embed", *photos, "--out", f"{tmp_path}/ray/", "--engine", "ray",
                 "--workers", "2", *model]) == 1  # fmt: skip
    a, b = load_embeddings(tmp_path / "local"), load_embeddings(tmp_path / "ray")
    assert rows(a) == rows(b) and len(a) == len(orl_photos)
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(a.boxes, b.boxes)
