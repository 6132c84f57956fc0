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

import numpy as np
import torch
from torch import Tensor

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

# On CPU, sorting and searching go through numpy (compact sort of the reachable negatives, and no
# torch parallel-region stalls on small inputs); set False to run the pure-torch path used on GPUs
# (the tests do, on CPU).
_NUMPY_ON_CPU = True

# why: 2M elements per chunk keeps every temporary of a chunk (sorted distances, their int64
# order, two int64 search results, masks) around 60 MB, whatever the batch size.
_CHUNK_ELEMENTS = 1 << 21


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


def _check_inputs(sq_dist: Tensor, labels: Tensor | Sequence[int], margin: float) -> Tensor:
    """Validate shapes and values; return labels as an int64 tensor on ``sq_dist``'s device."""
    if sq_dist.dim() != 2 or sq_dist.shape[0] != sq_dist.shape[1]:
        raise ValueError(
            f"sq_dist must be a square (B, B) matrix, got shape {tuple(sq_dist.shape)}"
        )
    if not sq_dist.is_floating_point():
        raise TypeError(f"sq_dist must be floating point, got {sq_dist.dtype}")
    labels = torch.as_tensor(labels, device=sq_dist.device)
    if labels.dim() != 1 or labels.numel() != sq_dist.shape[0]:
        raise ValueError(
            f"labels must have shape ({sq_dist.shape[0]},) to match sq_dist, got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    if not (margin >= 0.0 and margin < float("inf")):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    if sq_dist.numel():
        low, high = torch.aminmax(sq_dist.detach())  # one pass; NaN propagates into both
        if not bool(high < float("inf")) or not bool(low == low):
            raise ValueError("sq_dist contains NaN or infinite values (diverged embeddings?)")
        if not bool(low >= 0):
            raise ValueError("sq_dist contains negative values; squared distances must be >= 0")
    return labels.long()


def _chunk_rows(batch: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(batch, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 anchor, got {chunk_size}")
    return chunk_size


def _empty(device: torch.device) -> Tensor:
    return torch.empty(0, dtype=torch.long, device=device)


def _cat(parts: list[Tensor], device: torch.device) -> Tensor:
    return torch.cat(parts) if parts else _empty(device)


def _repeat_index(counts: Tensor) -> Tensor:
    """``[0] * counts[0] + [1] * counts[1] + ...`` as an int64 tensor.

    Same as ``torch.repeat_interleave(counts)``, whose CPU kernel opens a parallel region even for
    tiny inputs and stalls for milliseconds on a busy machine, so CPU uses ``numpy.repeat``.
    """
    if counts.device.type == "cpu" and _NUMPY_ON_CPU:
        return torch.from_numpy(
            np.repeat(np.arange(counts.numel(), dtype=np.int64), counts.numpy())
        )
    return torch.repeat_interleave(counts)


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """n uniform draws in [0, 1) (float64) from ``generator``, moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, dtype=torch.float64, device=gen_device).to(device)


@dataclass
class _Chunk:
    """Per-chunk view used by the sort-based rules (all tensors on the batch's device)."""

    rows: Tensor  # (c,) global anchor indices of the chunk
    pair_row: Tensor  # (m,) chunk-local row of each anchor-positive pair
    pair_pos: Tensor  # (m,) global index of the positive
    negative_at: Callable[[Tensor, Tensor], Tensor]  # (row, k) -> column of k-th closest negative
    n_le_ap: Tensor  # (m,) negatives with d(a, n) <= d(a, p)
    n_lt_ap_margin: Tensor  # (m,) negatives with d(a, n) < d(a, p) + margin


def _positive_pairs(labels: Tensor) -> tuple[Tensor, Tensor]:
    """All ordered anchor-positive pairs (a != p, same label), anchor-major, positives ascending.

    Built from the label groups in O(B log B + pairs), without a (B, B) mask.

    Args:
        labels: (B,) int64 labels.

    Returns:
        (anchor (m,), positive (m,)) int64 index tensors.
    """
    device = labels.device
    batch = labels.numel()
    if batch == 0:
        return _empty(device), _empty(device)
    order = torch.sort(labels, stable=True).indices  # members of each label, ascending index
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    group_start = torch.cumsum(counts, 0) - counts  # first slot of each label in `order`
    rank = torch.empty_like(order)
    rank[order] = torch.arange(batch, device=device) - group_start[inverse[order]]
    per_anchor = counts[inverse] - 1  # (B,) positives of each anchor
    anchor = _repeat_index(per_anchor)  # anchor of each pair
    first = torch.cumsum(per_anchor, 0) - per_anchor
    j = torch.arange(anchor.numel(), device=device) - first[anchor]  # j-th positive of the anchor
    j = j + (j >= rank[anchor]).long()  # skip the anchor itself within its group
    positive = order[group_start[inverse[anchor]] + j]
    return anchor, positive


def _sorted_chunks(
    sq_dist: Tensor, labels: Tensor, margin: float, chunk_size: int | None
) -> Iterator[_Chunk]:
    """Yield, chunk by chunk of anchors, each row's negatives sorted and the two search counts."""
    batch = sq_dist.shape[0]
    step = _chunk_rows(batch, chunk_size)
    device = sq_dist.device
    pair_anchor, pair_positive = _positive_pairs(labels)
    pairs_before = torch.cumsum(torch.bincount(pair_anchor, minlength=batch), 0).tolist()
    bounds = [0] + [pairs_before[min(s + step, batch) - 1] for s in range(0, batch, step)]
    for i, start in enumerate(range(0, batch, step)):
        rows = torch.arange(start, min(start + step, batch), device=device)  # (c,)
        dist = sq_dist[start : start + step]  # (c, B)
        same = labels[rows, None] == labels[None, :]  # (c, B), includes the anchor itself
        # Same-label entries become +inf, so only negatives are ever counted or picked.
        masked = dist.masked_fill(same, float("inf"))
        pair_row = pair_anchor[bounds[i] : bounds[i + 1]] - start  # (m,) chunk-local rows
        pair_pos = pair_positive[bounds[i] : bounds[i + 1]]
        d_ap = dist[pair_row, pair_pos]  # (m,)
        threshold = d_ap + margin  # (m,) d(a, p) + margin, in the distances' dtype
        compact = _compact_search(masked, pair_row, d_ap, threshold)
        if compact is not None:
            n_le_ap, n_lt_ap_margin, negative_at = compact
        else:
            # Dense: every row's negatives sorted; the +inf tail never counts (finite thresholds).
            neg_sorted, neg_order = masked.sort(dim=1, stable=True)  # ties by column
            n_le_ap = _row_search(neg_sorted, pair_row, d_ap, right=True)
            n_lt_ap_margin = _row_search(neg_sorted, pair_row, threshold, right=False)

            def negative_at(row: Tensor, k: Tensor, order: Tensor = neg_order) -> Tensor:
                return order[row, k]

        yield _Chunk(rows, pair_row, pair_pos, negative_at, n_le_ap, n_lt_ap_margin)


def _compact_search(
    masked: Tensor, pair_row: Tensor, d_ap: Tensor, threshold: Tensor
) -> tuple[Tensor, Tensor, Callable[[Tensor, Tensor], Tensor]] | None:
    """CPU float32 fast path: sort only the negatives that some window of their row can reach.

    Every rule served here looks only at negatives with ``d(a, n) < d(a, p) + margin``, so a
    row's negatives at or beyond its largest threshold are irrelevant; mid-training that is most
    of them (about 94% in the benchmark's B = 1,800 batch). The remaining candidates of all rows
    are sorted at once as int64 keys ``(row, value bits, column)``, giving per-row segments
    in the same order as the dense stable sort (ties by column).

    Args:
        masked: (c, B) distances, +inf where the column is not a negative of the row.
        pair_row: (m,) non-decreasing chunk-local row of each anchor-positive pair.
        d_ap: (m,) d(a, p).
        threshold: (m,) d(a, p) + margin.

    Returns:
        (negatives <= d_ap, negatives < threshold, negative_at), or None when this path does not
        apply (not CPU float32, numpy disabled, or keys would not fit in 63 bits).
    """
    c, batch = masked.shape
    col_bits = max(1, (batch - 1).bit_length())
    if not (
        _NUMPY_ON_CPU
        and masked.device.type == "cpu"
        and masked.dtype == torch.float32
        and max(1, (c - 1).bit_length()) + 31 + col_bits <= 63
    ):
        return None
    rows_np, d_ap_np, thr_np = pair_row.numpy(), d_ap.numpy(), threshold.numpy()
    pair_bounds = np.searchsorted(rows_np, np.arange(c + 1), side="left")  # pairs of each row
    row_max = np.full(c, -np.inf, dtype=np.float32)
    has_pairs = np.flatnonzero(pair_bounds[1:] > pair_bounds[:-1])
    if has_pairs.size:
        row_max[has_pairs] = np.maximum.reduceat(thr_np, pair_bounds[has_pairs])
    masked_np = masked.numpy()
    flat = np.flatnonzero(masked_np < row_max[:, None])  # candidates, row-major
    bits = masked_np.reshape(-1).view(np.int32)[flat].astype(np.int64)
    np.maximum(bits, 0, out=bits)  # -0.0 (the only negative bit pattern) -> +0.0
    row, col = np.divmod(flat, batch)
    keys = (row << (31 + col_bits)) | (bits << col_bits) | col
    keys.sort()
    starts = np.searchsorted(row, np.arange(c + 1), side="left")  # `row` is already sorted
    values = ((keys >> col_bits) & 0x7FFFFFFF).astype(np.int32).view(np.float32)
    n_le = np.zeros(len(rows_np), dtype=np.int64)
    n_lt = np.zeros(len(rows_np), dtype=np.int64)
    for r in has_pairs:
        segment = values[starts[r] : starts[r + 1]]
        lo, hi = pair_bounds[r], pair_bounds[r + 1]
        n_le[lo:hi] = np.searchsorted(segment, d_ap_np[lo:hi], side="right")
        n_lt[lo:hi] = np.searchsorted(segment, thr_np[lo:hi], side="left")
    keys_t, starts_t = torch.from_numpy(keys), torch.from_numpy(starts)
    col_mask = (1 << col_bits) - 1

    def negative_at(row_idx: Tensor, k: Tensor) -> Tensor:
        return keys_t[starts_t[row_idx] + k].bitwise_and(col_mask)

    return torch.from_numpy(n_le), torch.from_numpy(n_lt), negative_at


def _row_search(sorted_rows: Tensor, row: Tensor, values: Tensor, right: bool) -> Tensor:
    """For each i, ``searchsorted(sorted_rows[row[i]], values[i])``, without gathering rows.

    ``row`` is non-decreasing (pairs are anchor-major). On CPU this is one ``numpy.searchsorted``
    per row: torch's CPU ``searchsorted`` opens a parallel region even for tiny inputs, which
    stalls for milliseconds per call on a busy machine. Elsewhere the pairs are packed into a
    padded (c, k_max) matrix for one batched ``torch.searchsorted``.
    """
    c = sorted_rows.shape[0]
    if row.numel() == 0:
        return _empty(sorted_rows.device)
    side = "right" if right else "left"
    if sorted_rows.device.type == "cpu" and _NUMPY_ON_CPU:
        rows_np, values_np, sorted_np = row.numpy(), values.numpy(), sorted_rows.numpy()
        bounds = np.searchsorted(rows_np, np.arange(c + 1), side="left")
        out = np.empty(len(rows_np), dtype=np.int64)
        for r in range(c):
            lo, hi = bounds[r], bounds[r + 1]
            if hi > lo:
                out[lo:hi] = np.searchsorted(sorted_np[r], values_np[lo:hi], side=side)
        return torch.from_numpy(out)
    counts = torch.bincount(row, minlength=c)  # pairs per row
    k_max = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    col = torch.arange(row.numel(), device=row.device) - starts[row]  # position within its row
    padded = torch.full((c, k_max), float("inf"), dtype=values.dtype, device=values.device)
    padded[row, col] = values
    found = torch.searchsorted(sorted_rows, padded, right=right)  # (c, k_max)
    return found[row, col]


def _pick(chunk: _Chunk, first: Tensor, count: Tensor, u: Tensor | None) -> tuple[Tensor, ...]:
    """Pick, per pair, the sorted negative at ``first`` (u None) or uniform in [first, first+count)."""
    keep = count > 0
    k = first
    if u is not None:
        k = k + (u * count).floor().long().clamp_max(count - 1).clamp_min(0)
    row, pos, k = chunk.pair_row[keep], chunk.pair_pos[keep], k[keep]
    negative = chunk.negative_at(row, k)
    return chunk.rows[row], pos, negative, int((~keep).sum())


def _run_sorted_rule(
    sq_dist: Tensor,
    labels: Tensor | Sequence[int],
    margin: float,
    generator: torch.Generator | None,
    chunk_size: int | None,
    window: Callable[[_Chunk], tuple[Tensor, Tensor]],
    random: bool,
) -> Triplets:
    """Shared loop of the rules that pick one negative per pair from a window of sorted negatives."""
    labels = _check_inputs(sq_dist, labels, margin)
    device = sq_dist.device
    anchors, positives, negatives = [], [], []
    num_pairs = dropped = 0
    with torch.no_grad():
        for chunk in _sorted_chunks(sq_dist.detach(), labels, margin, chunk_size):
            first, count = window(chunk)
            u = _uniform(first.numel(), generator, device) if random else None
            a, p, n, missing = _pick(chunk, first, count, u)
            anchors.append(a)
            positives.append(p)
            negatives.append(n)
            num_pairs += int(chunk.pair_row.numel())
            dropped += missing
    return Triplets(
        _cat(anchors, device), _cat(positives, device), _cat(negatives, device), num_pairs, dropped
    )


def _semi_hard_window(c: _Chunk) -> tuple[Tensor, Tensor]:
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

    def window(c: _Chunk) -> tuple[Tensor, Tensor]:
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
    labels = _check_inputs(sq_dist, labels, margin)
    device = sq_dist.device
    batch = sq_dist.shape[0]
    step = _chunk_rows(batch, chunk_size)
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
        anchor, positive = _positive_pairs(labels)
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
    labels = _check_inputs(sq_dist, labels, margin)
    device = sq_dist.device
    batch = sq_dist.shape[0]
    step = _chunk_rows(batch, chunk_size)
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
        _cat(anchors, device), _cat(positives, device), _cat(negatives, device), num_pairs, dropped
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
    labels = _check_inputs(sq_dist, labels, margin)
    device = sq_dist.device
    anchors, positives, negatives = [], [], []
    num_pairs = dropped = 0
    with torch.no_grad():
        for chunk in _sorted_chunks(sq_dist.detach(), labels, margin, chunk_size):
            count = chunk.n_lt_ap_margin  # (m,) violating negatives = the first `count` sorted
            pair = _repeat_index(count)  # pair of each triplet
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
        _cat(anchors, device), _cat(positives, device), _cat(negatives, device), num_pairs, dropped
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
