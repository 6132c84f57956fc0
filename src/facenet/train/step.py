"""One training step: the next batch, then forward -> loss terms -> backward -> optimiser step.

Under torchrun every rank embeds its share of the global batch; the embeddings are gathered (with
gradients into each rank's own rows) and every rank computes the loss of the whole global batch,
so N processes take the steps of one process on the N-times larger batch.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field

import numpy as np
import torch

from facenet.losses.distributed import gather_labels, gather_with_grad
from facenet.losses.hinge import TripletStats
from facenet.train.checkpoint import unwrap
from facenet.train.data import (
    Batch,
    as_input,
    augment_stream,
    augmented_pixels,
    center_window_pixels,
    mining_seed,
)
from facenet.train.health import check_finite
from facenet.train.model_setup import frozen
from facenet.train.schedule import lr_at
from facenet.train.state import TrainState


@dataclass(frozen=True)
class StepStats:
    """What one optimiser step did (plain floats, for logs and health checks).

    ``fraction_active`` .. ``embedding_spread`` are the triplet term's statistics of the global
    batch (``facenet.losses.TripletStats``).
    """

    loss: float  # the sum of the loss terms: what the step minimised
    fraction_active: float
    num_triplets: int
    num_pairs: int
    pairs_without_negative: int
    mean_ap: float
    mean_an: float
    embedding_spread: float
    grad_norm: float  # of all gradients, before clipping
    lr: float
    terms: dict[str, float] = field(default_factory=dict)  # each term's loss


def next_batch(state: TrainState) -> Batch:
    """Step ``state.step``'s batch: identity-balanced faces to mine online, or, with offline
    mining, the faces of the next mined triplets (re-mined every ``mining.refresh_every`` steps
    with the current weights)."""
    triplets = mined = None
    if state.miner is None:
        idx = state.stream.next()  # this rank's share of the global batch
    else:
        trained, faces = unwrap(state.model), state.data.images
        # the current weights' view of training faces (centre crops, as validation sees them)
        offline = state.miner.step(
            state.step, lambda i: state.embed(trained, faces[np.asarray(i, dtype=np.int64)])
        )
        idx = np.asarray(offline.indices, dtype=np.int64)
        triplets, mined = offline.triplets, state.miner.last_stats
        if len(idx) == 0:
            # why: the last mining found no triplet (all pairs satisfied): mine online until the
            # next one rather than stall
            idx, triplets, mined = state.stream.next(), None, None
    config, device = state.config, state.info.device
    spec, teacher = unwrap(state.model).spec, state.online_teacher
    size = tuple(spec.input_size)
    # why: the teacher takes square faces; a non-square student sees the centre window of the
    # square the teacher sees (as it is validated: facenet.preprocess.center_window)
    side = max(size)
    view = (side, side) if teacher is not None else size
    pixels = augmented_pixels(
        state.data.images[idx], view, config, state.step, augment_stream(state.info.rank)
    )
    return Batch(
        indices=idx,
        images=as_input(center_window_pixels(pixels, size), spec, config, device),
        labels=torch.from_numpy(state.data.labels[idx]).to(device),
        triplets=triplets,
        mined=mined,
        mining_seed=mining_seed(config.seed, state.step),
        global_size=state.stream.global_size if triplets is None else len(idx),
        targets=teacher(pixels, device) if teacher is not None else None,
    )


def train_step(state: TrainState, batch: Batch) -> StepStats:
    """One optimiser step on ``batch``; ``state.step`` advances by one.

    Raises:
        DivergenceError: the loss or a gradient is NaN/inf; the weights were not touched.
    """
    config = state.config
    lr = lr_at(state.step, config.optimiser.lr, config.max_steps, config.schedule)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    _set_frozen(state)
    with state.autocast():
        embeddings = state.model(batch.images)
    embeddings, labels = embeddings.float(), batch.labels  # (n, D), (n,): this rank's faces
    if state.info.distributed:
        # why: every rank mines the global batch, gathered once, so the losses and gradients
        # are those of one process on the whole batch
        embeddings, labels = gather_with_grad(embeddings), gather_labels(labels)
    outputs = [term(embeddings, labels, batch) for term in state.terms]
    losses = {name: value for out in outputs for name, value in out.losses.items()}
    loss = functools.reduce(operator.add, losses.values())
    triplet = next(out.triplet for out in outputs if out.triplet is not None)

    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    _drop_frozen_grads(state)
    state.scaler.unscale_(state.optimizer)
    grad_norm = _grad_norm(state.model, config.optimiser.grad_clip)
    loss_value = float(loss.detach())
    check_finite(
        state.step,
        loss_value,
        grad_norm,
        state.scaler.is_enabled(),
        state.last_path,
        state.info.device,
    )
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if state.ema is not None:
        state.ema.update_parameters(unwrap(state.model))
    state.step += 1
    return _stats(loss_value, triplet, grad_norm, lr, losses)


def _set_frozen(state: TrainState) -> None:
    """In one process, ``model.freeze``'s parameters take no gradient before
    ``model.freeze_steps`` (autograd skips their backward: fine-tuning's first steps are
    cheaper). Under torchrun every parameter keeps ``requires_grad`` (DDP's reducer expects
    them all) and ``_drop_frozen_grads`` holds them instead."""
    m = state.config.model
    # why: past freeze_steps nothing changes (the step at freeze_steps hands gradients back)
    if not m.freeze or state.info.distributed or state.step > m.freeze_steps:
        return
    hold = state.step < m.freeze_steps
    for name, p in unwrap(state.model).named_parameters():
        if frozen(name, m.freeze):
            p.requires_grad_(not hold)


def _drop_frozen_grads(state: TrainState) -> None:
    """Under torchrun, before ``model.freeze_steps``: no gradient for the parameters under
    ``model.freeze``, so the optimiser leaves them (and their weight decay and moments)
    untouched this step. (In one process ``_set_frozen`` already kept them out of backward.)"""
    m = state.config.model
    if not m.freeze or not state.info.distributed or state.step >= m.freeze_steps:
        return
    for name, p in unwrap(state.model).named_parameters():
        if frozen(name, m.freeze):
            p.grad = None


def _grad_norm(model: torch.nn.Module, clip: float) -> float:
    """The global L2 norm of the gradients, clipped to ``clip`` in place when ``clip`` > 0."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, clip))
    if not params:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
    return float(torch.linalg.vector_norm(norms))


def _stats(
    loss: float,
    triplet: TripletStats,
    grad_norm: float,
    lr: float,
    losses: dict[str, torch.Tensor],
) -> StepStats:
    return StepStats(
        loss=loss,
        fraction_active=triplet.fraction_active,
        num_triplets=triplet.num_triplets,
        num_pairs=triplet.num_pairs,
        pairs_without_negative=triplet.pairs_without_negative,
        mean_ap=triplet.mean_ap,
        mean_an=triplet.mean_an,
        embedding_spread=triplet.embedding_spread,
        grad_norm=grad_norm,
        lr=lr,
        terms={name: float(value.detach()) for name, value in losses.items()},
    )
