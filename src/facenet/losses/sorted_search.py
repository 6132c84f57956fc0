"""The search machinery behind the sort-based mining rules (``facenet.losses.mining``).

Anchors are processed in chunks of rows; for each anchor the distances to its negatives are
sorted once (on CPU only the reachable ones: closer than the row's largest ``d(a, p) + margin``),
and each anchor-positive pair's window of negatives is found by two binary searches. See the
docstring of ``facenet.losses.mining`` for why this stays O(B^2 log B) in time and O(chunk x B)
in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# On CPU, sorting and searching go through numpy (compact sort of the reachable negatives, and no
# torch parallel-region stalls on small inputs); set False to run the pure-torch path used on GPUs
# (the tests do, on CPU).
_NUMPY_ON_CPU = True

# why: 2M elements per chunk keeps every temporary of a chunk (sorted distances, their int64
# order, two int64 search results, masks) around 60 MB, whatever the batch size.
_CHUNK_ELEMENTS = 1 << 21


def check_inputs(sq_dist: Tensor, labels: Tensor | Sequence[int], margin: float) -> Tensor:
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


def chunk_rows(batch: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(batch, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 anchor, got {chunk_size}")
    return chunk_size


def empty_index(device: torch.device) -> Tensor:
    return torch.empty(0, dtype=torch.long, device=device)


def cat_or_empty(parts: list[Tensor], device: torch.device) -> Tensor:
    return torch.cat(parts) if parts else empty_index(device)


def repeat_index(counts: Tensor) -> Tensor:
    """``[0] * counts[0] + [1] * counts[1] + ...`` as an int64 tensor.

    Same as ``torch.repeat_interleave(counts)``, whose CPU kernel opens a parallel region even for
    tiny inputs and stalls for milliseconds on a busy machine, so CPU uses ``numpy.repeat``.
    """
    if counts.device.type == "cpu" and _NUMPY_ON_CPU:
        return torch.from_numpy(
            np.repeat(np.arange(counts.numel(), dtype=np.int64), counts.numpy())
        )
    return torch.repeat_interleave(counts)


def uniform(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """n uniform draws in [0, 1) (float64) from ``generator``, moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, dtype=torch.float64, device=gen_device).to(device)


@dataclass
class Chunk:
    """Per-chunk view used by the sort-based rules (all tensors on the batch's device)."""

    rows: Tensor  # (c,) global anchor indices of the chunk
    pair_row: Tensor  # (m,) chunk-local row of each anchor-positive pair
    pair_pos: Tensor  # (m,) global index of the positive
    negative_at: Callable[[Tensor, Tensor], Tensor]  # (row, k) -> column of k-th closest negative
    n_le_ap: Tensor  # (m,) negatives with d(a, n) <= d(a, p)
    n_lt_ap_margin: Tensor  # (m,) negatives with d(a, n) < d(a, p) + margin


def positive_pairs(labels: Tensor) -> tuple[Tensor, Tensor]:
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
        return empty_index(device), empty_index(device)
    order = torch.sort(labels, stable=True).indices  # members of each label, ascending index
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    group_start = torch.cumsum(counts, 0) - counts  # first slot of each label in `order`
    rank = torch.empty_like(order)
    rank[order] = torch.arange(batch, device=device) - group_start[inverse[order]]
    per_anchor = counts[inverse] - 1  # (B,) positives of each anchor
    anchor = repeat_index(per_anchor)  # anchor of each pair
    first = torch.cumsum(per_anchor, 0) - per_anchor
    j = torch.arange(anchor.numel(), device=device) - first[anchor]  # j-th positive of the anchor
    j = j + (j >= rank[anchor]).long()  # skip the anchor itself within its group
    positive = order[group_start[inverse[anchor]] + j]
    return anchor, positive


def sorted_chunks(
    sq_dist: Tensor, labels: Tensor, margin: float, chunk_size: int | None
) -> Iterator[Chunk]:
    """Yield, chunk by chunk of anchors, each row's negatives sorted and the two search counts."""
    batch = sq_dist.shape[0]
    step = chunk_rows(batch, chunk_size)
    device = sq_dist.device
    pair_anchor, pair_positive = positive_pairs(labels)
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
        compact = compact_search(masked, pair_row, d_ap, threshold)
        if compact is not None:
            n_le_ap, n_lt_ap_margin, negative_at = compact
        else:
            # Dense: every row's negatives sorted; the +inf tail never counts (finite thresholds).
            neg_sorted, neg_order = masked.sort(dim=1, stable=True)  # ties by column
            n_le_ap = row_search(neg_sorted, pair_row, d_ap, right=True)
            n_lt_ap_margin = row_search(neg_sorted, pair_row, threshold, right=False)

            def negative_at(row: Tensor, k: Tensor, order: Tensor = neg_order) -> Tensor:
                return order[row, k]

        yield Chunk(rows, pair_row, pair_pos, negative_at, n_le_ap, n_lt_ap_margin)


def compact_search(
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


def row_search(sorted_rows: Tensor, row: Tensor, values: Tensor, right: bool) -> Tensor:
    """For each i, ``searchsorted(sorted_rows[row[i]], values[i])``, without gathering rows.

    ``row`` is non-decreasing (pairs are anchor-major). On CPU this is one ``numpy.searchsorted``
    per row: torch's CPU ``searchsorted`` opens a parallel region even for tiny inputs, which
    stalls for milliseconds per call on a busy machine. Elsewhere the pairs are packed into a
    padded (c, k_max) matrix for one batched ``torch.searchsorted``.
    """
    c = sorted_rows.shape[0]
    if row.numel() == 0:
        return empty_index(sorted_rows.device)
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


def pick(chunk: Chunk, first: Tensor, count: Tensor, u: Tensor | None) -> tuple[Tensor, ...]:
    """Pick, per pair, the sorted negative at ``first`` (u None) or uniform in [first, first+count)."""
    keep = count > 0
    k = first
    if u is not None:
        k = k + (u * count).floor().long().clamp_max(count - 1).clamp_min(0)
    row, pos, k = chunk.pair_row[keep], chunk.pair_pos[keep], k[keep]
    negative = chunk.negative_at(row, k)
    return chunk.rows[row], pos, negative, int((~keep).sum())
