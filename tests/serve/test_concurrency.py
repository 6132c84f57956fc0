"""Concurrent clients: enrolments from many threads never lose or mix data, and concurrent requests
share forward passes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _images import png

from facenet.apps.gallery import Gallery
from facenet.data.synthetic import make_synthetic


def test_concurrent_enrolments_never_lose_or_mix_data(make_server):
    server = make_server(max_wait_ms=20, rate_burst=1000)
    people = make_synthetic(24, 3, size=40, seed=11)  # 24 people x 3 photos, 8 threads x 3 people
    by_person = {
        f"person{p:02d}": [png(people.images[p * 3 + j]) for j in range(3)] for p in range(24)
    }

    def enrol(names: list[str]) -> list[int]:
        rows = [(n, j, data) for n in names for j, data in enumerate(by_person[n])]
        r = server.client.post(
            "/v1/gallery/identities",
            files=[("images", (f"{n}-{j}.png", data, "image/png")) for n, j, data in rows],
            data={"names": [n for n, _, _ in rows]},
            headers=server.auth("write"),
        )
        assert r.status_code == 200, r.text
        return [i["added"] for i in r.json()["identities"]]

    groups = [sorted(by_person)[t::8] for t in range(8)]
    with ThreadPoolExecutor(8) as pool:
        added = list(pool.map(enrol, groups))
    assert added == [[3, 3, 3]] * 8

    with Gallery(server.gallery) as g:
        assert [(i.name, i.images, i.embeddings) for i in g.identities()] == [
            (n, 3, 3) for n in sorted(by_person)
        ]

    # nothing mixed: every photo is found as its own person, at distance 0
    def who(item: tuple[str, bytes]) -> tuple[str, str, float]:
        name, data = item
        r = server.client.post(
            "/v1/identify", files=[("image", ("q.png", data, "image/png"))], headers=server.auth()
        )
        face = r.json()["images"][0]["faces"][0]
        return name, face["identity"], face["distance"]

    probes = [(n, d) for n, photos in by_person.items() for d in photos]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(who, probes))
    assert all(expected == got and distance < 1e-5 for expected, got, distance in answers)


def test_concurrent_requests_share_forward_passes(make_server, faces):
    server = make_server(max_wait_ms=100, max_batch_size=64)
    photos = [png(f) for f in faces]

    def embed(i: int) -> np.ndarray:
        r = server.client.post(
            "/v1/embed",
            files=[("images", (f"{i}.png", photos[i % len(photos)], "image/png"))],
            headers=server.auth(),
        )
        assert r.status_code == 200
        return np.array(r.json()["images"][0]["faces"][0]["embedding"])

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(embed, range(16)))
    embedder = server.app.state.service.embedder
    expected = embedder.embed_crops([f.crop for f in (embedder.faces(im)[0] for im in faces)])
    for i, e in enumerate(got):  # each request got its own face's embedding
        np.testing.assert_allclose(e, expected[i % len(faces)], atol=1e-5)
    metrics = server.client.get("/metrics", headers=server.auth()).text
    passes = float(
        next(s for s in metrics.splitlines() if s.startswith("facenet_batch_size_count")).split()[1]
    )
    assert passes < 16  # fewer forward passes than requests
