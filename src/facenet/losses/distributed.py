"""Mining over the global batch of several processes (``torch.distributed``).

The paper's batches are ~1,800 faces (SPEC §3); split over W devices, each holds only B / W of
them, and mining within each shard alone would see W times fewer negatives per anchor. Here every
rank gathers all embeddings and labels, mines the *global* batch (identically on every rank, given
an identically seeded generator) and computes the global loss.

Gradient convention: :func:`gather_with_grad` is the adjoint of ``all_gather``: in backward the
gradient of the gathered tensor is summed over ranks and each rank keeps the rows of its own
shard. When every rank computes the same global loss, each rank's local embeddings thus receive
``W x dL/dx_local``, and DistributedDataParallel's gradient *averaging* turns that into exactly the
single-process gradient of the global batch. So: wrap the model in DDP, call
``triplet_loss(emb, labels, distributed=True).loss.backward()``, and the parameter gradients equal
those of one process training on the whole global batch (tested with 2 gloo processes). Without
DDP, average (not sum) gradients over ranks to get the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from facenet.losses.distances import pairwise_squared_distances
from facenet.losses.hinge import DEFAULT_MARGIN, TripletLossOutput, loss_and_stats
from facenet.losses.mining import Rule, mine_triplets


def _world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _gather_sizes(n: int, device: torch.device, group: dist.ProcessGroup | None) -> list[int]:
    world, _ = _world(group)
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(sizes, local, group=group)
    return [int(s) for s in sizes]


def _all_gather_padded(x: Tensor, sizes: list[int], group: dist.ProcessGroup | None) -> Tensor:
    """all_gather of shards with possibly different first dimensions (padded to the largest)."""
    world, _ = _world(group)
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward = sum of the gathered gradient over ranks, local rows kept."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int], group: dist.ProcessGroup | None) -> Tensor:  # type: ignore[override]
        _, rank = _world(group)
        ctx.group = group
        ctx.start = sum(sizes[:rank])
        ctx.size = sizes[rank]
        return _all_gather_padded(x, sizes, group)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.start : ctx.start + ctx.size], None, None


def gather_with_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Concatenate every rank's ``x`` (in rank order); gradients flow back into the local part.

    Shards may differ in their first dimension. Without an initialised process group this returns
    ``x`` itself.

    Args:
        x: (n_r, ...) this rank's shard.
        group: process group (default: the global group).

    Returns:
        (sum_r n_r, ...) the global tensor; rows ``[sum_{s<r} n_s, sum_{s<=r} n_s)`` are this rank's.
        Backward sums the incoming gradient over ranks (see the module docstring for why).
    """
    world, _ = _world(group)
    if world == 1:
        return x
    sizes = _gather_sizes(x.shape[0], x.device, group)
    return _GatherWithGrad.apply(x, sizes, group)


def gather_labels(labels: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Concatenate every rank's labels in rank order (no gradient); shards may differ in length.

    Args:
        labels: (n_r,) this rank's integer labels.
        group: process group (default: the global group).

    Returns:
        (sum_r n_r,) global labels, aligned with :func:`gather_with_grad`'s rows.
    """
    return gather_no_grad(labels, group)


def gather_no_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Concatenate every rank's ``x`` in rank order, without a gradient (labels, fixed targets).

    Args:
        x: (n_r, ...) this rank's shard; shards may differ in their first dimension.
        group: process group (default: the global group).

    Returns:
        (sum_r n_r, ...) the global tensor, aligned with :func:`gather_with_grad`'s rows.
    """
    world, _ = _world(group)
    if world == 1:
        return x
    sizes = _gather_sizes(x.shape[0], x.device, group)
    return _all_gather_padded(x.detach(), sizes, group)


def shared_generator(
    device: torch.device | str = "cpu", group: dist.ProcessGroup | None = None
) -> torch.Generator:
    """A generator seeded identically on every rank (rank 0 draws the seed and broadcasts it).

    Args:
        device: device of the generator (and of the broadcast tensor; CUDA for NCCL).
        group: process group (default: the global group).

    Returns:
        ``torch.Generator`` with the same seed on all ranks.
    """
    seed = torch.randint(0, 2**62, (1,), dtype=torch.long).to(device)
    world, _ = _world(group)
    if world > 1:
        src = dist.get_global_rank(group, 0) if group is not None else 0
        dist.broadcast(seed, src=src, group=group)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def distributed_triplet_loss(
    embeddings: Tensor,
    labels: Tensor | Sequence[int],
    rule: Rule | str = "semi_hard",
    margin: float = DEFAULT_MARGIN,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    group: dist.ProcessGroup | None = None,
) -> TripletLossOutput:
    """Triplet loss mined over the global batch of all ranks.

    Every rank gathers all embeddings (with gradient into its own shard) and labels, mines the
    global batch and returns the *global* loss and statistics (identical on every rank). Triplet
    indices refer to the global batch (rank order). Without an initialised process group it is
    the single-process triplet loss of ``facenet.losses.triplet_loss``.

    Args:
        embeddings: (n_r, D) this rank's embeddings.
        labels: (n_r,) this rank's labels.
        rule: mining rule (``facenet.losses.RULES``).
        margin: alpha (SPEC §2: 0.2).
        generator: must be seeded identically on every rank so that random choices agree; ``None``
            uses :func:`shared_generator`.
        chunk_size: anchors per mining chunk.
        group: process group (default: the global group).

    Returns:
        ``TripletLossOutput`` of the global batch.
    """
    labels = torch.as_tensor(labels, device=embeddings.device).long()
    world, _ = _world(group)
    if generator is None and world > 1:
        generator = shared_generator(embeddings.device, group)
    all_embeddings = gather_with_grad(embeddings, group)  # (B, D)
    all_labels = gather_labels(labels, group)  # (B,)
    sq_dist = pairwise_squared_distances(all_embeddings)  # (B, B)
    triplets = mine_triplets(sq_dist, all_labels, rule, margin, generator, chunk_size)
    loss, stats = loss_and_stats(all_embeddings, sq_dist, triplets, margin)
    return TripletLossOutput(loss, stats, triplets)
