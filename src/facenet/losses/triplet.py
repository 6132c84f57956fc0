"""The triplet loss of SPEC §2 with online mining: distances -> mining -> hinge.

``triplet_loss(embeddings, labels)`` composes the three pure pieces of
:mod:`facenet.losses.distances`, :mod:`facenet.losses.mining` and :mod:`facenet.losses.hinge`;
with ``distributed=True`` it mines the global batch of several processes
(:mod:`facenet.losses.distributed`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from facenet.losses.distances import pairwise_squared_distances
from facenet.losses.distributed import distributed_triplet_loss
from facenet.losses.hinge import DEFAULT_MARGIN, TripletLossOutput, loss_and_stats
from facenet.losses.mining import Rule, mine_triplets


def triplet_loss(
    embeddings: Tensor,
    labels: Tensor | Sequence[int],
    rule: Rule | str = "semi_hard",
    margin: float = DEFAULT_MARGIN,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    distributed: bool = False,
) -> TripletLossOutput:
    """Triplet loss with online mining over the batch (SPEC §2–3).

    Args:
        embeddings: (B, D) L2-normalised embeddings (with grad).
        labels: (B,) integer identity labels.
        rule: mining rule, one of ``facenet.losses.RULES`` (default the paper's ``"semi_hard"``).
        margin: alpha (SPEC §2: 0.2).
        generator: randomness for the random rules. Under ``distributed=True`` it must be seeded
            identically on every rank (``None`` draws a seed on rank 0 and broadcasts it).
        chunk_size: anchors per mining chunk (default: about 2M distances per chunk).
        distributed: mine over the *global* batch of all ranks of the default process group (see
            :func:`facenet.losses.distributed.distributed_triplet_loss`).

    Returns:
        :class:`TripletLossOutput` with ``loss`` (scalar), ``stats`` and ``triplets``.
    """
    if distributed:
        return distributed_triplet_loss(embeddings, labels, rule, margin, generator, chunk_size)
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
    sq_dist = pairwise_squared_distances(embeddings)  # (B, B)
    triplets = mine_triplets(sq_dist, labels, rule, margin, generator, chunk_size)
    loss, stats = loss_and_stats(embeddings, sq_dist, triplets, margin)
    return TripletLossOutput(loss, stats, triplets)
