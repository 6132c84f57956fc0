"""A model file never runs code: a crafted pickle, through every command that reads a model, named
by the user or only by data (a gallery's or an embeddings file's recorded model), is refused with
one line, and the code in it never runs (it would create a marker file)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _world import assert_one_line_error, evil_pickle

from facenet.models.card import card_of
from facenet.models.loading import ModelFileError, load_model, read_metadata, safe_torch_load
from facenet.train.checkpoint import load_checkpoint

NONE = ["--crop", "none"]


@pytest.fixture
def evil(tmp_path):
    """(path of a crafted .pt, the marker file its unpickling would create)."""
    marker = tmp_path / "PWNED"
    return evil_pickle(tmp_path / "evil.pt", marker), marker


@pytest.mark.parametrize(
    "load", [load_model, read_metadata, load_checkpoint, safe_torch_load], ids=lambda f: f.__name__
)
def test_every_loader_refuses_a_crafted_pickle(evil, load):
    path, marker = evil
    with pytest.raises(ModelFileError, match="refused"):
        load(str(path))
    assert not marker.exists()


def test_a_real_checkpoint_still_loads(world):
    model = load_model(str(world / "model.pt"))
    assert card_of(model).thresholds["accuracy"] == 1.0
    assert load_checkpoint(world / "model.pt")["step"] == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "{w}/photo.jpg", "{w}/photo2.jpg", "--model", "{evil}", *NONE],
        ["embed", "{w}/photos", "--out", "{tmp}/e.npz", "--model", "{evil}", *NONE],
        [
            "eval",
            "--model",
            "{evil}",
            "--data",
            "{w}/lfw",
            "--pairs",
            "{w}/pairs.txt",
            "--no-cache",
        ],
        ["export", "{evil}", "{tmp}/m.onnx"],
        ["export", "{evil}", "{tmp}/m.safetensors"],
        ["cluster", "{w}/photos", "--out", "{tmp}/c", "--model", "{evil}", *NONE],
        ["gallery", "enroll", "x", "{w}/photo.jpg", "--gallery", "{tmp}/g", "--model", "{evil}"],
    ],
    ids=["verify", "embed", "eval", "export-onnx", "export-safetensors", "cluster", "enroll"],
)
def test_a_crafted_model_named_by_the_user_never_runs(cli, world, evil, tmp_path, argv):
    path, marker = evil
    args = [a.format(w=world, evil=path, tmp=tmp_path) for a in argv]
    code, _, err = cli(*args)
    assert_one_line_error(code, err, "evil.pt")
    assert not marker.exists()


def test_train_resume_never_runs_a_crafted_last_pt(cli, world, evil, tmp_path):
    path, marker = evil
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "last.pt")
    code, _, err = cli(
        "train",
        "--config",
        "configs/smoke.yaml",
        f"output.dir={run}",
        "output.progress=false",
        "output.tensorboard=false",
        "--resume",
    )
    assert_one_line_error(code, err, "last.pt")
    assert "refused" in err and not marker.exists()


def test_a_gallery_loads_its_recorded_model_file_only_safely(cli, world, evil, tmp_path):
    """Enrol with a real model file, then swap the file: a later command that takes the model
    from the gallery loads it with the safe loader (the crafted one is refused, never run) and
    refuses other weights by their hash."""
    path, marker = evil
    model = tmp_path / "mine.pt"
    shutil.copy(world / "model.pt", model)
    gallery = tmp_path / "g"
    enroll = ["gallery", "enroll", "ann", world / "photo.jpg", "--gallery", gallery, *NONE]
    code, _, err = cli(*enroll, "--model", model)
    assert code == 0, err
    code, out, err = cli("identify", world / "photo.jpg", "--gallery", gallery, *NONE)
    assert code == 0 and "ann" in out, err  # the recorded model is remembered
    shutil.copy(path, model)  # the recorded model file is now hostile
    for argv in (
        ["identify", world / "photo2.jpg", "--gallery", gallery, *NONE],
        ["gallery", "enroll", "bob", world / "photo2.jpg", "--gallery", gallery, *NONE],
        ["identify", world / "photo2.jpg", "--gallery", gallery, "--model", model, *NONE],
    ):
        code, _, err = cli(*argv)
        line = assert_one_line_error(code, err, str(model))
        assert "refused" in line and not marker.exists()
    # other (harmless) weights in its place: refused by the gallery's weights hash
    from _world import tiny_model

    from facenet.train.checkpoint import save_checkpoint

    save_checkpoint(model, tiny_model(seed=5), config={}, step=1)
    code, _, err = cli("identify", world / "photo2.jpg", "--gallery", gallery, *NONE)
    assert_one_line_error(code, err, "not comparable")


def test_cluster_reads_thresholds_from_an_embeddings_file_not_from_its_model(
    cli, world, evil, tmp_path
):
    """`facenet embed` records the model's thresholds: clustering needs no model. An older file
    names only the model; it is loaded safely (a crafted one is refused, never run)."""
    path, marker = evil
    code, out, err = cli("cluster", "--embeddings", world / "emb.npz", "--out", tmp_path / "c1")
    assert code == 0, err
    assert "threshold 0.600 (model far_1e-3)" in out
    with np.load(world / "emb.npz") as z:
        cols = {k: z[k] for k in z.files}
    old = {"model": {"name": "tiny", "ref": str(path)}}
    np.savez(tmp_path / "old.npz", **(cols | {"meta": np.array(json.dumps(old))}))
    code, _, err = cli("cluster", "--embeddings", tmp_path / "old.npz", "--out", tmp_path / "c2")
    line = assert_one_line_error(code, err, "evil.pt")
    assert "refused" in line and not marker.exists()
