"""The glue: a model + an image folder + a pairs file -> distances -> ``VerificationReport``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facenet.data.lfw import ImageResolver, Pairs
from facenet.eval.alignment import resolve_alignment
from facenet.eval.distances import Distance, pair_distances
from facenet.eval.embedding import EmbeddingStats, FaceEmbedder, embed_paths
from facenet.eval.verification import DEFAULT_FAR, VerificationReport, evaluate_verification


@dataclass
class PairsEvaluation:
    """One verification run: the report plus what produced it."""

    report: VerificationReport
    distances: np.ndarray  # (N,) pair distances
    issame: np.ndarray  # (N,) bool
    folds: np.ndarray  # (N,) fold ids
    distance: str  # "l2" | "cosine" | "cosine-centered"
    stats: EmbeddingStats = field(default_factory=EmbeddingStats)
    left: np.ndarray | None = None  # (N, D) embeddings of the pairs' left images
    right: np.ndarray | None = None  # (N, D) of the right images


def embed_pairs(
    model: Any,
    pairs: Pairs,
    root: str | os.PathLike,
    stats: EmbeddingStats | None = None,
    **embed_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) left and (N, D) right embeddings; each image is embedded once.

    ``embed_kwargs`` go to ``facenet.eval.embedding.embed_paths``.
    """
    resolver = ImageResolver(root)
    stems = pairs.stems()
    paths: list[Path] = [resolver(s) for s in stems]
    emb = embed_paths(model, paths, stats=stats, **embed_kwargs)
    row = {s: i for i, s in enumerate(stems)}
    left = emb[[row[s] for s in pairs.left]]
    right = emb[[row[s] for s in pairs.right]]
    return left, right


def verify_embeddings(
    left: np.ndarray,
    right: np.ndarray,
    issame: np.ndarray,
    folds: np.ndarray,
    distance: Distance = "l2",
    far_target: float = DEFAULT_FAR,
) -> tuple[np.ndarray, VerificationReport]:
    """(N, D) left and right embeddings of N pairs -> their distances and the k-fold report
    (``folds`` gives each pair's fold). Training validation scores through here too."""
    d = pair_distances(left, right, distance, folds=folds)
    return d, evaluate_verification(d, issame, folds, far_target)


def evaluate_pairs(
    model: Any,
    pairs: Pairs,
    root: str | os.PathLike,
    distance: Distance = "l2",
    far_target: float = DEFAULT_FAR,
    progress: Callable[[int, int], None] | None = None,
    **embed_kwargs: Any,
) -> PairsEvaluation:
    """Embed, measure distances and run the k-fold protocol with ``pairs.folds``.

    Without ``align`` (or an ``aligner``) in ``embed_kwargs``, faces are cropped as
    ``facenet eval`` crops them: a folder written by ``facenet align`` as it was aligned, any
    other folder by centre crops (``facenet.eval.alignment.resolve_alignment``).
    """
    # why: peers (FaceEmbedder) detect and align by themselves
    chosen = "align" in embed_kwargs or "aligner" in embed_kwargs
    if not chosen and not isinstance(model, FaceEmbedder):
        embed_kwargs["align"] = resolve_alignment(root).align
    stats = EmbeddingStats()
    left, right = embed_pairs(model, pairs, root, stats=stats, progress=progress, **embed_kwargs)
    d, report = verify_embeddings(left, right, pairs.issame, pairs.folds, distance, far_target)
    return PairsEvaluation(report, d, pairs.issame, pairs.folds, distance, stats, left, right)


def evaluate_mixed_pairs(
    gallery_model: Any,
    probe_model: Any,
    pairs: Pairs,
    root: str | os.PathLike,
    distance: Distance = "l2",
    far_target: float = DEFAULT_FAR,
    progress: Callable[[int, int], None] | None = None,
    gallery_kwargs: dict[str, Any] | None = None,
    **embed_kwargs: Any,
) -> PairsEvaluation:
    """The pairs across two models (harmonic embeddings, SPEC §6): each pair's left image as
    ``gallery_model`` embeds it (a gallery enrolled with it), its right image as ``probe_model``
    does (a query). ``gallery_kwargs`` override ``embed_kwargs`` for the gallery model (its own
    aligner).

    Raises:
        ValueError: the two models' embeddings differ in dimension.
    """
    stats = EmbeddingStats()
    g_kwargs = embed_kwargs | (gallery_kwargs or {})
    g_left, _ = embed_pairs(gallery_model, pairs, root, stats=stats, progress=progress, **g_kwargs)
    _, p_right = embed_pairs(
        probe_model, pairs, root, stats=stats, progress=progress, **embed_kwargs
    )
    if g_left.shape[1] != p_right.shape[1]:
        raise ValueError(
            f"the gallery model embeds in {g_left.shape[1]} dimensions, the probe model in "
            f"{p_right.shape[1]}: their embeddings cannot be compared"
        )
    d, report = verify_embeddings(g_left, p_right, pairs.issame, pairs.folds, distance, far_target)
    return PairsEvaluation(report, d, pairs.issame, pairs.folds, distance, stats, g_left, p_right)
