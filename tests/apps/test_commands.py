"""Every application command end to end through ``facenet.cli.main`` on ORL (tight crops, so
``--crop none``) with a ``tiny`` model trained on ORL for a few seconds; bad inputs."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facenet.apps.embedding_table import load_embeddings
from facenet.apps.gallery import Gallery
from facenet.cli import main
from facenet.eval.clustering import clustering_metrics


@pytest.fixture
def args(trained_tiny):
    return ["--model", str(trained_tiny), "--crop", "none"]


def test_embed_writes_one_row_per_face(orl_dir, tmp_path, args, capsys):
    out = tmp_path / "e.npz"
    assert (
        main(
            ["embed", str(orl_dir / "s1"), str(orl_dir / "s2" / "1.pgm"), "--out", str(out), *args]
        )
        == 0
    )
    t = load_embeddings(out)
    assert len(t) == 11 and t.embeddings.shape == (11, 128)
    np.testing.assert_allclose(np.linalg.norm(t.embeddings, axis=1), 1.0, atol=1e-5)
    assert t.boxes[0].tolist() == [0, 0, 92, 112] and set(t.face_index) == {0}
    assert t.meta["model"]["name"] == "tiny" and "11 faces" in capsys.readouterr().out


def test_embed_reports_a_corrupt_file_and_continues(orl_dir, tmp_path, args, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "e.npz"
    assert main(["embed", str(bad), str(orl_dir / "s1" / "1.pgm"), "--out", str(out), *args]) == 1
    assert "broken.jpg" in capsys.readouterr().err
    assert len(load_embeddings(out)) == 1
    assert main(["embed", str(tmp_path / "missing"), "--out", str(out), *args]) == 1
    assert (
        main(["embed", str(orl_dir / "s1"), "--out", str(tmp_path / "e.txt"), *args]) == 2
    )  # a bad --out: usage


def test_verify_same_and_different(orl_dir, args, capsys):
    """Exit code 0 for the same person, 1 for different people, 2 for no answer; the JSON is
    the one result schema; the default operating point is the model's far_1e-3."""
    s1, s1b, s7 = (str(orl_dir / p) for p in ("s1/1.pgm", "s1/2.pgm", "s7/1.pgm"))
    assert main(["verify", s1, s1b, "--json", *args]) == 0
    same = json.loads(capsys.readouterr().out)
    assert main(["verify", s1, s7, "--json", *args]) == 1
    diff = json.loads(capsys.readouterr().out)
    assert same["same"] and not diff["same"] and same["distance"] < diff["distance"]
    assert same["operating_point"] == "far_1e-3"
    assert same["threshold_source"] == "model far_1e-3"
    assert [i["image"] for i in same["images"]] == [s1, s1b]
    face = same["images"][0]["faces"][0]
    assert face["used"] and face["same"] and face["distance"] == same["distance"]
    assert face["crop"] == "none" and face["operating_point"] == "far_1e-3"
    assert main(["verify", s1, s1b, "--operating-point", "accuracy", "--json", *args]) == 0
    assert json.loads(capsys.readouterr().out)["threshold_source"] == "model accuracy"
    assert main(["verify", s1, s1b, "--threshold", "0", *args]) == 1
    assert "DIFFERENT people" in capsys.readouterr().out
    main(["verify", s1, s1b, "--far", "1e-3", *args])
    assert "far_1e-3" in capsys.readouterr().out
    assert main(["verify", s1, s1b, "--far", "0.5", *args]) == 2
    assert "no threshold calibrated for FAR=0.5" in capsys.readouterr().err
    assert main(["verify", s1, s1b, "--operating-point", "eer", *args]) == 2
    assert "no operating point 'eer'" in capsys.readouterr().err


def test_verify_with_detection_finds_no_face_in_a_blank_image(tmp_path, trained_tiny, capsys):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 120), (128, 128, 128)).save(blank)
    assert main(["verify", str(blank), str(blank), "--model", str(trained_tiny)]) == 2
    assert "blank.png: no face found" in capsys.readouterr().err


def gallery_state(directory: Path):
    with Gallery(directory, create=False) as g:
        return [(p.name, p.embeddings) for p in g.identities()], len(g), g.generation


def test_gallery_enroll_identify_remove_list(orl_dir, tmp_path, args, other_tiny, capsys):
    gdir = str(tmp_path / "gallery")
    for person in range(1, 11):
        photos = [str(orl_dir / f"s{person}" / f"{k}.pgm") for k in (1, 2, 3)]
        assert main(["gallery", "enroll", f"s{person}", *photos, "--gallery", gdir, *args]) == 0
    capsys.readouterr()
    # known people, later photos: found (the gallery remembers the model; only --crop is given)
    right = 0
    for person in range(1, 11):
        probe = str(orl_dir / f"s{person}/7.pgm")
        code = main(["identify", probe, "--gallery", gdir, "--crop", "none", "--json"])
        answer = json.loads(capsys.readouterr().out)
        (face,) = [f for f in answer["images"][0]["faces"] if f["used"]]
        assert code == (0 if face["identity"] != "unknown" else 1)  # 0 known, 1 unknown
        assert answer["images"][0]["image"] == probe
        right += face["identity"] == f"s{person}"
    assert right >= 9
    # strangers (never enrolled, never trained on) at a strict threshold: unknown
    answer = None
    assert (
        main(
            [
                "identify",
                str(orl_dir / "s40/1.pgm"),
                "--gallery",
                gdir,
                "--crop",
                "none",
                "--threshold",
                "0.05",
            ]
        )
        == 1
    )
    answer = capsys.readouterr().out
    assert "unknown" in answer and "1. s" in answer
    assert main(["gallery", "list", "--gallery", gdir, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listed["identities"]] == sorted(f"s{i}" for i in range(1, 11))
    assert all(p["faces"] == 3 for p in listed["identities"])
    before = gallery_state(tmp_path / "gallery")
    # bad inputs: clear errors, gallery untouched
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["gallery", "enroll", "eve", str(bad), "--gallery", gdir, *args]) == 1
    err = capsys.readouterr().err
    assert "nothing enrolled for 'eve'" in err and "corrupt.png" in err
    assert main(["gallery", "remove", "nobody", "--gallery", gdir]) == 1
    assert "no identity 'nobody'" in capsys.readouterr().err
    assert main(["gallery", "remove", "--image", "999", "--gallery", gdir]) == 1
    assert "no image 999" in capsys.readouterr().err
    assert main(["gallery", "remove", "s1", "--image", "1", "--gallery", gdir]) == 2
    assert "NAME" in capsys.readouterr().err and gallery_state(tmp_path / "gallery") == before
    # one photo of s3 (removed whole below), by the id its listing shows
    assert main(["gallery", "list", "s3", "--json", "--gallery", gdir]) == 0
    photos = json.loads(capsys.readouterr().out)["images"]
    assert [p["path"] for p in photos] == [str(orl_dir / f"s3/{k}.pgm") for k in (1, 2, 3)]
    assert main(["gallery", "list", "s3", "--gallery", gdir]) == 0
    assert f"{photos[1]['id']}\t{photos[1]['path']}" in capsys.readouterr().out
    assert main(["gallery", "remove", "--image", str(photos[1]["id"]), "--gallery", gdir]) == 0
    assert "2.pgm" in capsys.readouterr().out
    with Gallery(tmp_path / "gallery", create=False) as g:
        assert [i.path for i in g.images("s3")] == [photos[0]["path"], photos[2]["path"]]
    before = gallery_state(tmp_path / "gallery")
    assert (
        main(
            [
                "gallery",
                "enroll",
                "s11",
                str(orl_dir / "s11/1.pgm"),
                "--gallery",
                gdir,
                "--model",
                str(other_tiny),
                "--crop",
                "none",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "was built with" in err and "not comparable" in err
    assert (
        main(
            [
                "identify",
                str(orl_dir / "s1/1.pgm"),
                "--gallery",
                gdir,
                "--model",
                str(other_tiny),
                "--crop",
                "none",
            ]
        )
        == 2  # identify: no answer
    )
    assert "not comparable" in capsys.readouterr().err
    assert gallery_state(tmp_path / "gallery") == before
    # partial enrolment: the good photo goes in, the bad one is reported
    assert (
        main(
            [
                "gallery",
                "enroll",
                "s11",
                str(orl_dir / "s11/1.pgm"),
                str(bad),
                "--gallery",
                gdir,
                *args,
            ]
        )
        == 1
    )
    assert "corrupt.png" in capsys.readouterr().err
    assert main(["gallery", "remove", "s11", "--gallery", gdir]) == 0
    assert main(["gallery", "remove", "s3", "--gallery", gdir]) == 0
    assert "removed 's3' (2 face(s))" in capsys.readouterr().out  # one went above
    assert (
        main(
            [
                "identify",
                str(orl_dir / "s3/7.pgm"),
                "--gallery",
                gdir,
                "--crop",
                "none",
                "--json",
                "--k",
                "3",
            ]
        )
        in (0, 1)  # removed from the gallery: someone else, or unknown
    )
    (face,) = json.loads(capsys.readouterr().out)["images"][0]["faces"]
    assert face["identity"] != "s3" and len(face["matches"]) == 3
    assert main(["gallery", "rebuild", "--gallery", gdir]) == 0
    assert main(["gallery", "list", "--gallery", gdir]) == 0
    assert "9 people, 27 faces" in capsys.readouterr().out


def test_identify_without_a_gallery_is_a_clear_error(orl_dir, tmp_path, args, capsys):
    assert (
        main(["identify", str(orl_dir / "s1/1.pgm"), "--gallery", str(tmp_path / "none"), *args])
        == 2  # no answer
    )
    assert "no gallery at" in capsys.readouterr().err
    assert main(["gallery", "list", "--gallery", str(tmp_path / "none")]) == 1


@pytest.mark.parametrize("method", ["agglomerative", "hdbscan", "chinese-whispers"])
def test_cluster_orl_people(orl_dir, tmp_path, args, method, capsys):
    photos = tmp_path / "photos"
    for person in range(1, 9):  # seen in training: the tiny model separates them well
        shutil.copytree(orl_dir / f"s{person}", photos / f"s{person}")
    out = tmp_path / "out"
    extra = ["--min-cluster-size", "3"] if method == "hdbscan" else []
    assert main(["cluster", str(photos), "--out", str(out), "--method", method, *extra, *args]) == 0
    assert "80 faces" in capsys.readouterr().out
    with open(out / "clusters.csv") as fh:
        rows = list(csv.DictReader(fh))
    truth = [Path(r["photo"]).parent.name for r in rows]
    report = clustering_metrics(truth, [int(r["cluster"]) for r in rows])
    assert report.bcubed_f > 0.8, report
    assert (out / "index.html").is_file() and (out / "cluster_0000").is_dir()


def test_cluster_from_an_embeddings_file(orl_dir, tmp_path, args, capsys):
    emb = tmp_path / "e.npz"
    assert main(["embed", str(orl_dir / "s1"), str(orl_dir / "s2"), "--out", str(emb), *args]) == 0
    out = tmp_path / "out"
    assert (
        main(
            ["cluster", "--embeddings", str(emb), "--out", str(out), "--link", "none", "--no-html"]
        )
        == 0
    )
    assert "20 faces" in capsys.readouterr().out
    assert (out / "clusters.csv").is_file() and not (out / "index.html").exists()
    # usage errors: neither PHOTOS nor --embeddings; --model with a file that records its model
    assert main(["cluster", "--out", str(out)]) == 2
    with_model = ["cluster", "--embeddings", str(emb), "--out", str(out), "--model", "x:y"]
    assert main(with_model) == 2
    assert "--model is for PHOTOS" in capsys.readouterr().err


def test_cluster_says_when_photos_were_skipped_and_min_size_one_keeps_every_face(
    orl_dir, tmp_path, args, capsys
):
    photos = tmp_path / "photos"
    shutil.copytree(orl_dir / "s1", photos / "s1")
    (photos / "s1" / "broken.pgm").write_bytes(b"P5 not really")
    out = tmp_path / "out"
    argv = ["cluster", str(photos), "--out", str(out), "--link", "none", "--no-html", *args]
    assert main([*argv, "--min-cluster-size", "1"]) == 1  # as embed: some input unusable
    assert "broken.pgm" in capsys.readouterr().err
    with open(out / "clusters.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and all(int(r["cluster"]) >= 0 for r in rows)
    assert not (out / "unclustered").exists()


def test_cluster_refuses_embeddings_that_are_not_unit_vectors_or_not_npz(tmp_path, capsys):
    import numpy as np

    from facenet.apps.embedding_table import EmbeddingTable, save_embeddings

    n = 4
    table = EmbeddingTable(
        np.array([f"p{i}.jpg" for i in range(n)]),
        np.zeros(n, np.int64),
        np.zeros((n, 4), np.float32),
        np.ones(n, np.float32),
        np.zeros((n, 8), np.float32),
        {},
    )
    zero = save_embeddings(tmp_path / "zero.npz", table)
    assert main(["cluster", "--embeddings", str(zero), "--out", str(tmp_path / "o")]) == 1
    assert "not unit vectors" in capsys.readouterr().err
    fake = tmp_path / "fake.npz"
    fake.write_text("seed: 0\n")
    assert main(["cluster", "--embeddings", str(fake), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "not a NumPy .npz archive" in err and "pickle" not in err


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("pymilvus", "milvus_lite")),
    reason="a Milvus gallery needs the 'milvus' extra (pymilvus, milvus-lite)",
)
def test_the_gallery_commands_work_the_same_on_milvus_lite(orl_dir, tmp_path, args, capsys):
    """The same commands on a ``milvus-lite:///`` gallery: enrol, identify, list, remove."""
    gdir = f"milvus-lite://{tmp_path}/gallery.db"
    for person in (1, 2, 3):
        photos = [str(orl_dir / f"s{person}" / f"{k}.pgm") for k in (1, 2)]
        assert main(["gallery", "enroll", f"s{person}", *photos, "--gallery", gdir, *args]) == 0
    again = str(orl_dir / "s1" / "1.pgm")
    assert main(["gallery", "enroll", "s1", again, "--gallery", gdir, *args]) == 0
    assert "already enrolled" in capsys.readouterr().err
    code = main(["identify", str(orl_dir / "s2/7.pgm"), "--gallery", gdir, "--crop", "none",
                 "--json"])  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    [face] = [f for f in answer["images"][0]["faces"] if f["used"]]
    assert code == (0 if face["identity"] != "unknown" else 1)
    assert face["matches"][0]["name"] == "s2"
    assert main(["gallery", "list", "s3", "--json", "--gallery", gdir]) == 0
    photos = json.loads(capsys.readouterr().out)["images"]
    assert [p["path"] for p in photos] == [str(orl_dir / f"s3/{k}.pgm") for k in (1, 2)]
    assert main(["gallery", "remove", "--image", str(photos[0]["id"]), "--gallery", gdir]) == 0
    assert main(["gallery", "remove", "s1", "--gallery", gdir]) == 0
    capsys.readouterr()
    assert main(["gallery", "list", "--json", "--gallery", gdir]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["images"]) for p in listed["identities"]] == [("s2", 2), ("s3", 1)]
    missing = f"milvus-lite://{tmp_path}/nothing.db"
    assert main(["identify", str(orl_dir / "s2/7.pgm"), "--gallery", missing]) == 2
    assert "no gallery at" in capsys.readouterr().err
