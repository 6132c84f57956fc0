"""Output folders a command owns, and answers that must not look right when they are not:
cluster reruns, a user's files, symlinks inside output folders; multi-face photos, an evaluation
that embedded nothing, strict JSON."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from _world import THRESHOLDS, photo

from facenet.apps.cluster_folder import MANIFEST, write_clusters
from facenet.apps.embedder import Embedder
from facenet.apps.verify import verify_files
from facenet.detect.base import Detection
from facenet.utils import UnsafeOutputError, dumps_json

# --------------------------------------------------------------------------- cluster folders


def _cluster_run(out, photos, colour, **kw):
    """Two clusters of the given photos, thumbnails cut from solid ``colour`` crops."""
    n = len(photos)
    crops = [np.full((20, 20, 3), colour, np.uint8)] * n
    labels = np.array([0] * (n - n // 2) + [1] * (n // 2))
    boxes = np.tile(np.array([0, 0, 48, 48], np.float32), (n, 1))
    return write_clusters(out, photos, boxes, [0] * n, labels, crops=crops, **kw)


def _thumb_colours(out):
    from PIL import Image

    return {
        p.name: tuple(int(v) for v in np.asarray(Image.open(p)).reshape(-1, 3).mean(0).round())
        for p in sorted((out / "faces").glob("*.jpg"))
    }


def test_a_cluster_rerun_replaces_its_own_files_and_nothing_else(tmp_path):
    """A rerun into the same folder reused old thumbnails under new captions and mixed old and
    new links in one cluster folder."""
    first = [str(photo(tmp_path / f"old{i}.jpg", i)) for i in range(6)]
    second = [str(photo(tmp_path / f"new{i}.jpg", 10 + i)) for i in range(4)]
    out = tmp_path / "out"
    _cluster_run(out, first, (255, 0, 0))
    (out / "cluster_0000" / "my-notes.txt").write_text("mine\n")  # the user's own file
    _cluster_run(out, second, (0, 0, 255))
    links = sorted(p.name for p in out.glob("cluster_*/*.jpg"))
    assert links == sorted(f"new{i}.jpg" for i in range(4))
    assert all(os.readlink(p).endswith(p.name) for p in out.glob("cluster_*/*.jpg"))
    colours = _thumb_colours(out)
    assert len(colours) == 4 and all(c[2] > 200 and c[0] < 60 for c in colours.values())
    page = (out / "index.html").read_text()
    assert "old0.jpg" not in page and "new0.jpg" in page
    assert (out / "cluster_0000" / "my-notes.txt").read_text() == "mine\n"
    manifest = json.loads((out / MANIFEST).read_text())
    assert "clusters.csv" in manifest["files"] and "faces/000000.jpg" in manifest["files"]


def test_a_users_files_in_the_output_folder_are_replaced_only_with_overwrite(tmp_path):
    pics = [str(photo(tmp_path / f"p{i}.jpg", i)) for i in range(4)]
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("my page")
    with pytest.raises(UnsafeOutputError, match="index.html.*--overwrite"):
        _cluster_run(out, pics, (0, 255, 0))
    assert (out / "index.html").read_text() == "my page" and not (out / "clusters.csv").exists()
    _cluster_run(out, pics, (0, 255, 0), overwrite=True)
    assert "<h1>" in (out / "index.html").read_text()


def test_cluster_never_writes_through_a_symlink_in_its_folder(tmp_path):
    pics = [str(photo(tmp_path / f"p{i}.jpg", i)) for i in range(4)]
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "cluster_0000")
    with pytest.raises(UnsafeOutputError, match="symbolic link"):
        _cluster_run(out, pics, (0, 255, 0), overwrite=True)
    assert list(victim.iterdir()) == []


# --------------------------------------------------------------------------- align folders


def test_align_replaces_a_users_file_only_with_overwrite_and_resumes_its_own(cli, world, tmp_path):
    dst = tmp_path / "aligned"
    (dst / "Ann_A").mkdir(parents=True)
    mine = dst / "Ann_A" / "Ann_A_0001.png"
    mine.write_bytes(b"the user's own picture")
    code, _, err = cli("align", world / "lfw", dst, "--quiet", "--size", "32")
    assert code == 2 and "Ann_A_0001.png" in err and "--overwrite" in err
    assert mine.read_bytes() == b"the user's own picture"
    assert not (dst / "align_config.json").exists()  # refused before anything was written
    code, out, err = cli("align", world / "lfw", dst, "--quiet", "--size", "32", "--overwrite")
    assert code in (0, 1), err
    assert mine.read_bytes() != b"the user's own picture"
    # a run killed after writing a crop but before recording it: the journal named the file
    # first, so a rerun owns it and goes on without --overwrite
    journal = dst / ".align_journal.jsonl"
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    kept = [
        r for r in lines if not (r["source"] == "Ann_A/Ann_A_0001.jpg" and r["status"] != "pending")
    ]
    journal.write_text("".join(json.dumps(r) + "\n" for r in kept))
    code, out, err = cli("align", world / "lfw", dst, "--quiet", "--size", "32")
    assert code in (0, 1), err
    assert "this run processed 1 " in out and "3 already done" in out


# --------------------------------------------------------------------------- several faces


class FourFaces:
    """A stand-in detector: every image holds four faces in its quadrants; the top-left one is
    the largest, so it is the main face."""

    name = "four"

    def detect_batch(self, images):
        out = []
        for im in images:
            h, w = im.shape[:2]
            boxes = [(0, 0, w / 2, h / 2), (w / 2 + 4, 4, w - 4, h / 2 - 4)]
            boxes += [(4, h / 2 + 4, w / 2 - 4, h - 4), (w / 2 + 4, h / 2 + 4, w - 4, h - 4)]
            out.append(
                [Detection(b, np.zeros((5, 2)), 0.99 - 0.01 * i) for i, b in enumerate(boxes)]
            )
        return out


def test_verify_reports_several_faces_and_lets_the_caller_choose(world, tmp_path):
    from facenet.models.loading import load_model

    tile = photo(tmp_path / "tile.jpg", 3, size=96)
    embedder = Embedder(load_model(str(world / "model.safetensors")), detector=FourFaces())
    v = verify_files(embedder, tile, world / "photo.jpg", threshold=1.0)
    a = v.images[0]
    assert (len(a.faces), a.used[0].face_index, a.chosen_by) == (4, 0, "main face")
    assert v.notes() and "4 faces found" in v.notes()[0] and "--face-a" in v.notes()[0]
    d = v.to_dict()["images"][0]
    assert len(d["faces"]) == 4 and [f["used"] for f in d["faces"]] == [True, False, False, False]
    assert d["face_chosen_by"] == "main face" and "distance" not in d["faces"][1]
    chosen = verify_files(embedder, tile, world / "photo.jpg", threshold=1.0, face_a=2)
    assert (chosen.images[0].used[0].face_index, chosen.images[0].chosen_by) == (2, "chosen")
    assert not math.isclose(chosen.distance, v.distance)
    with pytest.raises(ValueError, match="no face 7; 4 face"):
        verify_files(embedder, tile, world / "photo.jpg", threshold=1.0, face_a=7)


@pytest.mark.data
@pytest.mark.slow
def test_verify_on_a_photo_of_four_people_says_so(cli, lfw_dir, world, tmp_path):
    """The issue's case: a 2x2 tile of four LFW photos against Powell's photo silently compared
    one of the four faces."""
    from PIL import Image

    people = ["Tony_Blair", "George_W_Bush", "Colin_Powell", "Donald_Rumsfeld"]
    tile = Image.new("RGB", (500, 500))
    for i, name in enumerate(people):
        im = Image.open(lfw_dir / "lfw-deepfunneled" / name / f"{name}_0001.jpg")
        tile.paste(im, (250 * (i % 2), 250 * (i // 2)))
    tile.save(tmp_path / "four.jpg")
    powell = lfw_dir / "lfw-deepfunneled" / "Colin_Powell" / "Colin_Powell_0002.jpg"
    args = ["--model", world / "model.safetensors", "--threshold", "1"]
    code, out, err = cli("verify", tmp_path / "four.jpg", powell, "--json", *args)
    assert code in (0, 1), err  # an answer: same or different
    answer = json.loads(out)
    assert len(answer["images"][0]["faces"]) >= 4 and len(answer["images"][1]["faces"]) >= 1
    assert "faces found" in err and "--face-a" in err


# --------------------------------------------------------------------------- answers


def test_an_evaluation_that_embeds_nothing_is_an_error_not_fifty_percent(world):
    from facenet.data.lfw import read_pairs
    from facenet.eval.embedding import EmbeddingError, embed_paths
    from facenet.eval.protocol import evaluate_pairs
    from facenet.models.loading import load_model

    model = load_model(str(world / "model.safetensors"))
    paths = sorted((world / "lfw").glob("*/*.jpg"))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size"):
            embed_paths(model, paths, batch_size=bad)
    with pytest.raises(EmbeddingError, match="4 image"):
        evaluate_pairs(model, read_pairs(world / "pairs.txt"), world / "lfwbad")
    ev = evaluate_pairs(model, read_pairs(world / "pairs.txt"), world / "lfw")
    assert ev.stats.n_images == 4 and np.isfinite(ev.distances).all()


def test_json_output_is_strict():
    text = dumps_json({"d": math.inf, "n": [math.nan, 1.5], "a": np.float32(2.0)})

    def refuse(name):
        raise ValueError(name)

    assert json.loads(text, parse_constant=refuse) == {"d": None, "n": [None, 1.5], "a": 2.0}


def test_identify_on_an_emptied_gallery_is_an_error_not_infinity(cli, world, tmp_path):
    gallery = tmp_path / "g"
    model = ["--model", world / "model.safetensors", "--crop", "none"]
    assert (
        cli("gallery", "enroll", "ann", world / "photo.jpg", "--gallery", gallery, *model)[0] == 0
    )
    assert cli("gallery", "remove", "ann", "--gallery", gallery)[0] == 0
    code, out, err = cli("identify", world / "photo2.jpg", "--gallery", gallery, "--json", *model)
    assert code == 2 and "empty" in err and "Infinity" not in out  # 2: no answer


def test_identify_json_parses_strictly_and_says_how_many_faces(cli, world, tmp_path):
    gallery = tmp_path / "g"
    model = ["--model", world / "model.safetensors", "--crop", "none"]
    assert (
        cli("gallery", "enroll", "ann", world / "photo.jpg", "--gallery", gallery, *model)[0] == 0
    )
    code, out, err = cli("identify", world / "photo2.jpg", "--gallery", gallery, "--json", *model)
    assert code == 0, err
    answer = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    (image,) = answer["images"]
    assert len(image["faces"]) == 1 and image["face_chosen_by"] == "main face"
    assert image["faces"][0]["identity"] == "ann" and answer["operating_point"] == "far_1e-3"


def test_gallery_enroll_reports_photos_already_enrolled(cli, world, tmp_path):
    gallery = tmp_path / "g"
    model = ["--model", world / "model.safetensors", "--crop", "none"]
    photos = [world / "photos" / f"p{i}.jpg" for i in range(3)]
    assert cli("gallery", "enroll", "ann", *photos, "--gallery", gallery, *model)[0] == 0
    code, out, err = cli("gallery", "enroll", "ann", *photos, "--gallery", gallery, *model)
    assert code == 0 and "enrolled 0 face(s)" in out and "3 already enrolled" in out
    assert err.count("already enrolled") == 3
    code, out, _ = cli("gallery", "list", "--gallery", gallery, "--json")
    assert json.loads(out)["identities"] == [{"name": "ann", "images": 3, "faces": 3}]


def test_gallery_list_cannot_be_spoofed_by_a_stored_name(cli, world, tmp_path):
    """A name with a newline, stored by an older version, prints as one escaped row."""
    import sqlite3

    gallery = tmp_path / "g"
    model = ["--model", world / "model.safetensors", "--crop", "none"]
    assert (
        cli("gallery", "enroll", "ann", world / "photo.jpg", "--gallery", gallery, *model)[0] == 0
    )
    with sqlite3.connect(gallery / "gallery.sqlite") as db:
        db.execute("UPDATE identities SET name = ?", ("eve\n  mallory\t9 photo(s)",))
    code, out, _ = cli("gallery", "list", "--gallery", gallery)
    assert code == 0
    rows = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert rows == ["  eve\\n  mallory\\t9 photo(s)\t1 photo(s)\t1 face(s)"]


def test_thresholds_travel_with_embeddings_files(cli, world, tmp_path):
    code, _, err = cli(
        "embed",
        world / "photos",
        "--out",
        tmp_path / "e.npz",
        "--model",
        world / "model.safetensors",
        "--crop",
        "none",
    )
    assert code == 0, err
    from facenet.apps.embedding_table import load_embeddings

    assert load_embeddings(tmp_path / "e.npz").meta["thresholds"] == THRESHOLDS


@pytest.mark.parametrize("command", ["verify", "identify"])
def test_a_failure_of_verify_or_identify_is_never_their_no(
    cli, world, tmp_path, monkeypatch, command
):
    """Exit 1 answers "different people" / "unknown face": a failure nobody foresaw (here a
    RuntimeError deep inside) must be 2, no answer, or a script reads it as the answer."""
    import importlib

    module = importlib.import_module(f"facenet.commands.{command}")
    target = "verify_files" if command == "verify" else "identify_file"

    def boom(*args, **kwargs):
        raise RuntimeError("shape '[1, 3, 1, 1]' is invalid for input of size 1")

    monkeypatch.setattr(module, target, boom)
    model = ["--model", world / "model.safetensors", "--crop", "none"]
    if command == "verify":
        argv = ["verify", world / "photo.jpg", world / "photo2.jpg", *model, "--threshold", "1"]
    else:
        enrol = ["gallery", "enroll", "ann", world / "photo2.jpg", "--gallery", tmp_path / "g"]
        assert cli(*enrol, *model)[0] == 0
        argv = ["identify", world / "photo.jpg", "--gallery", tmp_path / "g", *model]
    code, _, err = cli(*argv)
    assert code == 2, err
    assert "Traceback" not in err and "invalid for input" in err


def test_an_empty_pretrained_name_is_not_random_weights(cli, world):
    code, _, err = cli(
        "verify", world / "photo.jpg", world / "photo2.jpg", "--model", "tiny:", "--crop", "none"
    )
    assert code == 2 and "no pretrained name after ':'" in err


@pytest.mark.parametrize(
    "command", [["gallery", "list"], ["serve"], ["gallery", "enroll", "ann", "x.jpg"]]
)
def test_an_empty_gallery_location_is_refused_not_the_default(cli, command):
    code, _, err = cli(*command, "--gallery", "")
    assert code == 2 and "--gallery" in err and "is empty" in err


def test_a_device_that_cannot_run_is_named_as_the_device(cli, world):
    args = ["verify", world / "photo.jpg", world / "photo2.jpg", "--crop", "none"]
    code, _, err = cli(*args, "--model", world / "model.safetensors", "--device", "bogus")
    assert code == 2 and "--device 'bogus'" in err and "cannot load model" not in err
