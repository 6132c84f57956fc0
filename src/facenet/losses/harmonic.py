"""Harmonic embeddings (SPEC §6): triplets that mix a new model's embeddings with an old model's.

A new model (v2) is trained so that its embeddings can be compared with those an old model (v1)
stored, e.g. a gallery enrolled with v1 queried with v2 probes. v1 is frozen: its embeddings of
the batch's faces are fixed vectors. The two sets are joined into one batch of 2B faces, each
face appearing once as v2 and once as v1, with the same labels, and triplets are mined over it
with the paper's semi-hard rule, keeping only **mixed** triplets (members from both models):

- for an anchor-positive pair from two models (a face's v2 embedding and its own or a same
  person's v1 embedding), any semi-hard negative of either model;
- for a pair from one model, a semi-hard negative of the other model.

Triplets of v2 alone are the ordinary triplet term's; triplets of v1 alone are constants.

Mining reads the (2B, 2B) distances once, every anchor-positive pair at a time (at most 2B x K
pairs of 2B negatives each: a few MB at the batch sizes this is trained with), and draws one
uniform number per pair, in anchor-major order, from ``generator`` (as ``facenet.losses.mining``
does), so a brute-force loop can repeat it exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from facenet.losses.distances import pairwise_squared_distances
from facenet.losses.hinge import TripletStats, loss_and_stats
from facenet.losses.mining import Triplets


def mixed_semi_hard(
    sq_dist: Tensor,
    labels: Tensor,
    is_new: Tensor,
    margin: float,
    generator: torch.Generator | None = None,
) -> Triplets:
    """Mixed semi-hard triplets of a joined batch (module docstring).

    Args:
        sq_dist: (M, M) squared distances of the joined batch (only read).
        labels: (M,) identity labels.
        is_new: (M,) bool, True for the new model's rows.
        margin: alpha.
        generator: one uniform draw per anchor-positive pair, anchor-major order.

    Returns:
        Triplets ordered by anchor, then positive; a pair with no mixed semi-hard negative is
        dropped and counted in ``pairs_without_negative``.
    """
    m = sq_dist.shape[0]
    if sq_dist.shape != (m, m) or labels.shape != (m,) or is_new.shape != (m,):
        raise ValueError(
            f"expected (M, M) distances and (M,) labels and is_new, got {tuple(sq_dist.shape)}, "
            f"{tuple(labels.shape)}, {tuple(is_new.shape)}"
        )
    d = sq_dist.detach()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(m, dtype=torch.bool, device=d.device)
    anchor, positive = torch.nonzero(same & ~eye, as_tuple=True)  # anchor-major, then positive
    d_ap = d[anchor, positive]  # (P,)
    d_an = d[anchor]  # (P, M)
    ok = ~same[anchor] & (d_ap[:, None] < d_an) & (d_an < d_ap[:, None] + margin)
    one_model = is_new[anchor] == is_new[positive]  # (P,): the negative must be the other's
    other = is_new[None, :] != is_new[anchor][:, None]  # (P, M)
    ok &= ~one_model[:, None] | other
    count = ok.sum(dim=1)  # (P,)
    u = torch.rand(len(anchor), generator=generator, dtype=torch.float64).to(d.device)
    k = torch.clamp((u * count).floor().long(), max=torch.clamp(count - 1, min=0))
    keep = count > 0
    # the k-th qualifying negative of each kept pair: first column where the running count
    # of qualifying negatives passes k
    running = ok.cumsum(dim=1)  # (P, M)
    negative = torch.argmax((running > k[:, None]).int(), dim=1)
    return Triplets(
        anchor[keep],
        positive[keep],
        negative[keep],
        num_pairs=len(anchor),
        pairs_without_negative=int((~keep).sum()),
    )


def harmonic_triplet_loss(
    new: Tensor,
    old: Tensor,
    labels: Tensor,
    margin: float = 0.2,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, TripletStats]:
    """Mean hinge over the mixed semi-hard triplets of ``new`` (B, D) (with gradients) and the
    frozen ``old`` (B, D) embeddings of the same faces, labelled ``labels`` (B,)."""
    if new.shape != old.shape or new.ndim != 2 or labels.shape != (new.shape[0],):
        raise ValueError(
            f"expected (B, D) new and old embeddings of the same faces and (B,) labels, got "
            f"{tuple(new.shape)}, {tuple(old.shape)}, {tuple(labels.shape)}"
        )
    b = new.shape[0]
    joint = torch.cat([new, old.detach().to(new.dtype)])  # (2B, D)
    joint_labels = torch.cat([labels, labels])
    is_new = torch.arange(2 * b, device=new.device) < b
    sq_dist = pairwise_squared_distances(joint)
    triplets = mixed_semi_hard(sq_dist, joint_labels, is_new, margin, generator)
    return loss_and_stats(joint, sq_dist, triplets, margin)
