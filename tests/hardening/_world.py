"""Helpers of the hardening tests: a small world of good and bad inputs; needs no face data.

Photos are synthetic (with ``--crop none`` any picture is a face crop), the model is an untrained
``tiny`` with calibrated-looking thresholds, saved both as safetensors and as a training
checkpoint. ``evil_pickle(path, marker)`` writes a ``.pt`` whose unpickling would create
``marker``: loading it must never do so.
"""

from __future__ import annotations

import builtins
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facenet.models.card import card_of
from facenet.models.loading import save_weights
from facenet.models.registry import create_model
from facenet.train.checkpoint import save_checkpoint

THRESHOLDS = {"accuracy": 1.0, "far_1e-3": 0.6}


class _CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: the proof that a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def evil_pickle(path: Path, marker: Path, like_checkpoint: bool = True) -> Path:
    """A ``.pt`` file (torch.save format) that runs code when unpickled without restrictions."""
    payload = {"payload": _CreatesFile(marker)}
    if like_checkpoint:
        model = create_model("tiny")
        payload |= {
            "model": "tiny",
            "model_kwargs": {},
            "model_state": model.state_dict(),
            "config": {},
            "step": 1,
        }
    torch.save(payload, path)
    return path


def photo(path: Path, seed: int, size: int = 48) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("tiny")
    card_of(model).set_thresholds(THRESHOLDS)
    return model


def build_world(w: Path) -> Path:
    """Good and bad files side by side in ``w`` (see the names)."""
    photos = w / "photos"
    photos.mkdir()
    for i in range(3):
        photo(photos / f"p{i}.jpg", i)
    photo(w / "photo.jpg", 10)
    photo(w / "photo2.jpg", 11)
    (w / "folder").mkdir()
    (w / "afile.txt").write_text("a plain file\n")
    (w / "empty.jpg").write_bytes(b"")
    (w / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 3)
    jpeg = (w / "photo.jpg").read_bytes()
    (w / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    # models
    model = tiny_model()
    save_weights(model, w / "model.safetensors")
    save_checkpoint(w / "model.pt", model, config={}, step=1, thresholds=THRESHOLDS)
    blob = (w / "model.safetensors").read_bytes()
    (w / "trunc.safetensors").write_bytes(blob[: len(blob) // 2])
    (w / "corrupt.safetensors").write_bytes(b"\x00" * 64 + b"garbage" * 10)
    (w / "empty.safetensors").write_bytes(b"")
    ckpt = (w / "model.pt").read_bytes()
    (w / "trunc.pt").write_bytes(ckpt[: len(ckpt) // 2])
    (w / "corrupt.pt").write_bytes(b"PK\x03\x04" + b"garbage" * 20)
    (w / "empty.pt").write_bytes(b"")
    # weights of one architecture under another's name
    nn4 = {"model": "nn4", "model_kwargs": {}, "thresholds": THRESHOLDS}
    save_weights(model, w / "wrongarch.safetensors", extra=nn4)
    save_checkpoint(w / "wrongarch.pt", model, config={}, step=1, extra={"model": "nn4"})
    # embeddings
    from facenet.apps.embedding_table import EmbeddingTable, save_embeddings

    rng = np.random.default_rng(0)
    e = rng.normal(size=(6, 128)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    table = EmbeddingTable(
        np.array([str(photos / f"p{i % 3}.jpg") for i in range(6)]),
        np.zeros(6, np.int64),
        np.tile(np.array([0, 0, 48, 48], np.float32), (6, 1)),
        np.ones(6, np.float32),
        e,
        {"model": {"name": "tiny", "ref": "tiny"}, "thresholds": THRESHOLDS},
    )
    save_embeddings(w / "emb.npz", table)
    npz = (w / "emb.npz").read_bytes()
    (w / "trunc.npz").write_bytes(npz[: len(npz) // 2])
    (w / "corrupt.npz").write_bytes(b"PK\x03\x04" + b"x" * 100)
    (w / "empty.npz").write_bytes(b"")
    np.savez(w / "wrongshape.npz", path=np.array(["a"]), embedding=np.zeros((3, 4)))
    # a mini LFW: two people, two photos each, and its pairs files
    lfw = w / "lfw"
    for name in ("Ann_A", "Bob_B"):
        (lfw / name).mkdir(parents=True)
        for k in (1, 2):
            photo(lfw / name / f"{name}_{k:04d}.jpg", 100 * len(name) + ord(name[0]) + k, size=64)
    (w / "pairs.txt").write_text(
        "2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\nBob_B\t1\t2\nAnn_A\t2\tBob_B\t2\n"
    )
    (w / "badpairs.txt").write_text("this is not\na pairs file\n")
    (w / "empty.txt").write_text("")
    lfwbad = w / "lfwbad"
    for name in ("Ann_A", "Bob_B"):
        (lfwbad / name).mkdir(parents=True)
        for k in (1, 2):
            (lfwbad / name / f"{name}_{k:04d}.jpg").write_bytes(b"broken")
    # configs
    (w / "config.yaml").write_text("max_steps: 2\n")
    (w / "corrupt.yaml").write_text("max_steps: [1, 2\n  oops: {\n")
    # symlinks to a victim outside any output folder
    victim = w / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("must survive\n")
    os.symlink(victim / "keep.txt", w / "link.out")
    # a gallery with one person, and output folders holding things a command must not replace
    from facenet.apps.embedder import Embedder
    from facenet.apps.gallery import FaceRecord, Gallery

    embedder = Embedder.from_ref(str(w / "model.safetensors"), crop="none")
    face = embedder.subject_of_file(w / "photo.jpg")
    with Gallery(w / "gallery") as g:
        g.enroll("ann", [FaceRecord(face.embedding, str(w / "photo.jpg"))], embedder.fingerprint)
    (w / "alignuser").mkdir()
    (w / "alignuser" / "manifest.csv").write_text("the user's own table\n")
    (w / "alignlink").mkdir()
    os.symlink(victim, w / "alignlink" / "Ann_A")
    (w / "clusteruser").mkdir()
    (w / "clusteruser" / "index.html").write_text("<p>the user's own page</p>\n")
    (w / "clusterlink").mkdir()
    os.symlink(victim, w / "clusterlink" / "faces")
    # a corrupt gallery database
    (w / "badgallery").mkdir()
    (w / "badgallery" / "gallery.sqlite").write_bytes(b"not a database at all" * 10)
    return w


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: file -> sha256, symlink -> its target, folder -> 'dir'."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_one_line_error(code: int, err: str, *names: str) -> str:
    """A failure told as one line on stderr that names one of ``names``; no traceback."""
    assert code != 0, f"exit code 0; stderr: {err!r}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert any(n in lines[0] for n in names), f"{lines[0]!r} names none of {names}"
    return lines[0]
