"""Pair distances between embeddings: squared L2 (the paper's) and cosine.

``cosine-centered`` subtracts a mean embedding before the cosine (Sandberg's ``subtract_mean``
option). To keep the held-out fold unseen, the mean for a pair in fold f is taken over the
embeddings of the pairs in the *other* folds (label-free, but it still is statistics of data,
so it never uses the fold under test).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Distance = Literal["l2", "cosine", "cosine-centered"]
DISTANCES = ("l2", "cosine", "cosine-centered")


def squared_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D), (N, D) -> (N,) squared Euclidean distance, in [0, 4] for unit vectors."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.einsum("nd,nd->n", diff, diff)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D), (N, D) -> (N,) ``1 - cos(a, b)`` in [0, 2]; zero vectors count as orthogonal."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dots = np.einsum("nd,nd->n", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((na > 0) & (nb > 0), dots / (na * nb), 0.0)
    return 1.0 - np.clip(cos, -1.0, 1.0)


def pair_distances(
    left: np.ndarray,
    right: np.ndarray,
    metric: Distance = "l2",
    folds: np.ndarray | None = None,
) -> np.ndarray:
    """Distances of N pairs.

    Args:
        left, right: (N, D) embeddings of the two images of each pair.
        metric: ``"l2"`` (squared), ``"cosine"`` or ``"cosine-centered"``.
        folds: (N,) fold ids, used by ``cosine-centered`` so that a pair's mean comes from the
            other folds; without folds the mean of all embeddings is used.

    Returns:
        (N,) float64 distances (smaller = more alike).
    """
    left = np.asarray(left, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    if left.shape != right.shape or left.ndim != 2:
        raise ValueError(f"left {left.shape} and right {right.shape} must both be (N, D)")
    if metric == "l2":
        return squared_l2(left, right)
    if metric == "cosine":
        return cosine_distance(left, right)
    if metric != "cosine-centered":
        raise ValueError(f"unknown distance {metric!r}; choose from {', '.join(DISTANCES)}")
    if folds is None:
        mean = np.concatenate([left, right]).mean(axis=0)
        return cosine_distance(left - mean, right - mean)
    folds = np.asarray(folds)
    out = np.empty(left.shape[0])
    for f in np.unique(folds):
        test = folds == f
        mean = np.concatenate([left[~test], right[~test]]).mean(axis=0)
        out[test] = cosine_distance(left[test] - mean, right[test] - mean)
    return out
