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


@pytest.mark.parametrize(
    "blob",
    [
        b"model:\n  name: tiny\nseed: 0\n",  # a YAML file saved as .pt
        b"a,b,c\n1,2,3\n",
        bytes(range(256)) * 4,
        b"\x80\x02]q\x00(K\x01K\x02e.",  # a pickled list, cut short
    ],
    ids=["yaml", "csv", "bytes", "short-pickle"],
)
def test_any_bytes_as_a_checkpoint_give_model_file_error(tmp_path, blob):
    path = tmp_path / "notmodel.pt"
    path.write_bytes(blob)
    with pytest.raises(ModelFileError, match="notmodel.pt"):
        safe_torch_load(path)


def test_a_torchscript_export_is_named_as_such(cli, world, tmp_path):
    ts = tmp_path / "m.ts"
    code, _, err = cli("export", str(world / "model.safetensors"), str(ts))
    assert code == 0, err
    with pytest.raises(ModelFileError, match="TorchScript export"):
        safe_torch_load(ts)


def test_export_never_overwrites_its_input_or_a_training_checkpoint(cli, world, tmp_path):
    src = tmp_path / "model.safetensors"
    shutil.copy(world / "model.safetensors", src)
    ckpt = tmp_path / "last.pt"
    shutil.copy(world / "model.pt", ckpt)
    before = src.read_bytes(), ckpt.read_bytes()
    code, _, err = cli("export", str(src), str(src))
    assert_one_line_error(code, err, "is the model being exported")
    code, _, err = cli("export", str(src), str(ckpt))
    assert_one_line_error(code, err, "is a facenet training checkpoint")
    code, _, err = cli("export", str(ckpt), str(ckpt))
    assert_one_line_error(code, err, "last.pt")
    assert (src.read_bytes(), ckpt.read_bytes()) == before
    # an earlier TorchScript export may be replaced: it is not a checkpoint
    ts = tmp_path / "m.pt"
    assert cli("export", str(src), str(ts))[0] == 0
    assert cli("export", str(src), str(ts))[0] == 0


def test_export_from_a_runs_pt_says_what_its_safetensors_carries(cli, world, tmp_path):
    from facenet.models.loading import save_weights
    from facenet.quantize import Int8Codec

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(world / "model.pt", run / "best.pt")
    model = load_model(str(run / "best.pt"))
    card_of(model).int8 = Int8Codec.calibrate(np.eye(model.spec.embedding_dim)).to_dict()
    save_weights(model, run / "best.safetensors")
    code, _, err = cli("export", str(run / "best.pt"), str(tmp_path / "out.safetensors"))
    assert code == 0
    assert "warning" in err and "int8" in err and "best.safetensors" in err
    # ... and never replaces the file it recommends
    before = (run / "best.safetensors").read_bytes()
    code, _, err = cli("export", str(run / "best.pt"), str(run / "best.safetensors"))
    assert_one_line_error(code, err, "best.safetensors")
    assert (run / "best.safetensors").read_bytes() == before
    code, _, err = cli("export", str(run / "best.safetensors"), str(tmp_path / "o2.safetensors"))
    assert code == 0 and "warning" not in err
    assert card_of(load_model(str(tmp_path / "o2.safetensors"))).int8
