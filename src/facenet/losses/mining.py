"""Online triplet mining: which (anchor, positive, negative) triplets of a batch to train on.

Every rule is a named function with the same signature,
``rule(sq_dist (B, B), labels (B,), margin, generator, chunk_size) -> Triplets``, and
:func:`mine_triplets` dispatches on the rule's name. Notation: ``d(a, p)`` is the squared L2
distance between embeddings (SPEC §1), a *positive* of anchor ``a`` is another sample with the same
label, a *negative* one with a different label. Comparisons are written exactly as in the code,
``d(a, n) < d(a, p) + margin``, so the tests' brute-force oracles can repeat them bit for bit.

How it stays fast and memory-light at the paper's batch size (B = 1,800, and B = 7,200):
anchors are processed in chunks of rows; for each anchor the distances to its negatives are
sorted once, and then every rule that looks at negatives "between two distances" becomes a pair
of binary searches per anchor-positive pair. The semi-hard negatives of pair (a, p) are exactly the
contiguous run of sorted negatives with ``d(a, p) < d(a, n) < d(a, p) + margin``; a random one is
an index drawn uniformly inside that run. Only negatives closer than the row's largest
``d(a, p) + margin`` can ever be chosen, so on CPU only those are sorted (mid-training, a small
fraction). Work is at most O(B^2 log B), memory O(chunk x B); nothing of size B x B x B is ever
built (enumerating all triplets is what makes other implementations run out of memory at
B = 1,800).

Ties are broken towards the lowest batch index (stable sort, first argmin/argmax), and randomness
comes only from ``generator``: exactly one uniform draw per anchor-positive pair, in anchor-major
order, so the result does not depend on ``chunk_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from facenet.losses.sorted_search import (
    Chunk,
    cat_or_empty,
    check_inputs,
    chunk_rows,
    pick,
    positive_pairs,
    repeat_index,
    sorted_chunks,
    uniform,
)

Rule = Literal[
    "semi_hard",
    "semi_hard_hardest",
    "batch_hard",
    "batch_all",
    "hardest_negative",
    "random_violating",
]

#: Every rule name accepted by :func:`mine_triplets`, the paper's rule first.
RULES: tuple[str, ...] = (
    "semi_hard",
    "semi_hard_hardest",
    "batch_hard",
    "batch_all",
    "hardest_negative",
    "random_violating",
)


@dataclass(frozen=True)
class Triplets:
    """Mined triplets as three aligned index tensors into the batch.

    Unpacks like a tuple: ``anchor, positive, negative = triplets``; ``len(triplets)`` is the number
    of triplets.

    Attributes:
        anchor: (T,) int64 batch indices of anchors.
        positive: (T,) int64 batch indices of positives (same label as the anchor, not the anchor).
        negative: (T,) int64 batch indices of negatives (different label).
        num_pairs: anchor-positive pairs the rule considered (``batch_hard``: anchors that have a
            positive).
        pairs_without_negative: of those, how many produced no triplet because no negative
            satisfied the rule (for ``semi_hard``: pairs with no semi-hard negative — they are
            dropped, not filled with another kind of negative).
    """

    anchor: Tensor
    positive: Tensor
    negative: Tensor
    num_pairs: int = 0
    pairs_without_negative: int = 0

    def __len__(self) -> int:
        return int(self.anchor.numel())

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.anchor, self.positive, self.negative))

    def to(self, device: torch.device | str) -> Triplets:
        """The same triplets with index tensors on ``device``."""
        return Triplets(
            self.anchor.to(device),
            self.positive.to(device),
            self.negative.to(device),
            self.num_pairs,
            self.pairs_without_negative,
        )


def _run_sorted_rule(
    sq_dist: Tensor,
    labels: Tensor | Sequence[int],
    margin: float,
    generator: torch.Generator | None,
    chunk_size: int | None,
    window: Callable[[Chunk], tuple[Tensor, Tensor]],
    random: bool,
) -> Triplets:
    """Shared loop of the rules that pick one negative per pair from a window of sorted negatives."""
    labels = check_inputs(sq_dist, labels, margin)
    device = sq_dist.device
    anchors, positives, negatives = [], [], []
    num_pairs = dropped = 0
    with torch.no_grad():
        for chunk in sorted_chunks(sq_dist.detach(), labels, margin, chunk_size):
            first, count = window(chunk)
            u = uniform(first.numel(), generator, device) if random else None
            a, p, n, missing = pick(chunk, first, count, u)
            anchors.append(a)
            positives.append(p)
            negatives.append(n)
            num_pairs += int(chunk.pair_row.numel())
            dropped += missing
    return Triplets(
        cat_or_empty(anchors, device),
        cat_or_empty(positives, device),
        cat_or_empty(negatives, device),
        num_pairs,
        dropped,
    )


def _semi_hard_window(c: Chunk) -> tuple[Tensor, Tensor]:
    """(start, count) of each pair's semi-hard negatives in its anchor's sorted negatives:
    those with d(a, p) < d(a, n) < d(a, p) + margin."""
    return c.n_le_ap, (c.n_lt_ap_margin - c.n_le_ap).clamp_min(0)


def semi_hard(
    sq_dist: Tensor,
    labels: Tensor | Sequence[int],
    margin: float = 0.2,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Triplets:
    """The paper's rule (SPEC §3): every anchor-positive pair, one random semi-hard negative.

    For each ordered pair (a, p) with ``labels[a] == labels[p]``, ``a != p``, the negative is drawn
    uniformly among those with ``d(a, p) < d(a, n) < d(a, p) + margin`` — farther than the positive
    but still inside the margin. A pair with no such negative is **dropped** (it yields no triplet;
    it is counted in ``Triplets.pairs_without_negative``), rather than being given an easy or a
    hard negative: easy ones have zero loss, and hard ones are what the paper warns leads to a
    collapsed model. With ``margin = 0`` no negative can qualify.

    Args:
        sq_dist: (B, B) squared distances, e.g. from ``pairwise_squared_distances``.
        labels: (B,) integer identity labels.
        margin: alpha of the triplet loss (SPEC §2; the paper uses 0.2).
        generator: source of randomness (one draw per anchor-positive pair); ``None`` uses torch's
            global generator.
        chunk_size: anchors per chunk (default: about 2M distances per chunk).

    Returns:
        Triplets ordered by anchor, then positive; each pair at most once.
    """

    return _run_sorted_rule(
        sq_dist, labels, margin, generator, chunk_size, _semi_hard_window, random=True
    )


def semi_hard_hardest(
    sq_dist: Tensor,
    labels: Tensor | Sequence[int],
    margin: float = 0.2,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Triplets:
    """Like :func:`semi_hard`, but the *closest* semi-hard negative instead of a random one.

    For each anchor-positive pair: the negative with the smallest ``d(a, n)`` among those with
    ``d(a, p) < d(a, n) < d(a, p) + margin`` (lowest batch index on ties); pairs with none are
    dropped and counted. ``generator`` is accepted for a uniform signature and unused.

    Args:
        sq_dist: (B, B) squared distances.
        labels: (B,) integer identity labels.
        margin: alpha of the triplet loss.
        generator: unused.
        chunk_size: anchors per chunk.

    Returns:
        Triplets ordered by anchor, then positive.
    """

    return _run_sorted_rule(
        sq_dist, labels, margin, None, chunk_size, _semi_hard_window, random=False
    )


def random_violating(
    sq_dist: Tensor,
    labels: Tensor | Sequence[int],
    margin: float = 0.2,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Triplets:
    """The rule the best-known TensorFlow FaceNet port actually runs (kept for comparison).

    For each anchor-positive pair, one negative drawn uniformly among all that violate the margin,
    ``d(a, n) < d(a, p) + margin`` — this includes *hard* negatives closer than the positive, which
    the paper's semi-hard rule excludes. Pairs with none are dropped and counted.

    Args:
        sq_dist: (B, B) squared distances.
        labels: (B,) integer identity labels.
        margin: alpha of the triplet loss.
        generator: source of randomness (one draw per anchor-positive pair).
        chunk_size: anchors per chunk.

    Returns:
        Triplets ordered by anchor, then positive.
    """

    def window(c: Chunk) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(c.n_lt_ap_margin), c.n_lt_ap_margin

    return _run_sorted_rule(sq_dist, labels, margin, generator, chunk_size, window, random=True)


def hardest_negative(
    sq_dist: Tensor,
    labels: Tensor | Sequence[int],
    margin: float = 0.2,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Triplets:
    """Every anchor-positive pair with the anchor's hardest (closest) negative.

    One triplet per pair whenever the anchor has any negative, whether or not it violates the
    margin (those beyond the margin simply add zero loss). Lowest batch index on ties. The paper
    reports that hardest negatives early in training lead to a collapsed model; kept as a
    baseline. ``margin`` and ``generator`` are accepted for a uniform signature and unused.

    Args:
        sq_dist: (B, B) squared distances.
        labels: (B,) integer identity labels.
        margin: unused (validated only).
        generator: unused.
        chunk_size: anchors per chunk.

    Returns:
        Triplets ordered by anchor, then positive.
    """
    labels = check_inputs(sq_dist, labels, margin)
    device = sq_dist.device
    batch = sq_dist.shape[0]
    step = chunk_rows(batch, chunk_size)
    hardest = torch.empty(batch, dtype=torch.long, device=device)  # (B,) closest negative
    has_neg = torch.empty(batch, dtype=torch.bool, device=device)
    with torch.no_grad():
        dist_all = sq_dist.detach()
        for start in range(0, batch, step):
            rows = torch.arange(start, min(start + step, batch), device=device)
            same = labels[rows, None] == labels[None, :]  # (c, B)
            masked = dist_all[start : start + step].masked_fill(same, float("inf"))
            hardest[rows] = masked.argmin(dim=1)  # first index on ties
            has_neg[rows] = (~same).any(dim=1)
        anchor, positive = positive_pairs(labels)
        keep = has_neg[anchor]
    return Triplets(
        anchor[keep], positive[keep], hardest[anchor[keep]], int(anchor.numel()), int((~keep).sum())
    )


def batch_hard(
    sq_dist: Tensor,
    labels: Tensor | Sequence[int],
    margin: float = 0.2,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Triplets:
    """One triplet per anchor: its hardest positive and its hardest negative (Hermans et al. 2017).

    Hardest positive = the same-label sample with the largest ``d(a, p)``, hardest negative = the
    different-label sample with the smallest ``d(a, n)`` (lowest batch index on ties). Anchors
    with no positive are skipped (not counted); anchors with a positive but no negative are counted
    in ``pairs_without_negative``. ``margin`` and ``generator`` are unused.

    Args:
        sq_dist: (B, B) squared distances.
        labels: (B,) integer identity labels.
        margin: unused (validated only).
        generator: unused.
        chunk_size: anchors per chunk.

    Returns:
        Triplets ordered by anchor; ``num_pairs`` counts anchors that have a positive.
    """
    labels = check_inputs(sq_dist, labels, margin)
    device = sq_dist.device
    batch = sq_dist.shape[0]
    step = chunk_rows(batch, chunk_size)
    anchors, positives, negatives = [], [], []
    num_pairs = dropped = 0
    with torch.no_grad():
        dist_all = sq_dist.detach()
        for start in range(0, batch, step):
            rows = torch.arange(start, min(start + step, batch), device=device)
            local = torch.arange(rows.numel(), device=device)
            dist = dist_all[start : start + step]
            same = labels[rows, None] == labels[None, :]
            positive = same.clone()
            positive[local, rows] = False
            has_pos = positive.any(dim=1)
            has_neg = (~same).any(dim=1)
            hardest_pos = dist.masked_fill(~positive, float("-inf")).argmax(dim=1)
            hardest_neg = dist.masked_fill(same, float("inf")).argmin(dim=1)
            keep = has_pos & has_neg
            num_pairs += int(has_pos.sum())
            dropped += int((has_pos & ~has_neg).sum())
            anchors.append(rows[keep])
            positives.append(hardest_pos[keep])
            negatives.append(hardest_neg[keep])
    return Triplets(
        cat_or_empty(anchors, device),
        cat_or_empty(positives, device),
        cat_or_empty(negatives, device),
        num_pairs,
        dropped,
    )


def batch_all(
    sq_dist: Tensor,
    labels: Tensor | Sequence[int],
    margin: float = 0.2,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Triplets:
    """Every valid triplet with positive loss: ``d(a, n) < d(a, p) + margin``.

    The output grows like B x K x B (about 10^8 triplets for a paper-size batch early in training),
    so this rule is for small batches or late training; intermediates stay chunked, but the
    returned index tensors cannot be. ``generator`` is unused.

    Args:
        sq_dist: (B, B) squared distances.
        labels: (B,) integer identity labels.
        margin: alpha of the triplet loss.
        generator: unused.
        chunk_size: anchors per chunk.

    Returns:
        Triplets ordered by anchor, positive, then ascending ``d(a, n)``; ``pairs_without_negative``
        counts pairs whose every negative already satisfies the margin.
    """
    labels = check_inputs(sq_dist, labels, margin)
    device = sq_dist.device
    anchors, positives, negatives = [], [], []
    num_pairs = dropped = 0
    with torch.no_grad():
        for chunk in sorted_chunks(sq_dist.detach(), labels, margin, chunk_size):
            count = chunk.n_lt_ap_margin  # (m,) violating negatives = the first `count` sorted
            pair = repeat_index(count)  # pair of each triplet
            offset = (
                torch.arange(pair.numel(), device=device) - (torch.cumsum(count, 0) - count)[pair]
            )
            row = chunk.pair_row[pair]
            anchors.append(chunk.rows[row])
            positives.append(chunk.pair_pos[pair])
            negatives.append(chunk.negative_at(row, offset))
            num_pairs += int(count.numel())
            dropped += int((count == 0).sum())
    return Triplets(
        cat_or_empty(anchors, device),
        cat_or_empty(positives, device),
        cat_or_empty(negatives, device),
        num_pairs,
        dropped,
    )


_RULE_FUNCTIONS: dict[str, Callable[..., Triplets]] = {
    "semi_hard": semi_hard,
    "semi_hard_hardest": semi_hard_hardest,
    "batch_hard": batch_hard,
    "batch_all": batch_all,
    "hardest_negative": hardest_negative,
    "random_violating": random_violating,
}


def get_rule(rule: str) -> Callable[..., Triplets]:
    """The mining function called ``rule``; raises ``ValueError`` listing the valid names."""
    try:
        return _RULE_FUNCTIONS[rule]
    except KeyError:
        raise ValueError(f"unknown mining rule {rule!r}; valid rules: {', '.join(RULES)}") from None


def mine_triplets(
    sq_dist: Tensor,
    labels: Tensor | Sequence[int],
    rule: Rule | str = "semi_hard",
    margin: float = 0.2,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Triplets:
    """Mine triplets from a batch with the named rule (see :data:`RULES`).

    Args:
        sq_dist: (B, B) squared distances (only read; no gradient flows through mining).
        labels: (B,) integer identity labels.
        rule: one of :data:`RULES`; ``"semi_hard"`` is the paper's.
        margin: alpha of the triplet loss (SPEC §2: 0.2).
        generator: randomness for the random rules (one draw per anchor-positive pair).
        chunk_size: anchors per chunk (default: about 2M distances per chunk).

    Returns:
        The mined :class:`Triplets`.

    Raises:
        ValueError: unknown rule (the message lists the valid ones), bad shapes, negative margin,
            or non-finite distances.
    """
    return get_rule(rule)(sq_dist, labels, margin, generator, chunk_size)
