"""Fixtures for the application tests: a ``tiny`` model trained for a few seconds on ORL (so its
embeddings separate people), saved as a self-describing weights file with thresholds fitted on
ORL pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facenet.data.images import load_image
from facenet.eval.verification import calibrate_thresholds
from facenet.models.card import card_of
from facenet.models.loading import save_weights
from facenet.models.registry import create_model
from facenet.preprocess import preprocess

TRAIN_PEOPLE = 30  # ORL s1..s30 train the model; s31..s40 stay unseen ("strangers")


def orl_images(orl_dir: Path, people: range) -> tuple[list[np.ndarray], np.ndarray, list[Path]]:
    images, labels, paths = [], [], []
    for person in people:
        for k in range(1, 11):
            p = orl_dir / f"s{person}" / f"{k}.pgm"
            images.append(load_image(p))
            labels.append(person)
            paths.append(p)
    return images, np.array(labels), paths


@pytest.fixture(scope="session")
def trained_tiny(orl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a ``tiny`` weights file trained on ORL s1..s30 with a cosine-softmax head,
    thresholds calibrated on s31..s40."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = create_model("tiny")
    images, labels, _ = orl_images(orl_dir, range(1, TRAIN_PEOPLE + 1))
    x = preprocess(images, model.spec, framed=True)  # (300, 3, 32, 32)
    y = torch.as_tensor(labels - 1)
    classes = torch.nn.Parameter(torch.randn(TRAIN_PEOPLE, model.spec.embedding_dim) * 0.1)
    opt = torch.optim.Adam([*model.parameters(), classes], lr=3e-3)
    model.train()
    for _ in range(80):
        idx = torch.randperm(len(x), generator=gen)[:64]
        emb = model(x[idx])
        logits = 16.0 * emb @ F.normalize(classes, dim=1).T
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    # why: thresholds fitted on people the model never saw, as a real calibration would be
    held_out, held_labels, _ = orl_images(orl_dir, range(TRAIN_PEOPLE + 1, 41))
    with torch.no_grad():
        e = model(preprocess(held_out, model.spec, framed=True)).numpy()
    d = ((e[:, None] - e[None]) ** 2).sum(-1)
    same = held_labels[:, None] == held_labels[None]
    iu = np.triu_indices(len(e), 1)
    dist, issame = d[iu], same[iu]
    card_of(model).set_thresholds(calibrate_thresholds(dist, issame))
    path = tmp_path_factory.mktemp("models") / "tiny-orl.safetensors"
    save_weights(model, path)
    return path


@pytest.fixture(scope="session")
def other_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different (untrained) ``tiny``: another embedding space."""
    torch.manual_seed(1)
    model = create_model("tiny")
    card_of(model).set_thresholds({"accuracy": 1.0, "far_1e-3": 0.5})
    path = tmp_path_factory.mktemp("models") / "tiny-other.safetensors"
    save_weights(model, path)
    return path
