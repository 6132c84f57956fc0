"""A tiny LFW-shaped image folder + pairs file, and the seeded ``tiny`` model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def mini_lfw(tmp_path_factory) -> tuple[Path, Path]:
    """(image root, pairs.txt): 8 people x 3 images (64x64), View-2 header ``2 3``."""
    root = tmp_path_factory.mktemp("mini_lfw")
    rng = np.random.default_rng(0)
    people = [f"Person_{c}" for c in "ABCDEFGH"]
    for k, name in enumerate(people):
        (root / name).mkdir()
        base = rng.integers(0, 255, 3)
        for i in range(1, 4):
            img = np.clip(base + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
            img[20:44, 20 + k : 30 + k] = 255 - base  # a per-person mark
            ext = "png" if k % 2 else "jpg"  # both extensions are found on disk
            Image.fromarray(img).save(root / name / f"{name}_{i:04d}.{ext}")
    lines = ["2\t3"]
    for fold in range(2):
        ps = people[4 * fold : 4 * fold + 4]
        lines += [f"{ps[0]}\t1\t2", f"{ps[1]}\t1\t3", f"{ps[2]}\t2\t3"]
        lines += [f"{ps[0]}\t3\t{ps[1]}\t1", f"{ps[2]}\t1\t{ps[3]}\t2", f"{ps[1]}\t2\t{ps[3]}\t3"]
    pairs = root.parent / f"{root.name}_pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return root, pairs


@pytest.fixture()
def tiny_model():
    import torch

    from facenet.models.registry import create_model

    torch.manual_seed(0)
    return create_model("tiny").eval()
