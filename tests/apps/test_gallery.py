"""The persistent gallery against a brute-force oracle; staleness, rebuilds and refusals."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from facenet.apps.gallery import (
    INDEX_NAME,
    UNKNOWN,
    FaceRecord,
    Gallery,
    GalleryError,
    IncompatibleModelError,
    ModelFingerprint,
    UnknownIdentityError,
    index_kind,
)

DIM = 16
MODEL = ModelFingerprint("tiny", "test", "a" * 64, DIM, ref="model-a.safetensors")
OTHER = ModelFingerprint("tiny", "test", "b" * 64, DIM, ref="model-b.safetensors")


def unit(rng, n, dim=DIM):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def records(vectors, prefix="p"):
    return [FaceRecord(v, f"{prefix}{i}.jpg") for i, v in enumerate(vectors)]


def populate(directory, rng, people=30, per=3, **kw):
    g = Gallery(directory, **kw)
    vecs = {}
    for i in range(people):
        v = unit(rng, per)
        g.enroll(f"person{i:03d}", records(v, f"person{i}_"), MODEL, {"far_1e-3": 0.8})
        vecs[f"person{i:03d}"] = v
    return g, vecs


def brute_force(vecs, q, k):
    names = sorted(vecs)
    d = np.array([((vecs[n] - q) ** 2).sum(1).min() for n in names])
    order = np.argsort(d, kind="stable")[:k]
    return [(names[i], d[i]) for i in order]


def test_search_equals_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    g, vecs = populate(tmp_path / "g", rng)
    queries = unit(rng, 20)
    for q, matches in zip(queries, g.search(queries, k=5), strict=True):
        expected = brute_force(vecs, q, 5)
        assert [m.name for m in matches] == [n for n, _ in expected]
        np.testing.assert_allclose(
            [m.distance for m in matches], [d for _, d in expected], atol=1e-5
        )


def test_identify_is_open_set(tmp_path):
    rng = np.random.default_rng(1)
    g, vecs = populate(tmp_path / "g", rng, people=5)
    probe = vecs["person002"][0] + 0.01 * unit(rng, 1)[0]
    far_away = -vecs["person002"][0]
    known, stranger = g.identify(np.stack([probe, far_away]), threshold=0.5)
    assert known.name == "person002" and known.known and known.distance < 0.01
    assert stranger.name == UNKNOWN and not stranger.known
    assert stranger.matches  # the nearest identities are still listed


def test_persistence_and_index_staleness(tmp_path):
    rng = np.random.default_rng(2)
    g, vecs = populate(tmp_path / "g", rng, people=4)
    q = vecs["person001"][1]
    assert g.search(q[None], 1)[0][0].name == "person001"  # writes index.faiss
    g.close()
    # another process adds a person: the saved index is behind the database
    g2 = Gallery(tmp_path / "g")
    new = unit(rng, 2)
    g2.enroll("newcomer", records(new), MODEL)
    g2.close()
    g3 = Gallery(tmp_path / "g")
    assert g3.search(new[:1], 1)[0][0].name == "newcomer"
    # removal forces a rebuild; the removed person never comes back
    assert g3.remove("newcomer") == 2
    assert all(m.name != "newcomer" for m in g3.search(new[:1], 5)[0])
    # a missing or corrupt index file is rebuilt from SQLite
    (tmp_path / "g" / INDEX_NAME).write_bytes(b"garbage")
    g4 = Gallery(tmp_path / "g")
    assert g4.search(q[None], 1)[0][0].name == "person001"
    (tmp_path / "g" / INDEX_NAME).unlink()
    assert g4.search(q[None], 1)[0][0].name == "person001"
    assert {p.name for p in g4.identities()} == set(vecs)


def test_approximate_index_above_threshold_has_high_recall(tmp_path):
    rng = np.random.default_rng(3)
    g, vecs = populate(tmp_path / "g", rng, people=300, per=4, approximate_above=500)
    queries = unit(rng, 100)
    hits = [
        m[0].name == brute_force(vecs, q, 1)[0][0]
        for q, m in zip(queries, g.search(queries, 1), strict=True)
    ]
    assert index_kind(g._fresh_index()) == "hnsw"
    assert np.mean(hits) >= 0.95


def test_incompatible_model_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    g, vecs = populate(tmp_path / "g", rng, people=2)
    with pytest.raises(IncompatibleModelError, match="model-a.safetensors"):
        g.enroll("x", records(unit(rng, 1)), OTHER)
    with pytest.raises(IncompatibleModelError, match="not comparable"):
        g.search(unit(rng, 1), 1, model=OTHER)
    # a model declaring compatibility (harmonic embeddings) is accepted
    harmonic = ModelFingerprint("nn2", "v2", "c" * 64, DIM, compatible_with=("a" * 64,))
    assert g.search(unit(rng, 1), 1, model=harmonic)[0]
    assert len(g) == 6


def test_bad_writes_leave_the_gallery_intact(tmp_path):
    rng = np.random.default_rng(5)
    g, _ = populate(tmp_path / "g", rng, people=3)
    before = (len(g), [p.name for p in g.identities()], g.generation)
    with pytest.raises(GalleryError, match="no usable face"):
        g.enroll("empty", [], MODEL)
    with pytest.raises(GalleryError, match="reserved"):
        g.enroll(UNKNOWN, records(unit(rng, 1)), MODEL)
    with pytest.raises(GalleryError, match="NaN"):
        g.enroll("nan", records(np.full((1, DIM), np.nan, np.float32)), MODEL)
    with pytest.raises(GalleryError, match=r"\(N, 16\)"):
        g.enroll("wrongdim", records(unit(rng, 1, dim=8)), MODEL)
    with pytest.raises(UnknownIdentityError, match="no identity 'ghost'.*person000"):
        g.remove("ghost")
    assert (len(g), [p.name for p in g.identities()], g.generation) == before


def test_provenance_is_stored_per_embedding(tmp_path):
    rng = np.random.default_rng(6)
    g, _ = populate(tmp_path / "g", rng, people=1)
    g.close()
    with sqlite3.connect(tmp_path / "g" / "gallery.sqlite") as db:
        rows = db.execute(
            "SELECT model_name, model_version, weights_hash FROM embeddings"
        ).fetchall()
    assert rows == [("tiny", "test", "a" * 64)] * 3


def test_opening_a_missing_gallery_without_create_is_a_clear_error(tmp_path):
    with pytest.raises(GalleryError, match="no gallery at"):
        Gallery(tmp_path / "nothing", create=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "gallery.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="not a readable gallery database"):
        Gallery(tmp_path / "bad")
