"""The hinge of SPEC §2 over given triplets, and the batch statistics that show training health.

    L = mean_i max(0, ||f(a_i) - f(p_i)||^2 - ||f(a_i) - f(n_i)||^2 + alpha),   alpha = 0.2

(the paper writes a sum; the mean keeps the learning rate independent of how many triplets the
rule found). The triplets come from elsewhere: online mining in one process
(:func:`facenet.losses.triplet_loss`), over the global batch of several
(:mod:`facenet.losses.distributed`), or offline (``facenet.train.offline``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from facenet.losses.distances import row_squared_distances
from facenet.losses.mining import Triplets

# why: SPEC §2, alpha = 0.2 in the paper.
DEFAULT_MARGIN = 0.2


@dataclass(frozen=True)
class TripletStats:
    """What a batch's mining and loss looked like (plain floats, safe to log).

    Attributes:
        num_triplets: triplets the rule selected.
        num_pairs: anchor-positive pairs the rule considered (``batch_hard``: anchors).
        pairs_without_negative: considered pairs that got no triplet (no negative met the rule).
        fraction_active: share of selected triplets with positive loss (0 when there are none).
        mean_ap: mean squared anchor-positive distance over the selected triplets (nan if none).
        mean_an: mean squared anchor-negative distance over the selected triplets (nan if none).
        mean_pairwise_distance: mean squared distance over all distinct pairs of the batch; about
            2 for well-spread unit vectors, falling to 0 when the model collapses (``f(x) = c``).
        embedding_spread: sqrt of the total variance of the batch's embeddings (for unit vectors
            in [0, 1]: 1 = spread over the sphere, 0 = every embedding the same point).
    """

    num_triplets: int
    num_pairs: int
    pairs_without_negative: int
    fraction_active: float
    mean_ap: float
    mean_an: float
    mean_pairwise_distance: float
    embedding_spread: float

    def as_dict(self) -> dict[str, float]:
        """The statistics as a flat dict (for loggers)."""
        return asdict(self)


@dataclass(frozen=True)
class TripletLossOutput:
    """Result of :func:`triplet_loss`.

    Attributes:
        loss: scalar tensor, mean hinge over the mined triplets; an exact 0 that still has a graph
            (``backward()`` works and gives zero gradients) when no triplet was mined.
        stats: :class:`TripletStats` of the batch.
        triplets: the mined triplets (batch indices).
    """

    loss: Tensor
    stats: TripletStats
    triplets: Triplets


def hinge_from_distances(d_ap: Tensor, d_an: Tensor, margin: float = DEFAULT_MARGIN) -> Tensor:
    """Per-triplet loss ``max(0, d_ap - d_an + margin)``.

    Args:
        d_ap: (T,) squared anchor-positive distances.
        d_an: (T,) squared anchor-negative distances.
        margin: alpha.

    Returns:
        (T,) non-negative losses.
    """
    return (d_ap - d_an + margin).clamp_min(0.0)


def triplet_margin_loss(
    embeddings: Tensor, triplets: Triplets, margin: float = DEFAULT_MARGIN
) -> Tensor:
    """Mean triplet loss of given triplets, distances computed from the embedding rows.

    The lower-level entry point for triplets that were chosen elsewhere (offline mining, a fixed
    validation set of triplets).

    Args:
        embeddings: (B, D) embeddings.
        triplets: indices into ``embeddings``.
        margin: alpha (SPEC §2: 0.2).

    Returns:
        Scalar mean loss; a zero that keeps the graph when ``triplets`` is empty.
    """
    if len(triplets) == 0:
        return embeddings.sum() * 0.0
    anchor = embeddings[triplets.anchor]
    d_ap = row_squared_distances(anchor, embeddings[triplets.positive])
    d_an = row_squared_distances(anchor, embeddings[triplets.negative])
    return hinge_from_distances(d_ap, d_an, margin).mean()


def _collapse_indicators(embeddings: Tensor, sq_dist: Tensor) -> tuple[float, float]:
    """(mean squared distance over distinct pairs, sqrt of total variance) of the batch."""
    batch = embeddings.shape[0]
    if batch < 2:
        return float("nan"), 0.0
    with torch.no_grad():
        # The diagonal is exactly zero, so the off-diagonal mean is sum / (B (B - 1)).
        mean_pair = float(sq_dist.sum(dtype=torch.float64)) / (batch * (batch - 1))
        centred = embeddings.detach().double() - embeddings.detach().double().mean(dim=0)
        spread = float(centred.pow(2).sum(dim=1).mean().sqrt())
    return mean_pair, spread


def loss_and_stats(
    embeddings: Tensor, sq_dist: Tensor, triplets: Triplets, margin: float
) -> tuple[Tensor, TripletStats]:
    """Mean hinge over ``triplets`` read from ``sq_dist``, and the batch statistics.

    Reading the distances from the same (B, B) matrix the miner saw keeps the loss consistent with
    the mining decisions; gradients flow through ``sq_dist`` into ``embeddings``.

    Args:
        embeddings: (B, D) embeddings (used for the collapse indicators and the empty case).
        sq_dist: (B, B) squared distances of ``embeddings`` (with grad).
        triplets: mined triplets.
        margin: alpha.

    Returns:
        (scalar loss, stats).
    """
    mean_pair, spread = _collapse_indicators(embeddings, sq_dist)
    if len(triplets) == 0:
        stats = TripletStats(
            0,
            triplets.num_pairs,
            triplets.pairs_without_negative,
            0.0,
            float("nan"),
            float("nan"),
            mean_pair,
            spread,
        )
        return embeddings.sum() * 0.0, stats
    d_ap = sq_dist[triplets.anchor, triplets.positive]  # (T,)
    d_an = sq_dist[triplets.anchor, triplets.negative]  # (T,)
    per_triplet = hinge_from_distances(d_ap, d_an, margin)
    with torch.no_grad():
        stats = TripletStats(
            num_triplets=len(triplets),
            num_pairs=triplets.num_pairs,
            pairs_without_negative=triplets.pairs_without_negative,
            fraction_active=float((per_triplet > 0).double().mean()),
            mean_ap=float(d_ap.double().mean()),
            mean_an=float(d_an.double().mean()),
            mean_pairwise_distance=mean_pair,
            embedding_spread=spread,
        )
    return per_triplet.mean(), stats
