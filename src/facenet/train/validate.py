"""Validation during training: embed a pairs set, score verification, calibrate thresholds.

Scoring is ``facenet.eval.verification.evaluate_verification`` (the project's LFW protocol):
k-fold accuracy with thresholds chosen on the other folds, VAL at FAR (one threshold fitted on
all pairs, FAR actually achieved reported beside it), AUC; and the calibrated thresholds that
ship inside the checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from facenet.data.augment import center_windows
from facenet.data.cache import build_cache
from facenet.data.lfw import ImageResolver, read_pairs
from facenet.data.synthetic import make_synthetic_pairs
from facenet.eval.protocol import verify_embeddings
from facenet.models.inference import combine_flips, embed_faces


@dataclass(frozen=True)
class PairSet:
    """Verification pairs over a set of cached images.

    Attributes:
        images: uint8 (M, S, S, 3) unique images.
        left, right: (P,) int indices into ``images``.
        issame: (P,) bool.
        folds: (P,) int fold id of each pair (person-disjoint for LFW).
        people: names of every person in the pairs (to keep them out of training).
        skipped: pairs dropped because an image was missing or unreadable.
    """

    images: np.ndarray
    left: np.ndarray
    right: np.ndarray
    issame: np.ndarray
    folds: np.ndarray
    people: frozenset[str] = frozenset()
    skipped: int = 0


@dataclass(frozen=True)
class ValidationResult:
    """Verification scores of one validation pass (names as in ``facenet.eval``)."""

    accuracy: float
    accuracy_std: float
    val: float  # VAL at far_target (pooled over all pairs)
    far: float  # FAR actually achieved at that threshold
    auc: float
    threshold: float  # best-accuracy threshold over all pairs (squared L2 distance)
    # calibrated on all pairs, as stored in checkpoints and read by verify/identify/cluster:
    # {"accuracy": t, "far_1e-3": t}
    thresholds: dict[str, float]
    pairs: int


def load_lfw_pairs(
    pairs_path: str | os.PathLike,
    root: str | os.PathLike,
    size: int,
    cache_dir: str | os.PathLike,
    folds: int = 10,
    progress: bool = False,
    crop_fraction: float = 1.0,
) -> PairSet:
    """Read an LFW pairs file and cache its images from ``root`` (e.g. aligned LFW) at ``size``.

    Pairs whose images are missing (e.g. no face found by the aligner) or unreadable are dropped
    and counted in ``skipped`` with a warning.
    """
    pairs = read_pairs(pairs_path, n_folds=folds)
    resolver = ImageResolver(root)
    index: dict[str, int] = {}
    paths: list[str] = []
    left, right, keep = [], [], []
    for i, (a, b) in enumerate(zip(pairs.left, pairs.right, strict=True)):
        try:
            pa, pb = resolver(a), resolver(b)
        except FileNotFoundError:
            continue
        for stem, p in ((a, pa), (b, pb)):
            if stem not in index:
                index[stem] = len(paths)
                paths.append(str(p))
        left.append(index[a])
        right.append(index[b])
        keep.append(i)
    if not keep:
        raise FileNotFoundError(f"{root}: none of the images of {pairs_path} were found")
    cached = build_cache(paths, size, cache_dir, progress=progress, crop_fraction=crop_fraction)
    left_a, right_a, keep_a = np.asarray(left), np.asarray(right), np.asarray(keep)
    ok = cached.ok[left_a] & cached.ok[right_a]
    skipped = len(pairs) - int(ok.sum())
    if skipped:
        warnings.warn(
            f"{pairs_path}: {skipped} of {len(pairs)} pairs skipped (image missing under {root} "
            "or unreadable)",
            stacklevel=2,
        )
    people = frozenset(pairs.left_people) | frozenset(pairs.right_people)
    return PairSet(
        images=cached.images,
        left=left_a[ok],
        right=right_a[ok],
        issame=np.asarray(pairs.issame)[keep_a][ok],
        folds=np.asarray(pairs.folds)[keep_a][ok],
        people=people,
        skipped=skipped,
    )


def synthetic_pairs(size: int, seed: int, num_pairs: int = 400) -> PairSet:
    """Pairs over synthetic identities that training never sees (seed offset)."""
    images, left, right, issame = make_synthetic_pairs(60, 6, size, seed + 1_000_003, num_pairs)
    folds = np.arange(len(left)) % 10
    return PairSet(images, left, right, issame, folds)


def embed_images(
    model: nn.Module,
    images: np.ndarray,
    input_size: tuple[int, int],
    device: torch.device,
    batch_size: int = 256,
    flip: bool = False,
    channels_last: bool = False,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> Tensor:
    """uint8 (M, S, S, 3) cached faces -> float32 (M, D) unit embeddings of their central
    ``input_size`` windows (the framing the model records, ``ModelSpec.crop_fraction``).

    ``flip`` adds the embedding of the mirrored crop before re-normalising.
    """
    e = embed_faces(
        model,
        center_windows(images, input_size),
        framed=True,
        batch_size=batch_size,
        device=device,
        flip=flip,
        channels_last=channels_last,
        autocast=autocast,
    )
    return combine_flips(e, "mean") if flip else torch.nn.functional.normalize(e, dim=1)


def score_validation(
    embeddings: Tensor, pairs: PairSet, far_target: float = 1e-3, right: Tensor | None = None
) -> ValidationResult:
    """Verification scores of ``embeddings`` (M, D) on ``pairs`` (squared L2 distances), by
    the evaluation suite's protocol (``facenet.eval.protocol.verify_embeddings``). ``right``:
    another model's (M, D) embeddings for the pairs' right images (mixed pairs, harmonic
    embeddings); by default the same ``embeddings``."""
    e = embeddings.numpy()
    r = e if right is None else right.numpy()
    _, report = verify_embeddings(
        e[pairs.left], r[pairs.right], pairs.issame.astype(bool), pairs.folds, "l2", far_target
    )
    return ValidationResult(
        accuracy=report.accuracy,
        accuracy_std=report.accuracy_std,
        val=report.val,
        far=report.far,
        auc=report.auc,
        threshold=report.threshold_accuracy,
        thresholds=dict(report.thresholds),
        pairs=report.n_pairs,
    )


def default_pairs_path(lfw_dir: str | os.PathLike) -> Path:
    """LFW View 1's test pairs, the default validation set."""
    return Path(lfw_dir) / "pairsDevTest.txt"
