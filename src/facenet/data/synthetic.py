"""Synthetic "faces" for fast end-to-end tests without any data.

Each identity is a smooth random colour pattern (a few Gaussian blobs on a background); each of
its images is that pattern shifted by a few pixels, with its own brightness and pixel noise.
Identities are distinguishable but not trivially (shifts and noise must be ignored), so a small
model trained with triplet loss visibly improves on held-out identities within seconds.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SyntheticFaces:
    """images: uint8 (N, S, S, 3); labels: int64 (N,); identities: names."""

    images: np.ndarray
    labels: np.ndarray
    identities: tuple[str, ...]


def _prototype(rng: np.random.Generator, size: int, blobs: int = 6) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.ones((size, size, 3), np.float32) * rng.uniform(40, 120, size=3)
    for _ in range(blobs):
        cy, cx = rng.uniform(0.15, 0.85, size=2)
        sigma = rng.uniform(0.06, 0.2)
        colour = rng.uniform(-110, 140, size=3)
        g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        img += g[..., None] * colour
    return img


def make_synthetic(
    num_identities: int,
    images_per_identity: int,
    size: int = 40,
    seed: int = 0,
    max_shift: int = 3,
    noise: float = 12.0,
) -> SyntheticFaces:
    """Generate ``num_identities * images_per_identity`` images of size ``size``.

    Args:
        num_identities: number of distinct identities.
        images_per_identity: images per identity.
        size: side of each square image in pixels.
        seed: everything is a pure function of it.
        max_shift: per-image translation range in pixels.
        noise: std of the per-pixel Gaussian noise (0..255 scale).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    n = num_identities * images_per_identity
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(num_identities, dtype=np.int64), images_per_identity)
    pad = max_shift
    for i in range(num_identities):
        proto = _prototype(rng, size + 2 * pad)
        for j in range(images_per_identity):
            dy, dx = rng.integers(0, 2 * pad + 1, size=2)
            img = proto[dy : dy + size, dx : dx + size] * rng.uniform(0.8, 1.2)
            img = img + rng.normal(0, noise, size=img.shape)
            images[i * images_per_identity + j] = np.clip(img, 0, 255).astype(np.uint8)
    names = tuple(f"synthetic_{seed}_{i:05d}" for i in range(num_identities))
    return SyntheticFaces(images, labels, names)


def make_synthetic_pairs(
    num_identities: int, images_per_identity: int, size: int, seed: int, num_pairs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Verification pairs over freshly generated identities (disjoint from a training seed).

    Returns:
        images uint8 (N, S, S, 3), left (P,), right (P,) indices into images, issame bool (P,);
        half the pairs are same-identity.
    """
    faces = make_synthetic(num_identities, images_per_identity, size, seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 104729]))
    k = images_per_identity
    left, right, same = [], [], []
    for p in range(num_pairs):
        if p % 2 == 0:
            ident = rng.integers(num_identities)
            a, b = rng.choice(k, size=2, replace=False)
            left.append(ident * k + a)
            right.append(ident * k + b)
            same.append(True)
        else:
            i1, i2 = rng.choice(num_identities, size=2, replace=False)
            left.append(i1 * k + rng.integers(k))
            right.append(i2 * k + rng.integers(k))
            same.append(False)
    return faces.images, np.asarray(left), np.asarray(right), np.asarray(same, dtype=bool)


def write_synthetic_folders(
    root: str | os.PathLike,
    num_identities: int,
    images_per_identity: int,
    size: int = 40,
    seed: int = 0,
) -> Path:
    """Write a synthetic set as ``root/<identity>/<n>.png`` (folder-per-identity layout)."""
    import cv2

    faces = make_synthetic(num_identities, images_per_identity, size, seed)
    root = Path(root)
    for idx, (img, label) in enumerate(zip(faces.images, faces.labels, strict=True)):
        d = root / faces.identities[label]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{idx:06d}.png"), img[:, :, ::-1])
    return root
