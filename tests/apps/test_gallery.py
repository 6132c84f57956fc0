"""The embedded gallery backend (SQLite + FAISS): its index file (staleness, binding, checksums),
the approximate-index switch, provenance rows and name checks. What every backend promises is in
``test_gallery_contract.py``."""

from __future__ import annotations

import hashlib
import sqlite3

import faiss
import numpy as np
import pytest

from facenet.apps.gallery import (
    UNKNOWN,
    FaceRecord,
    Gallery,
    GalleryError,
    UnknownIdentityError,
    UnknownImageError,
)
from facenet.apps.gallery_index import INDEX_NAME, index_kind, read_index_file, write_index_file
from facenet.fingerprint import ModelFingerprint

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
    assert index_kind(g._fresh_index()) == "ivf_flat"  # auto above approximate_above
    assert np.mean(hits) >= 0.95


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


def test_someone_elses_database_or_a_newer_schema_is_never_written(tmp_path):
    """Found by the audit: an unrelated SQLite file got the gallery's tables written into it,
    and a schema from a newer version was opened and written to."""
    import sqlite3

    (tmp_path / "theirs").mkdir()
    theirs = tmp_path / "theirs" / "gallery.sqlite"
    with sqlite3.connect(theirs) as db:
        db.execute("CREATE TABLE foo (x INTEGER)")
    before = theirs.read_bytes()
    with pytest.raises(GalleryError, match="not a facenet gallery .tables: foo"):
        Gallery(tmp_path / "theirs")
    assert theirs.read_bytes() == before
    with Gallery(tmp_path / "newer"):
        pass
    with sqlite3.connect(tmp_path / "newer" / "gallery.sqlite") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(GalleryError, match="newer facenet .gallery schema 99"):
        Gallery(tmp_path / "newer")


# --------------------------------------------------------------------------- a bound index


def agrees_with_oracle(g, vecs, queries, k=3):
    """Whether the gallery's k nearest identities and distances equal the brute-force answer."""
    for q, matches in zip(queries, g.search(queries, k), strict=True):
        expected = brute_force(vecs, q, k)
        if [m.name for m in matches] != [n for n, _ in expected]:
            return False
        if not np.allclose([m.distance for m in matches], [d for _, d in expected], atol=1e-4):
            return False
    return True


def test_an_index_left_by_a_deleted_database_is_never_searched(tmp_path):
    """Delete gallery.sqlite, enrol someone else: the old index.faiss matched on (weights,
    generation 1) and answered with the deleted person at distance 0."""
    rng = np.random.default_rng(7)
    first = unit(rng, 1)
    g = Gallery(tmp_path / "g")
    g.enroll("agassi", records(first), MODEL)
    assert g.search(first, 1)[0][0].name == "agassi"  # index.faiss written
    g.close()
    (tmp_path / "g" / "gallery.sqlite").unlink()
    other = unit(rng, 1)
    g = Gallery(tmp_path / "g")
    g.enroll("toledo", records(other), MODEL)
    g.close()
    g = Gallery(tmp_path / "g")
    assert agrees_with_oracle(g, {"toledo": other}, np.concatenate([first, other]), k=1)
    assert g.search(other, 1)[0][0].distance < 1e-5


def _rewrite_index(path, change):
    """Read index.faiss, let ``change(vectors)`` edit its vectors, write it back with the same
    header (what a tamperer or a stray process would do)."""
    header, index = read_index_file(path)
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    base = faiss.downcast_index(index.index)
    vectors = base.reconstruct_n(0, base.ntotal)
    change(vectors)
    fresh = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    fresh.add_with_ids(vectors, ids)
    write_index_file(path, fresh, header)


def test_overwritten_index_vectors_are_never_searched(tmp_path):
    rng = np.random.default_rng(8)
    g, vecs = populate(tmp_path / "g", rng, people=6)
    queries = unit(rng, 10)
    assert agrees_with_oracle(g, vecs, queries)
    g.close()

    def plant(vectors):  # every stored face becomes the first query
        vectors[:] = queries[0]

    _rewrite_index(tmp_path / "g" / INDEX_NAME, plant)
    g = Gallery(tmp_path / "g")
    assert agrees_with_oracle(g, vecs, queries)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.95])  # header, early and late vector bytes
def test_a_flipped_bit_in_the_index_file_is_never_searched(tmp_path, where):
    rng = np.random.default_rng(9)
    g, vecs = populate(tmp_path / "g", rng, people=6)
    queries = unit(rng, 10)
    assert agrees_with_oracle(g, vecs, queries)
    g.close()
    path = tmp_path / "g" / INDEX_NAME
    data = bytearray(path.read_bytes())
    data[int(where * len(data))] ^= 0x40
    path.write_bytes(bytes(data))
    g = Gallery(tmp_path / "g")
    assert agrees_with_oracle(g, vecs, queries)


def test_index_checksum_is_recorded_and_a_rebuild_restores_it(tmp_path):
    rng = np.random.default_rng(10)
    g, vecs = populate(tmp_path / "g", rng, people=3)
    g.search(unit(rng, 1), 1)
    path = tmp_path / "g" / INDEX_NAME
    assert g._meta("index_sha256") == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(g.gallery_id) == 32 and g._index_header["gallery_id"] == g.gallery_id


# --------------------------------------------------------------------------- names and duplicates


@pytest.mark.parametrize(
    "name",
    ["eve\nbob\t1 photo(s)", "a\rb", "nul\x00", "bidi\u202eevil", "zero\u200bwidth", "ls\u2028x"],
)
def test_identity_names_with_control_or_format_characters_are_refused(tmp_path, name):
    rng = np.random.default_rng(11)
    g = Gallery(tmp_path / "g")
    with pytest.raises(GalleryError, match="control or format characters"):
        g.enroll(name, records(unit(rng, 1)), MODEL)
    assert g.identities() == [] and len(g) == 0


def test_printable_names_from_many_scripts_are_accepted(tmp_path):
    rng = np.random.default_rng(12)
    g = Gallery(tmp_path / "g")
    names = ["José María Aznar", "李小龙", "Ольга", "O'Brien-Smith Jr.", "محمد"]
    for n in names:
        g.enroll(n, records(unit(rng, 1), n), MODEL)
    assert sorted(i.name for i in g.identities()) == sorted(names)
    with pytest.raises(GalleryError, match="at most"):
        g.enroll("x" * 201, records(unit(rng, 1)), MODEL)


def test_removing_one_image_leaves_the_rest_and_the_index_follows(tmp_path):
    rng = np.random.default_rng(21)
    g, vecs = populate(tmp_path / "g", rng, people=6, per=3)
    queries = unit(rng, 20)
    assert agrees_with_oracle(g, vecs, queries)  # the index is built and saved now
    images = g.images("person002")
    assert [i.path for i in images] == ["person2_0.jpg", "person2_1.jpg", "person2_2.jpg"]
    assert all(i.identity == "person002" and i.faces == 1 for i in images)
    assert g.image_count() == 18 and g.image_count("person002") == 3

    removed = g.remove_image(images[1].id)
    assert removed.image == images[1] and not removed.identity_removed
    gone = vecs["person002"][1]
    vecs["person002"] = vecs["person002"][[0, 2]]
    assert [i.id for i in g.images("person002")] == [images[0].id, images[2].id]
    # the removed photo's own vector is no longer at distance 0 from anyone
    queries = np.vstack([queries, gone[None]])
    assert g.search(gone[None], k=1)[0][0].distance > 1e-3
    assert agrees_with_oracle(g, vecs, queries)
    with Gallery(tmp_path / "g") as reopened:  # the saved index file is never stale
        assert agrees_with_oracle(reopened, vecs, queries)

    # removing an identity's last image removes the identity
    for image in g.images("person004"):
        last = g.remove_image(image.id)
    assert last.identity_removed
    del vecs["person004"]
    assert "person004" not in [i.name for i in g.identities()]
    assert agrees_with_oracle(g, vecs, queries)
    with pytest.raises(UnknownImageError, match="no image"):
        g.remove_image(images[1].id)  # already gone
    with pytest.raises(UnknownIdentityError):
        g.images("person004")


def test_a_damaged_embedding_row_is_named(tmp_path):
    rng = np.random.default_rng(0)
    populate(tmp_path / "g", rng, people=3)[0].close()
    with sqlite3.connect(tmp_path / "g" / "gallery.sqlite") as db:
        row = db.execute("SELECT MIN(id) FROM embeddings").fetchone()[0]
        db.execute("UPDATE embeddings SET vector = ? WHERE id = ?", (b"\x00" * 5, row))
    with Gallery(tmp_path / "g") as g, pytest.raises(GalleryError, match=f"row {row} is damaged"):
        g.search(unit(rng, 1), 1, model=MODEL)
