"""The embedded gallery's index choice: every kind (flat, HNSW, IVF-Flat, int8 IVF) searched
against a brute-force oracle at a size where it is used, its index file read back, the choice
kept in the gallery across reopening, appends vs rebuilds, bad choices refused, and
``facenet gallery rebuild --index``. No timings here: benchmarks/gallery.py measures those."""

from __future__ import annotations

import numpy as np
import pytest

from facenet.apps.gallery import FaceRecord, Gallery, GalleryError
from facenet.apps.gallery_index import (
    INDEX_KINDS,
    INDEX_NAME,
    IVF_MIN_TRAIN,
    IndexSpec,
    index_kind,
    read_index_file,
)
from facenet.cli import main
from facenet.fingerprint import ModelFingerprint

DIM = 16
MODEL = ModelFingerprint("tiny", "test", "a" * 64, DIM, ref="model-a.safetensors")
# recall@1 against exact search on noisy copies of enrolled faces; exact for flat
RECALL = {"flat": 1.0, "sq8": 0.97, "hnsw": 0.97, "ivf_flat": 0.97, "ivf_sq8": 0.95}


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_gallery(directory, n_people, per=2, seed=0, **kw):
    """A gallery of ``n_people`` identities of ``per`` faces around random centres; returns the
    gallery and {name: (per, DIM) vectors}."""
    rng = np.random.default_rng(seed)
    g = Gallery(directory, **kw)
    vecs = {}
    centres = unit(rng.normal(size=(n_people, DIM)))
    for i, c in enumerate(centres):
        v = unit(c + 0.15 * rng.normal(size=(per, DIM)))
        name = f"p{seed}_{i:05d}"
        g.enroll(name, [FaceRecord(x, f"{name}_{j}.jpg") for j, x in enumerate(v)], MODEL)
        vecs[name] = v
    return g, vecs


def oracle(vecs, q, k):
    """(name, squared distance) of the ``k`` nearest identities by brute force."""
    names = sorted(vecs)
    d = np.array([((vecs[n] - q) ** 2).sum(1).min() for n in names])
    order = np.argsort(d, kind="stable")[:k]
    return [(names[i], float(d[i])) for i in order]


def probes(vecs, n, seed):
    rng = np.random.default_rng(seed)
    names = sorted(vecs)
    pick = rng.choice(len(names), n)
    return unit(np.stack([vecs[names[i]][0] for i in pick]) + 0.1 * rng.normal(size=(n, DIM)))


@pytest.fixture(scope="module")
def galleries(tmp_path_factory):
    """One gallery per kind, forced, with enough faces (1,600) to train IVF cells."""
    out = {}
    for kind in INDEX_KINDS:
        d = tmp_path_factory.mktemp(kind) / "g"
        out[kind] = (d, *make_gallery(d, 800, index=kind))
    return out


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_each_kind_against_the_brute_force_oracle(galleries, kind):
    _, g, vecs = galleries[kind]
    assert len(g) > IVF_MIN_TRAIN
    queries = probes(vecs, 200, seed=1)
    got = g.search(queries, 3)
    assert index_kind(g._fresh_index()) == kind
    hits = []
    for q, matches in zip(queries, got, strict=True):
        want = oracle(vecs, q, 3)
        hits.append(matches[0].name == want[0][0])
        if kind == "flat":  # exact: the same names at the same distances
            assert [m.name for m in matches] == [n for n, _ in want]
            np.testing.assert_allclose(
                [m.distance for m in matches], [d for _, d in want], atol=1e-4
            )
        elif matches[0].name == want[0][0] and not kind.endswith("sq8"):
            assert matches[0].distance == pytest.approx(want[0][1], abs=1e-4)
        else:  # int8 codes: distances within the quantisation error
            assert matches[0].distance == pytest.approx(want[0][1], abs=0.05) or not hits[-1]
        assert [m.distance for m in matches] == sorted(m.distance for m in matches)
    assert np.mean(hits) >= RECALL[kind]


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_index_file_round_trip_keeps_kind_and_answers(galleries, kind):
    d, g, vecs = galleries[kind]
    queries = probes(vecs, 50, seed=2)
    before = g.search(queries, 3)
    digest = g._meta("index_sha256")
    header, index = read_index_file(d / INDEX_NAME, digest)
    assert index_kind(index) == kind and header["index"]["kind"] == kind
    assert index.ntotal == len(g)
    if kind.startswith("ivf"):
        assert header["index"]["nlist"] == IndexSpec().nlist_for(len(g))
    g2 = Gallery(d)
    after = g2.search(queries, 3)
    assert [[m.name for m in r] for r in after] == [[m.name for m in r] for r in before]
    assert g2._meta("index_sha256") == digest  # read back, not rebuilt
    g2.close()


def test_choice_is_stored_and_kept_across_reopen(tmp_path):
    d = tmp_path / "g"
    g, vecs = make_gallery(d, 600, index="ivf_sq8", nlist=8, nprobe=4)
    g.search(probes(vecs, 1, 0), 1)
    g.close()
    g = Gallery(d)  # no arguments: the stored choice
    assert g.index_spec == IndexSpec("ivf_sq8", 8, 4)
    index = g._fresh_index()
    assert index_kind(index) == "ivf_sq8" and index.nlist == 8 and index.nprobe == 4
    digest = g._meta("index_sha256")
    g.close()
    # nprobe alone is a search setting: stored, applied, no rebuild
    g = Gallery(d, nprobe=8)
    assert g.index_spec == IndexSpec("ivf_sq8", 8, 8)
    assert g._fresh_index().nprobe == 8 and g._meta("index_sha256") == digest
    g.close()
    # another kind: the next search rebuilds; nlist/nprobe go back to their defaults
    g = Gallery(d, index="flat")
    assert g.index_spec == IndexSpec("flat")
    q = probes(vecs, 20, 3)
    assert [m[0].name for m in g.search(q, 1)] == [oracle(vecs, x, 1)[0][0] for x in q]
    assert index_kind(g._fresh_index()) == "flat" and g._meta("index_sha256") != digest
    g.close()
    assert Gallery(d).index_spec.kind == "flat"


def test_auto_is_exact_when_small_and_ivf_above(tmp_path):
    g, vecs = make_gallery(tmp_path / "g", 600, approximate_above=1_000)
    assert g.index_spec.kind == "auto"
    assert index_kind(g._fresh_index()) == "ivf_flat"
    small, _ = make_gallery(tmp_path / "s", 600, approximate_above=10_000)
    assert index_kind(small._fresh_index()) == "flat"
    # an IVF kind with too few faces to train cells is built exact, and becomes IVF as it grows
    few, _ = make_gallery(tmp_path / "f", 100, index="ivf_flat")
    assert index_kind(few._fresh_index()) == "flat"
    make_gallery(tmp_path / "f", 500, seed=1)[0].close()
    assert index_kind(few._fresh_index()) == "ivf_flat"


def test_ivf_appends_new_rows_then_rebuilds_after_removal_or_growth(tmp_path):
    d = tmp_path / "g"
    g, vecs = make_gallery(d, 600, index="ivf_flat")
    g.search(probes(vecs, 1, 0), 1)
    trained = g._index_header["index"]["trained_on"]
    assert trained == 1_200
    g.close()
    # another process enrols more (within IVF_REGROW): appended to the same trained cells
    g2, more = make_gallery(d, 100, seed=7)
    g2.close()
    g = Gallery(d)
    vecs.update(more)
    q = probes(more, 30, 4)
    got = [m[0].name for m in g.search(q, 1)]
    assert g._index_header["index"]["trained_on"] == trained
    assert g._fresh_index().ntotal == len(g) == 1_400
    assert np.mean([a == oracle(vecs, x, 1)[0][0] for a, x in zip(got, q, strict=True)]) >= 0.9
    # a removal: rebuilt, retrained on what is left, the removed identity never answers
    gone = sorted(more)[0]
    g.remove(gone)
    assert all(m.name != gone for m in g.search(more[gone], 5)[0] + g.search(more[gone], 5)[1])
    assert g._index_header["index"]["trained_on"] == len(g) == 1_398
    g.close()
    # growth past IVF_REGROW times what it was trained on: retrained
    make_gallery(d, 800, seed=8)[0].close()
    g = Gallery(d)
    g.search(q[:1], 1)
    assert g._index_header["index"]["trained_on"] == len(g) == 2_998
    assert g._index.nlist == IndexSpec().nlist_for(2_998)


def test_a_stale_index_of_another_kind_is_not_appended_to(tmp_path):
    d = tmp_path / "g"
    g, vecs = make_gallery(d, 600, index="hnsw")
    g.search(probes(vecs, 1, 0), 1)
    g.close()
    g = Gallery(d, index="ivf_sq8")
    make_gallery(d, 10, seed=3)[0].close()  # behind the database and of the wrong kind
    g.search(probes(vecs, 1, 0), 1)
    assert index_kind(g._fresh_index()) == "ivf_sq8" and g._fresh_index().ntotal == len(g)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"index": "annoy"}, "choose one of auto, flat, sq8, hnsw, ivf_flat, ivf_sq8"),
        ({"index": "ivf_flat", "nlist": 0}, "nlist must be a positive integer"),
        ({"nprobe": -3}, "nprobe must be a positive integer"),
        ({"nlist": 2.5}, "nlist must be a positive integer"),
    ],
)
def test_bad_choices_are_refused_and_change_nothing(tmp_path, kw, match):
    d = tmp_path / "g"
    make_gallery(d, 5, index="ivf_sq8", nlist=4)[0].close()
    with pytest.raises(GalleryError, match=match):
        Gallery(d, **kw)
    assert Gallery(d).index_spec == IndexSpec("ivf_sq8", 4)


def test_cli_rebuild_with_an_index_choice(tmp_path, capsys):
    d = tmp_path / "g"
    g, vecs = make_gallery(d, 600)
    g.close()
    argv = ["gallery", "rebuild", "--gallery", str(d)]
    assert main([*argv, "--index", "ivf_sq8", "--nlist", "16", "--nprobe", "4"]) == 0
    out = capsys.readouterr().out
    assert "index ivf_sq8 (nlist 16, nprobe 4)" in out and "1200 faces" in out
    with Gallery(d, create=False) as g:
        assert g.index_spec == IndexSpec("ivf_sq8", 16, 4)
        header, index = read_index_file(d / INDEX_NAME, g._meta("index_sha256"))
        assert index_kind(index) == "ivf_sq8" and index.nlist == 16
    assert main([*argv]) == 0  # no flags: rebuilt with the stored choice
    assert "index ivf_sq8" in capsys.readouterr().out
    assert main([*argv, "--index", "auto"]) == 0
    assert "index flat (chosen by the gallery's size)" in capsys.readouterr().out
    for bad in (["--index", "annoy"], ["--nlist", "0"], ["--nprobe", "x"]):
        assert main([*argv, *bad]) == 2
    capsys.readouterr()
    with Gallery(d, create=False) as g:
        assert g.index_spec == IndexSpec("auto")


def test_cli_rebuild_says_why_a_small_gallery_is_searched_exactly(tmp_path, capsys):
    d = tmp_path / "g"
    make_gallery(d, 100)[0].close()
    argv = ["gallery", "rebuild", "--gallery", str(d), "--index", "sq8"]
    assert main(argv) == 0  # sq8 is trained on the vectors: 200 are too few
    assert "index flat until it holds 1,000 faces: sq8 is trained" in capsys.readouterr().out


def test_cli_rebuild_index_flags_are_refused_for_milvus(tmp_path, capsys):
    pytest.importorskip("milvus_lite")
    location = f"milvus-lite:///{tmp_path / 'm.db'}"
    with Gallery(location) as g:
        g.enroll("a", [FaceRecord(unit(np.ones((1, DIM)))[0], "a.jpg")], MODEL)
    assert main(["gallery", "rebuild", "--gallery", location, "--index", "flat"]) == 1
    assert "query string" in capsys.readouterr().err


def test_an_nlist_larger_than_the_gallery_allows_is_clamped_and_still_appended_to(tmp_path):
    d = tmp_path / "g"
    g, vecs = make_gallery(d, 600, index="ivf_flat", nlist=4096)
    g.search(probes(vecs, 1, 0), 1)
    built = g._index_header["index"]
    assert built["nlist"] == 1_200 // 40 and built["nlist_asked"] == 4096
    g.close()
    make_gallery(d, 30, seed=5)[0].close()
    g = Gallery(d)
    g.search(probes(vecs, 1, 0), 1)
    assert g._index_header["index"]["trained_on"] == 1_200  # appended, not retrained
    assert g._fresh_index().ntotal == len(g) == 1_260
    g.close()
    g = Gallery(d, index="ivf_flat", nlist=8)  # another nlist: rebuilt with it
    g.search(probes(vecs, 1, 0), 1)
    assert g._fresh_index().nlist == 8 and g._index_header["index"]["trained_on"] == 1_260


def test_a_read_only_gallery_refuses_a_new_choice_clearly(tmp_path):
    d = tmp_path / "g"
    make_gallery(d, 3)[0].close()
    (d / "gallery.sqlite").chmod(0o444)
    d.chmod(0o555)
    try:
        try:
            Gallery(d, index="ivf_sq8")
        except GalleryError as e:
            assert "cannot store the index choice" in str(e)
        else:  # running as root: permissions do not bind, the choice is stored
            assert Gallery(d).index_spec.kind == "ivf_sq8"
    finally:
        d.chmod(0o755)
        (d / "gallery.sqlite").chmod(0o644)
