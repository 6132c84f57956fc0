"""Limits and errors: every refusal is a problem body naming the problem, before the work it
would cost, and leaves the gallery as it was."""

from __future__ import annotations

import io
import logging
import struct
import time
import zlib

import numpy as np
import pytest
from _images import png
from PIL import Image

from facenet.apps.gallery import Gallery

PROBLEM = "application/problem+json"


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels, a few hundred bytes long."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)  # the first rows of zeros; the rest would follow
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def assert_problem(r, status: int, code: str, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["code"] == code and body["status"] == status
    assert body["type"].endswith(code) and body["title"] and body["detail"]
    for word in words:
        assert word in body["detail"], (word, body["detail"])
    return body


def enrol_files(server, named: list[tuple[str, str, bytes]]):
    """POST /v1/gallery/identities with (person, file name, bytes) rows."""
    return server.client.post(
        "/v1/gallery/identities",
        files=[("images", (f, data, "image/png")) for _, f, data in named],
        data={"names": [n for n, _, _ in named]},
        headers=server.auth("write"),
    )


def gallery_rows(server) -> list[tuple[str, int]]:
    with Gallery(server.gallery) as g:
        return [(i.name, i.embeddings) for i in g.identities()]


@pytest.fixture
def enrolled(server, faces):
    assert enrol_files(server, [("ada", "ada.png", png(faces[0]))]).status_code == 200
    return server


# --------------------------------------------------------------------------- bad images


@pytest.mark.parametrize(
    "data, status, code, words",
    [
        (bomb_png(), 413, "image_too_large", ["bad.png"]),
        (bomb_png(5_000, 5_000), 413, "image_too_large", ["bad.png", "5000x5000"]),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, 422, "image_corrupt", ["bad.png"]),
        (b"hello, I am text", 422, "image_corrupt", ["bad.png", "not an image"]),
        (b"", 422, "image_corrupt", ["bad.png", "empty"]),
    ],
    ids=["bomb-100k", "over-max-pixels", "corrupt-png", "not-an-image", "empty"],
)
def test_a_bad_image_is_refused_by_name_and_nothing_is_enrolled(
    make_server, faces, data, status, code, words
):
    server = make_server(max_image_pixels=4_000_000)
    before = gallery_rows(server)
    r = enrol_files(server, [("bob", "good.png", png(faces[1])), ("bob", "bad.png", data)])
    assert_problem(r, status, code, *words)
    assert gallery_rows(server) == before == []
    for path, field in (("/v1/embed", "images"), ("/v1/identify", "image")):
        r = server.client.post(path, files=[(field, ("bad.png", data, "image/png"))],
                               headers=server.auth())  # fmt: skip
        assert_problem(r, status, code, "bad.png")


def test_a_truncated_image_is_corrupt(server, faces):
    buf = io.BytesIO()
    Image.fromarray(np.tile(faces[0], (8, 8, 1))).save(buf, format="JPEG")
    truncated = buf.getvalue()[: len(buf.getvalue()) // 2]
    r = server.client.post("/v1/embed", files=[("images", ("t.jpg", truncated, "image/jpeg"))],
                           headers=server.auth())  # fmt: skip
    assert_problem(r, 422, "image_corrupt", "t.jpg", "truncated")


def test_a_faceless_image_is_refused_for_enrolment_and_identification(make_server, faces):
    server = make_server(detector=True)
    blank = png(np.full((40, 40, 3), 200, np.uint8))
    r = enrol_files(server, [("ada", "ada.png", png(faces[0])), ("ada", "wall.png", blank)])
    assert_problem(r, 422, "no_face", "wall.png")
    assert gallery_rows(server) == []
    r = server.client.post("/v1/identify", files=[("image", ("wall.png", blank, "image/png"))],
                           headers=server.auth())  # fmt: skip
    assert_problem(r, 422, "no_face", "wall.png")
    r = server.client.post(
        "/v1/verify",
        files=[("image_a", ("a.png", png(faces[0]), "image/png")),
               ("image_b", ("wall.png", blank, "image/png"))],
        headers=server.auth(),
    )  # fmt: skip
    assert_problem(r, 422, "no_face", "wall.png")


# --------------------------------------------------------------------------- sizes and counts


def test_a_body_over_the_limit_is_refused_before_it_is_read(make_server, faces):
    server = make_server(max_body_bytes=20_000)
    big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    r = enrol_files(server, [("ada", "big.png", png(big))])
    assert_problem(r, 413, "too_large", "20,000 bytes")
    # no Content-Length (chunked): refused once the bytes received pass the limit
    chunks = iter([b"x" * 8192] * 10)
    r = server.client.post(
        "/v1/embed", content=chunks,
        headers={**server.auth(), "Content-Type": "multipart/form-data; boundary=b"},
    )  # fmt: skip
    assert_problem(r, 413, "too_large")
    assert gallery_rows(server) == []
    ok = enrol_files(server, [("ada", "small.png", png(faces[0]))])
    assert ok.status_code == 200


def test_too_many_images_or_faces(make_server, faces):
    server = make_server(detector=True, max_images=2, max_faces=2)
    three = [("images", (f"{i}.png", png(faces[i]), "image/png")) for i in range(3)]
    r = server.client.post("/v1/embed", files=three, headers=server.auth())
    assert_problem(r, 413, "too_many_images", "3 images", "at most 2")
    crowd = png(np.concatenate([faces[0], faces[1], faces[2]], axis=1))
    r = server.client.post("/v1/embed", files=[("images", ("crowd.png", crowd, "image/png"))],
                           headers=server.auth())  # fmt: skip
    assert_problem(r, 413, "too_many_faces", "crowd.png", "3 faces")
    # enrolment uses the main face only: a crowd photo is fine there
    assert enrol_files(server, [("ada", "crowd.png", crowd)]).status_code == 200


def test_names_are_checked_before_anything_is_read(server, faces):
    for name, word in (("a\nb", "control"), ("unknown", "reserved"), ("  ", "non-empty"),
                       ("x" * 300, "at most")):  # fmt: skip
        r = enrol_files(server, [(name, "a.png", png(faces[0]))])
        assert_problem(r, 422, "validation_error", "names[0]", word)
    r = server.client.post(
        "/v1/gallery/identities",
        files=[("images", ("a.png", png(faces[0]), "image/png"))],
        data={"names": ["ada", "grace"]},
        headers=server.auth("write"),
    )
    assert_problem(r, 422, "validation_error", "2 names for 1 images")
    assert gallery_rows(server) == []


# --------------------------------------------------------------------------- rate, time, load


def test_a_key_over_its_rate_gets_429_with_retry_after(make_server, faces):
    server = make_server(rate_per_minute=6, rate_burst=2)
    c = server.client
    assert c.get("/v1/gallery/identities", headers=server.auth()).status_code == 200
    assert c.get("/v1/gallery/identities", headers=server.auth()).status_code == 200
    r = c.get("/v1/gallery/identities", headers=server.auth())
    assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 10
    assert c.get("/v1/gallery/identities", headers=server.auth("write")).status_code == 200
    assert c.get("/healthz").status_code == 200  # health checks are never limited


def test_a_request_over_its_time_gets_504(make_server, faces):
    server = make_server(request_timeout_s=0.3)
    server.app.state.service.batcher.forward = lambda crops: (
        time.sleep(1.0) or np.zeros((len(crops), 128), np.float32)
    )
    r = server.client.post("/v1/embed", files=[("images", ("a.png", png(faces[0]), "image/png"))],
                           headers=server.auth())  # fmt: skip
    assert_problem(r, 504, "timeout", "0.3 s")


def test_too_many_faces_waiting_gets_503_with_retry_after(make_server, faces):
    server = make_server(detector=True, max_queue=1)
    crowd = png(np.concatenate([faces[0], faces[1]], axis=1))
    r = server.client.post("/v1/embed", files=[("images", ("crowd.png", crowd, "image/png"))],
                           headers=server.auth())  # fmt: skip
    assert_problem(r, 503, "overloaded")
    assert r.headers["retry-after"] == "1"


# --------------------------------------------------------------------------- every error a problem


def test_framework_errors_are_problems_too(enrolled, faces):
    c, auth = enrolled.client, enrolled.auth()
    body = assert_problem(c.post("/v1/embed", headers=auth), 422, "validation_error", "images")
    assert body["errors"][0]["loc"] == ["body", "images"]
    r = c.post("/v1/embed", data={"images": "http://example.com/face.jpg"}, headers=auth)
    assert_problem(r, 422, "validation_error")  # a URL is not an image, and is never fetched
    r = c.post("/v1/identify", files=[("image", ("a.png", png(faces[0]), "image/png"))],
               data={"k": "0"}, headers=auth)  # fmt: skip
    assert_problem(r, 422, "validation_error", "k")
    r = c.post("/v1/verify", files=[("image_a", ("a.png", png(faces[0]), "image/png")),
                                    ("image_b", ("b.png", png(faces[0]), "image/png"))],
               data={"threshold": "5"}, headers=auth)  # fmt: skip
    assert_problem(r, 422, "validation_error", "threshold")
    assert_problem(c.get("/v1/nothing", headers=auth), 404, "not_found")
    assert_problem(c.put("/v1/embed", headers=auth), 405, "method_not_allowed")
    assert_problem(c.get("/v1/gallery/identities?offset=-1", headers=auth), 422, "validation_error")
    r = c.post(
        "/v1/embed", content=b"{not json", headers={**auth, "Content-Type": "application/json"}
    )
    assert r.status_code in (400, 422) and r.headers["content-type"] == PROBLEM


def test_an_unexpected_error_is_a_generic_500_and_its_trace_goes_to_the_log(
    make_server, faces, caplog, monkeypatch
):
    server = make_server(raise_server_exceptions=False)
    from facenet.serve import service

    async def broken(*args, **kwargs):
        raise ZeroDivisionError("secret internals /srv/model.pt")

    monkeypatch.setattr(service, "embed_images", broken)
    caplog.set_level(logging.ERROR)
    r = server.client.post("/v1/embed", files=[("images", ("a.png", png(faces[0]), "image/png"))],
                           headers=server.auth())  # fmt: skip
    assert_problem(r, 500, "internal")
    assert "ZeroDivisionError" not in r.text and "srv" not in r.text and "Traceback" not in r.text
    assert "ZeroDivisionError: secret internals" in caplog.text and "Traceback" in caplog.text


def test_a_failing_batch_is_a_500_for_its_requests_and_the_server_goes_on(make_server, faces):
    server = make_server(raise_server_exceptions=False)
    batcher = server.app.state.service.batcher
    real = batcher.forward
    batcher.forward = lambda crops: 1 / 0
    r = server.client.post("/v1/embed", files=[("images", ("a.png", png(faces[0]), "image/png"))],
                           headers=server.auth())  # fmt: skip
    assert_problem(r, 500, "internal", "embedding failed")
    batcher.forward = real
    r = server.client.post("/v1/embed", files=[("images", ("a.png", png(faces[0]), "image/png"))],
                           headers=server.auth())  # fmt: skip
    assert r.status_code == 200
