"""``facenet serve`` as a real process on a free loopback port: killed with SIGKILL in the middle of
enrolments it loses at most the enrolments in flight and comes back serving the same gallery;
SIGTERM lets the requests in flight finish; keys never reach its output."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from _images import png

from facenet.data.synthetic import make_synthetic
from facenet.models.loading import save_weights
from facenet.serve.keys import KeyStore

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A ``facenet serve`` child process and its combined output."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "facenet", "serve", "--port", str(self.port), *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"facenet serve exited: {log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"facenet serve did not get ready: {log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._out.close()
        return code


@pytest.fixture
def setup(tmp_path, tiny):
    """(argv, env, read key, write key) of a server on the tiny model and a fresh gallery."""
    model = save_weights(tiny, tmp_path / "tiny.safetensors")
    with KeyStore(tmp_path / "keys.sqlite") as store:
        read, write = store.create("read")[1], store.create("write")[1]
    env = {**os.environ, "FACENET_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    argv = ["--model", str(model), "--crop", "none", "--gallery", str(tmp_path / "gallery"),
            "--keys", str(tmp_path / "keys.sqlite")]  # fmt: skip
    return argv, env, read, write


def check_gallery(directory: Path, per_person: int) -> list[str]:
    """SQLite's integrity check passes and every identity is whole; returns the names."""
    with sqlite3.connect(directory / "gallery.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = db.execute(
            "SELECT i.name, COUNT(e.id) FROM identities i LEFT JOIN embeddings e"
            " ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name"
        ).fetchall()
    assert all(n == per_person for _, n in counts), f"a torn enrolment survived: {counts}"
    return [name for name, _ in counts]


def test_sigkill_mid_enrolment_loses_nothing_acknowledged(setup, tmp_path):
    argv, env, read, write = setup
    people = make_synthetic(200, 2, size=40, seed=5)
    photos = [png(im) for im in people.images]
    server = Process(argv, env, tmp_path / "serve.log")
    acknowledged: list[str] = []
    stop = threading.Event()

    def enrol_forever(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for p in range(worker, 200, 4):
                if stop.is_set():
                    return
                names = [f"p{p:03d}", f"p{p:03d}"]
                files = [
                    ("images", (f"{p}-{j}.png", photos[2 * p + j], "image/png")) for j in (0, 1)
                ]
                try:
                    r = c.post("/v1/gallery/identities", files=files, data={"names": names},
                               headers={"Authorization": f"Bearer {write}"})  # fmt: skip
                except httpx.TransportError:  # killed under us
                    return
                if r.status_code == 200:
                    acknowledged.append(names[0])

    threads = [threading.Thread(target=enrol_forever, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    while len(acknowledged) < 20 and all(t.is_alive() for t in threads):
        time.sleep(0.01)
    server.stop(signal.SIGKILL)  # enrolments are in flight now
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acknowledged) >= 20

    names = check_gallery(tmp_path / "gallery", per_person=2)
    assert set(acknowledged) <= set(names)  # an answered enrolment survived the kill
    assert len(names) <= len(acknowledged) + 4  # at most the 4 in flight, each whole

    again = Process(argv, env, tmp_path / "serve.log")
    try:
        auth = {"Authorization": f"Bearer {read}"}
        listed = httpx.get(again.url + "/v1/gallery/identities?limit=1000", headers=auth).json()
        assert [i["name"] for i in listed["identities"]] == names
        assert all(i["images"] == 2 for i in listed["identities"])
        p = int(acknowledged[0][1:])
        r = httpx.post(again.url + "/v1/identify", headers=auth,
                       files=[("image", ("q.png", photos[2 * p + 1], "image/png"))])  # fmt: skip
        assert r.json()["images"][0]["faces"][0]["identity"] == acknowledged[0]
    finally:
        again.stop()


def test_sigterm_lets_requests_in_flight_finish_and_keys_stay_out_of_the_log(
    setup, tmp_path, faces
):
    argv, env, read, write = setup
    log = tmp_path / "serve.log"
    # why: a lone face waits max-wait for company: the request is in flight for 2 s
    server = Process([*argv, "--max-wait-ms", "2000", "--log-level", "debug"], env, log)
    auth = {"Authorization": f"Bearer {read}"}
    result: dict[str, object] = {}

    def slow_request() -> None:
        try:
            r = httpx.post(server.url + "/v1/embed", headers=auth, timeout=30,
                           files=[("images", ("a.png", png(faces[0]), "image/png"))])  # fmt: skip
            result["status"] = r.status_code
            result["faces"] = len(r.json()["images"][0]["faces"])
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            result["error"] = repr(e)

    httpx.get(server.url + "/v1/gallery/identities", headers={"Authorization": f"Bearer {write}"})
    httpx.get(server.url + "/v1/gallery/identities", headers={"Authorization": "Bearer fnk_bad"})
    request = threading.Thread(target=slow_request)
    request.start()
    time.sleep(0.7)  # the request is waiting in the batcher
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    request.join(30)
    code = server.stop(timeout=30)
    assert result == {"status": 200, "faces": 1}
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
    assert time.monotonic() - start < 20
    with pytest.raises(httpx.TransportError):  # nobody listens any more
        httpx.get(server.url + "/healthz", timeout=2)
    text = log.read_text()
    assert "POST /v1/embed" in text and "200" in text  # the access log was written
    for key in (read, write):
        assert key not in text and key[len("fnk_0123456789ab_") :] not in text


def test_serve_refuses_bad_settings_with_one_line(cli, tmp_path, tiny):
    model = save_weights(tiny, tmp_path / "tiny.safetensors")
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("serve", "--model", model, "--crop", "none", "--gallery", tmp_path / "afile")
    assert code == 1 and err.count("\n") == 1 and "afile" in err
    code, _, err = cli(
        "serve", "--model", tmp_path / "missing.safetensors", "--gallery", tmp_path / "g"
    )
    assert code == 1 and err.count("\n") == 1 and "missing.safetensors" in err
    code, _, err = cli("serve", "--port", "0")
    assert code == 2 and "--port" in err
    bad_keys = tmp_path / "keys.sqlite"
    bad_keys.write_bytes(b"garbage" * 200)
    code, _, err = cli("serve", "--model", model, "--crop", "none", "--gallery", tmp_path / "g",
                       "--keys", bad_keys)  # fmt: skip
    assert code == 1 and "keys.sqlite" in err
