"""The gallery contract: every backend (the embedded SQLite + FAISS one, Milvus Lite) against a
brute-force oracle and the same promises: answers, refusals, duplicates, removals, paging,
persistence, and acknowledged writes surviving a SIGKILL.

Milvus runs as Milvus Lite (the ``milvus`` extra): no server to install. Tests of what only the
embedded backend has (its index file, checksums, HNSW switch) are in ``test_gallery.py``.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from facenet.apps.gallery import (
    UNKNOWN,
    FaceRecord,
    Gallery,
    GalleryError,
    IncompatibleModelError,
    MilvusGallery,
    SqliteGallery,
    UnknownIdentityError,
    UnknownImageError,
)
from facenet.fingerprint import ModelFingerprint

DIM = 16
MODEL = ModelFingerprint("tiny", "test", "a" * 64, DIM, ref="model-a.safetensors")
OTHER = ModelFingerprint("tiny", "test", "b" * 64, DIM, ref="model-b.safetensors")
HAVE_MILVUS = all(importlib.util.find_spec(m) for m in ("pymilvus", "milvus_lite"))


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "milvus-lite",
            marks=pytest.mark.skipif(
                not HAVE_MILVUS,
                reason="Milvus Lite needs the 'milvus' extra (pymilvus, milvus-lite)",
            ),
        ),
    ]
)
def location(request, tmp_path):
    """A fresh gallery location on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "gallery")
    return f"milvus-lite://{tmp_path}/gallery.db"


def unit(rng, n, dim=DIM):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def records(vectors, prefix="p", hashed=False):
    return [
        FaceRecord(
            v,
            f"{prefix}{i}.jpg",
            0,
            (1.0, 2.0, 3.0, 4.0),
            f"{abs(hash((prefix, i))):064x}" if hashed else None,
        )  # fmt: skip
        for i, v in enumerate(vectors)
    ]


def populate(g, rng, people=12, per=3):
    vecs = {}
    for i in range(people):
        v = unit(rng, per)
        g.enroll(f"person{i:03d}", records(v, f"person{i}_", hashed=True), MODEL,
                 {"far_1e-3": 0.8})  # fmt: skip
        vecs[f"person{i:03d}"] = v
    return vecs


def oracle(vecs, q, k):
    names = sorted(vecs)
    d = np.array([((vecs[n] - q) ** 2).sum(1).min() for n in names])
    order = np.argsort(d, kind="stable")[:k]
    return [(names[i], d[i]) for i in order]


def agrees(g, vecs, queries, k=3):
    for q, matches in zip(queries, g.search(queries, k), strict=True):
        expected = oracle(vecs, q, k)
        if [m.name for m in matches] != [n for n, _ in expected]:
            return False
        if not np.allclose([m.distance for m in matches], [d for _, d in expected], atol=1e-4):
            return False
    return True


def test_the_location_picks_the_backend(tmp_path):
    assert type(Gallery(tmp_path / "g")) is SqliteGallery
    assert type(Gallery(f"sqlite://{tmp_path}/h")) is SqliteGallery
    assert (tmp_path / "h" / "gallery.sqlite").exists()
    with pytest.raises(GalleryError, match="unknown gallery scheme 'redis'"):
        Gallery("redis://localhost/faces")
    if HAVE_MILVUS:
        with Gallery(f"milvus-lite://{tmp_path}/m.db") as g:
            assert isinstance(g, MilvusGallery) and isinstance(g, Gallery)
    for bad, why in (
        ("milvus-lite:///tmp/x.sqlite", "ending in .db"),
        ("milvus://localhost:19530/", "host:port/collection"),
        ("milvus://localhost:19530/bad-name", "collection name"),
        ("milvus-lite:///tmp/x.db?index=lsh", "index='lsh'"),
        ("milvus-lite:///tmp/x.db?index=hnsw&nprobe=3", "unknown option 'nprobe'"),
        ("milvus-lite:///tmp/x.db?index=ivf_sq8&nlist=many", "not an integer"),
    ):
        with pytest.raises(GalleryError, match=why):
            Gallery(bad)


@pytest.mark.skipif(not HAVE_MILVUS, reason="needs the 'milvus' extra")
def test_someone_elses_milvus_collection_is_never_adopted(tmp_path):
    from pymilvus import MilvusClient

    uri = str(tmp_path / "theirs.db")
    client = MilvusClient(uri=uri)
    client.create_collection("faces", dimension=4)  # theirs: no gallery meta beside it
    client.close()
    with pytest.raises(GalleryError, match="'faces' exists but is not a facenet gallery"):
        Gallery(f"milvus-lite://{uri}")
    client = MilvusClient(uri=uri)
    assert client.list_collections() == ["faces"]  # nothing created beside it
    client.close()


@pytest.mark.skipif(not HAVE_MILVUS, reason="needs the 'milvus' extra")
def test_a_milvus_gallery_of_a_newer_schema_is_not_opened(tmp_path):
    location = f"milvus-lite://{tmp_path}/m.db"
    with Gallery(location) as g:
        assert g._meta("schema_version") == "1"
        g._set_meta("schema_version", "99")
    with pytest.raises(GalleryError, match="newer facenet .gallery schema 99"):
        Gallery(location)


@pytest.mark.skipif(not HAVE_MILVUS, reason="needs the 'milvus' extra")
def test_an_unreachable_milvus_is_one_clear_error(tmp_path):
    """Port 1 on this machine: nothing listens, so the client is refused; within the client's
    timeout (CONNECT_TIMEOUT_S), never a hang."""
    with pytest.raises(GalleryError, match=r"milvus://127.0.0.1:1/faces: cannot open Milvus"):
        Gallery("milvus://127.0.0.1:1/faces")


def test_search_equals_brute_force_and_identify_is_open_set(location):
    rng = np.random.default_rng(0)
    with Gallery(location) as g:
        vecs = populate(g, rng)
        near = vecs["person003"][1] + 0.01
        queries = np.vstack([unit(rng, 10), near / np.linalg.norm(near)])
        assert agrees(g, vecs, queries)
        assert len(g) == 36 and g.identity_count() == 12
        [known, stranger] = g.identify(np.vstack([vecs["person005"][0], unit(rng, 1)[0]]), 0.3)
        assert known.name == "person005" and known.known and known.distance < 1e-5
        assert known.matches[0].path == "person5_0.jpg"
        assert stranger.name == UNKNOWN and not stranger.known and stranger.matches
        assert g.thresholds == {"far_1e-3": 0.8} and g.model == MODEL


def test_an_empty_gallery_knows_nobody(location):
    with Gallery(location) as g:
        assert g.search(unit(np.random.default_rng(1), 2)) == [[], []]
        [answer] = g.identify(unit(np.random.default_rng(1), 1), 0.5)
        assert answer.name == UNKNOWN and answer.distance == float("inf")
        assert len(g) == 0 and g.identities() == [] and g.images() == []


def test_another_models_queries_and_enrolments_are_refused(location):
    rng = np.random.default_rng(2)
    with Gallery(location) as g:
        populate(g, rng, people=2)
        with pytest.raises(IncompatibleModelError, match="model-a"):
            g.search(unit(rng, 1), model=OTHER)
        with pytest.raises(IncompatibleModelError):
            g.enroll("eve", records(unit(rng, 1)), OTHER)
        assert [i.name for i in g.identities()] == ["person000", "person001"]
        # a model declaring compatibility (harmonic embeddings) is accepted
        harmonic = ModelFingerprint("nn2", "v2", "c" * 64, DIM, compatible_with=("a" * 64,))
        assert g.search(unit(rng, 1), 1, model=harmonic)[0]
        # ... to query, never to enrol: every stored face comes from the gallery's own model
        with pytest.raises(IncompatibleModelError, match="harmonic with it"):
            g.enroll("eve", records(unit(rng, 1)), harmonic)
        assert [i.name for i in g.identities()] == ["person000", "person001"]


def test_bad_writes_change_nothing(location):
    rng = np.random.default_rng(3)
    with Gallery(location) as g:
        vecs = populate(g, rng, people=3)
        before = (g.identities(), g.images(), len(g))
        bad = [
            ("", records(unit(rng, 1))),
            (UNKNOWN, records(unit(rng, 1))),
            ("a\nb", records(unit(rng, 1))),
            ("x" * 201, records(unit(rng, 1))),
            ("ann", []),
            ("ann", [FaceRecord(np.zeros(DIM, np.float32), "z.jpg")]),
            ("ann", [FaceRecord(np.full(DIM, np.nan, np.float32), "n.jpg")]),
            ("ann", [FaceRecord(unit(rng, 1, DIM + 1)[0], "d.jpg")]),
        ]
        for name, faces in bad:
            with pytest.raises(GalleryError):
                g.enroll(name, faces, MODEL)
        with pytest.raises(UnknownIdentityError, match="no identity 'nobody'"):
            g.remove("nobody")
        with pytest.raises(UnknownImageError, match="no image 12345"):
            g.remove_image(12345)
        assert (g.identities(), g.images(), len(g)) == before
        assert agrees(g, vecs, unit(rng, 5))


def test_names_are_data(location):
    rng = np.random.default_rng(4)
    names = ["O'Brien", 'say "hi"', "back\\slash", "a) or (1 == 1", "Zoë 山田 محمد", "AC/DC"]
    with Gallery(location) as g:
        vecs = {}
        for name in names:
            v = unit(rng, 1)
            g.enroll(name, records(v, name), MODEL)
            vecs[name] = v
        assert [i.name for i in g.identities()] == sorted(names)
        assert agrees(g, vecs, unit(rng, 5), k=len(names))
        assert g.remove("a) or (1 == 1") == 1  # only that one
        del vecs["a) or (1 == 1"]
        assert sorted(i.name for i in g.identities()) == sorted(vecs)
        assert [i.identity for i in g.images("O'Brien")] == ["O'Brien"]


def test_a_photo_enrolled_twice_is_stored_once(location):
    rng = np.random.default_rng(5)
    v = unit(rng, 3)
    faces = [FaceRecord(x, f"p{i}.jpg", 0, None, f"{i:064x}") for i, x in enumerate(v)]
    with Gallery(location) as g:
        assert g.enroll("ann", faces, MODEL).added == 3
        again = g.enroll("ann", faces, MODEL)
        assert again.added == 0 and again.image_ids == []
        assert [(d.path, d.identity, d.enrolled_path) for d in again.duplicates] == [
            ("p0.jpg", "ann", "p0.jpg"), ("p1.jpg", "ann", "p1.jpg"), ("p2.jpg", "ann", "p2.jpg")
        ]  # fmt: skip
        new = FaceRecord(unit(rng, 1)[0], "p9.jpg", 0, None, f"{9:064x}")
        moved = FaceRecord(v[0], "copy/p0.jpg", 0, None, f"{0:064x}")
        mixed = g.enroll("bob", [moved, new, new], MODEL)
        assert mixed.added == 1
        assert [(d.path, d.identity) for d in mixed.duplicates] == [
            ("copy/p0.jpg", "ann"), ("p9.jpg", "(this enrolment)")
        ]  # fmt: skip
        other_face = FaceRecord(unit(rng, 1)[0], "p0.jpg", 1, None, f"{0:064x}")
        assert g.enroll("ann", [other_face], MODEL).added == 1  # another face of that photo
        assert [(i.name, i.embeddings) for i in g.identities()] == [("ann", 4), ("bob", 1)]


def test_photos_are_listed_paged_and_removed_one_at_a_time(location):
    rng = np.random.default_rng(6)
    with Gallery(location) as g:
        vecs = populate(g, rng, people=5, per=3)
        first = g.enroll("extra", records(unit(rng, 2), "extra", hashed=True), MODEL)
        assert first.image_ids == [i.id for i in g.images("extra")]
        ids = [i.id for i in g.images()]
        assert ids == sorted(ids) and len(ids) == 17 and g.image_count() == 17
        assert [i.id for i in g.images(offset=4, limit=5)] == ids[4:9]
        names = [i.name for i in g.identities()]
        assert [i.name for p in range(0, 6, 4) for i in g.identities(offset=p, limit=4)] == names
        photos = g.images("person002")
        assert [(p.path, p.faces) for p in photos] == [(f"person2_{k}.jpg", 1) for k in range(3)]
        removed = g.remove_image(photos[1].id)
        assert removed.image == photos[1] and not removed.identity_removed
        gone = vecs["person002"][1]
        vecs["person002"] = vecs["person002"][[0, 2]]
        queries = np.vstack([unit(rng, 6), gone[None]])
        assert g.search(gone[None], k=1)[0][0].distance > 1e-3
        for p in g.images("person004"):
            last = g.remove_image(p.id)
        assert last.identity_removed and "person004" not in [i.name for i in g.identities()]
        with pytest.raises(UnknownIdentityError):
            g.images("person004")
        with pytest.raises(UnknownImageError):
            g.remove_image(photos[1].id)
        assert g.remove("extra") == 2
        del vecs["person004"]
        assert agrees(g, vecs, queries)


def test_a_reopened_gallery_answers_the_same(location):
    rng = np.random.default_rng(7)
    queries = unit(rng, 8)
    with Gallery(location) as g:
        vecs = populate(g, rng, people=6)
        answers = g.search(queries, 3)
    with Gallery(location, create=False) as g:
        assert g.search(queries, 3) == answers and agrees(g, vecs, queries)
        assert g.model == MODEL


def test_opening_a_missing_gallery_without_create_is_a_clear_error(location):
    with pytest.raises(GalleryError, match="no gallery at .*enrol someone first"):
        Gallery(location, create=False)


def test_an_acknowledged_enrolment_survives_a_sigkill(location, tmp_path):
    """A process enrols, says so, and is killed (SIGKILL) before it can close anything; the
    gallery, reopened, holds the enrolment."""
    rng = np.random.default_rng(8)
    v = unit(rng, 2)
    np.save(tmp_path / "v.npy", v)
    script = textwrap.dedent(f"""
        import os, signal, sys, numpy as np
        from facenet.apps.gallery import FaceRecord, Gallery
        from facenet.fingerprint import ModelFingerprint
        model = ModelFingerprint("tiny", "test", "a" * 64, {DIM}, ref="model-a.safetensors")
        v = np.load({str(tmp_path / "v.npy")!r})
        g = Gallery({location!r})
        g.enroll("ann", [FaceRecord(x, f"p{{i}}.jpg") for i, x in enumerate(v)], model)
        print("enrolled", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == -signal.SIGKILL and "enrolled" in done.stdout, done.stderr
    with Gallery(location, create=False) as g:
        assert [(i.name, i.embeddings) for i in g.identities()] == [("ann", 2)]
        [[match]] = g.search(v[:1], k=1)
        assert match.name == "ann" and match.distance < 1e-5


@pytest.mark.skipif(not HAVE_MILVUS, reason="needs the 'milvus' extra")
@pytest.mark.parametrize("index", ["hnsw", "ivf_sq8&nlist=16&nprobe=16"])
def test_milvus_approximate_indexes_find_the_nearest(tmp_path, index):
    rng = np.random.default_rng(9)
    with Gallery(f"milvus-lite://{tmp_path}/g.db?index={index}") as g:
        vecs = populate(g, rng, people=40, per=2)
        probes = np.vstack([vecs[n][0] + 0.02 * unit(rng, 1)[0] for n in sorted(vecs)[:20]])
        top = [m[0].name for m in g.search(probes, k=1)]
        assert np.mean([t == n for t, n in zip(top, sorted(vecs)[:20], strict=True)]) >= 0.95
