"""Exponential moving average (EMA) of the weights, the model that is validated and shipped.

After every optimiser step the averaged copy moves ``1 - d`` of the way towards the trained
weights, ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates: the warm-up (timm's and
YOLO's) keeps the random initialisation from dominating the average early on. BatchNorm running
statistics are averaged the same way; integer buffers (``num_batches_tracked``) are copied.
Averaging the last few hundred steps' weights smooths the noise of small-batch triplet steps and
is a cheap, standard regulariser for runs that memorise their training set.

Built on ``torch.optim.swa_utils.AveragedModel`` (the copy, ``n_averaged``, state dicts); only
the update rule is ours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay_at(decay: float, n: int) -> float:
    """The decay used for the update after ``n`` earlier updates (warm-up, then ``decay``)."""
    return min(decay, (1.0 + n) / (10.0 + n))


def _ema_update(decay: float) -> Callable[..., None]:
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        d = ema_decay_at(decay, int(n_averaged))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # why: counters (BatchNorm's num_batches_tracked) follow the model
            torch._foreach_copy_(averaged, current)

    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (parameters and buffers); call ``.update_parameters(model)``
    after each optimiser step and use ``.module`` for evaluation."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
    ema = AveragedModel(model, multi_avg_fn=_ema_update(decay), use_buffers=True)
    ema.module.eval()
    return ema
