"""Sharpness-aware minimisation (SAM; Foret et al., ICLR 2021) for the training loop.

SAM takes each step with the gradient of the loss at ``w + e``, where ``e = rho * g / ||g||``
moves the weights uphill along their own gradient ``g``: it prefers minima whose whole
``rho``-neighbourhood has a low loss, which generalise better when a model can memorise its
training set (here ~12k faces seen ~200 times each). It costs a second forward and backward pass
per step; ``optimiser.sam_start_step`` confines it to the end of training, where it gives most of
its gain (Zhou et al., "Sharpness-Aware Minimization Efficiently Selects Flatter Minima Late in
Training", ICLR 2025).

The loop uses the two halves directly (``ascend`` after the first backward pass, ``restore``
after the second) rather than an optimiser wrapper, so that gradient clipping, the fp16
``GradScaler``, DDP's gradient all-reduce and checkpointed optimiser states work as without SAM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn


@torch.no_grad()
def ascend(params: Iterable[torch.Tensor], rho: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Move ``params`` by ``rho`` along their normalised gradient, in place.

    The step is ``rho * g / ||g||`` with ``||g||`` the global L2 norm over all ``params``, so the
    weights move exactly ``rho`` and any uniform gradient scale (e.g. a ``GradScaler``'s) cancels.

    Returns:
        ``(param, step)`` pairs for ``restore``; empty when the gradient is zero or not finite
        (an fp16 overflow), in which case nothing moved and the step is a plain one.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return []
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params])
    )
    if not torch.isfinite(norm) or norm == 0:
        return []
    moved = []
    for p in params:
        e = (p.grad.float() * (rho / norm)).to(p.dtype)
        p.add_(e)
        moved.append((p, e))
    return moved


@torch.no_grad()
def restore(moved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Undo ``ascend``: put the weights back where the first forward pass saw them."""
    for p, e in moved:
        p.sub_(e)


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise by the batch as usual but leave their running statistics alone.

    The second (perturbed) forward pass of a SAM step sees the same images as the first one; its
    batch statistics must not be counted twice in the running averages that inference uses.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            count = m.num_batches_tracked
            saved.append((m, m.momentum, None if count is None else count.clone()))
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            if count is not None:  # why: momentum=None layers average over this count
                m.num_batches_tracked.copy_(count)
