"""The training loop: identity-balanced batches -> embeddings -> online mining -> triplet loss
(or, with ``mining.strategy=offline``, batches of triplets mined every n steps on a subset).

``train(config)`` builds a ``TrainState`` (``facenet.train.state``: model, optimiser, weight
average, batch streams; restored from ``last.pt`` with ``resume``) and runs it to
``config.max_steps``. Each step reads top to bottom: batch -> ``train_step`` -> log -> maybe
validate -> maybe save. Every random stream is a function of (seed, step) or lives in the
checkpoint, so a resumed run reproduces an uninterrupted one bit for bit (same machine, same
thread count). Health is checked every step (``facenet.train.health``): a non-finite loss or
gradient stops the run before the optimiser touches the weights, an embedding spread below
``faults.collapse_spread`` for ``faults.collapse_patience`` steps stops it too; checkpoints are
only written after healthy steps, so the last one is always good.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facenet.config import Config, check_config, dump_config
from facenet.models.card import card_of
from facenet.quantize import Int8Codec
from facenet.train import distributed as D
from facenet.train.checkpoint import export_weights, unwrap
from facenet.train.data import Batch
from facenet.train.health import CollapseWatch
from facenet.train.logs import RunLogs, Throughput, plot_curves
from facenet.train.state import TrainState, build_state
from facenet.train.step import StepStats, next_batch, train_step
from facenet.train.validate import ValidationResult, score_validation

#: Called with the state at the start of every step, before its batch is drawn and after the
#: previous step's checkpoint was written (progress reports, custom stopping rules, tests). An
#: exception raised by a hook ends the run there, as a kill would.
Hook = Callable[[TrainState], None]


@dataclass
class TrainResult:
    """What a finished run reached."""

    step: int
    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best: dict[str, Any] = field(default_factory=dict)
    last_validation: dict[str, Any] = field(default_factory=dict)
    images_per_s: float = 0.0


def train(config: Config, resume: bool = False, hooks: Sequence[Hook] = ()) -> TrainResult:
    """Run (or continue) the training described by ``config``.

    Args:
        config: the resolved configuration.
        resume: continue from ``<output.dir>/last.pt`` (bit-exact). Without it, a run folder that
            already holds a checkpoint is refused.
        hooks: called with the ``TrainState`` at the start of every step (see ``Hook``).

    Returns:
        ``TrainResult`` with the final step, checkpoints and best validation metrics.

    Raises:
        DivergenceError / CollapseError: the run stopped itself (last good checkpoint intact).
        ConfigError: the config cannot run (here: offline mining under torchrun).
        FileExistsError: the run folder has a checkpoint and ``resume`` is False.
    """
    info = D.setup(config.device)
    # why: the thread count is process-wide; a run inside a longer-lived process (the Python
    # API, a notebook, a test) must not leave it changed
    threads = torch.get_num_threads()
    try:
        check_config(config, world_size=info.world_size)
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        state = build_state(config, info, resume)
        return _run(state, hooks, resumed=resume)
    finally:
        torch.set_num_threads(threads)
        D.cleanup()


def _run(state: TrainState, hooks: Sequence[Hook], resumed: bool) -> TrainResult:
    config, info = state.config, state.info
    if info.is_main:
        state.run_dir.mkdir(parents=True, exist_ok=True)
        (state.run_dir / "config.yaml").write_text(dump_config(config))
    logs = RunLogs(state.run_dir, config, state.step, resumed, enabled=info.is_main)
    speed, collapse = Throughput(), CollapseWatch(config.faults)
    stop_reason = ""
    state.model.train()
    state.start_clock()
    try:
        while state.step < config.max_steps:
            for hook in hooks:
                hook(state)
            started = time.perf_counter()
            batch = next_batch(state)
            stats = train_step(state, batch)
            collapse.check(state.step, stats.embedding_spread, state.last_path, info.device)
            speed.add(batch.global_size, time.perf_counter() - started)
            logs.advance()

            last = state.step == config.max_steps
            if info.is_main and (last or state.step % config.output.log_every == 0):
                state.metrics["train"] = _train_row(state, stats, batch, speed.window_rate())
                logs.train(state.metrics["train"])
            out_of_time = _out_of_time(state)
            final = last or out_of_time
            if final or _every(state.step, config.validation.every):
                started = time.perf_counter()
                _validate(state, logs)
                speed.exclude(time.perf_counter() - started)  # why: not in images/s
            if final or _every(state.step, config.output.checkpoint_every):
                state.save(state.last_path)
            if out_of_time:
                stop_reason = f"time limit of {config.time_limit_minutes} min reached"
                break
    finally:
        logs.close()
    return _finish(state, stop_reason, speed.session_rate)


def _validate(state: TrainState, logs: RunLogs) -> None:
    """Rank 0 scores the shipped model (and, with a weight average, the raw weights too) on the
    validation pairs, records the calibrated thresholds and keeps ``best.pt``; all ranks wait."""
    if state.info.is_main:
        shipped = _score(state, state.shipped)
        state.record_thresholds(shipped.thresholds)
        row = {
            "step": state.step,
            "accuracy": shipped.accuracy,
            "accuracy_std": shipped.accuracy_std,
            "val": shipped.val,
            "far": shipped.far,
            "auc": shipped.auc,
            "threshold": shipped.threshold,
            "pairs": shipped.pairs,
        }
        if state.ema is not None:
            raw = _score(state, unwrap(state.model))
            row |= {"raw_accuracy": raw.accuracy, "raw_auc": raw.auc}
        state.metrics["validation"] = row
        if not state.best or row["accuracy"] > state.best.get("accuracy", -1):
            state.best = dict(row)
            state.save(state.best_path)
        logs.val(row, state.best)
    D.barrier()


def _score(state: TrainState, model: torch.nn.Module) -> ValidationResult:
    """``model``'s verification scores on the validation pairs."""
    v = state.config.validation
    embeddings = state.embed(model, state.pairs.images, v.flip)
    return score_validation(embeddings, state.pairs, v.far_target)


def _train_row(
    state: TrainState, stats: StepStats, batch: Batch, images_per_s: float
) -> dict[str, Any]:
    """The train_log.csv row of the step just taken."""
    mined = batch.mined  # offline mining: pair counts of the last mining, not of this batch
    return {
        "step": state.step,
        "epoch": state.epoch,
        "loss": stats.loss,
        "fraction_active": stats.fraction_active,
        "num_triplets": stats.num_triplets,
        "num_pairs": stats.num_pairs if mined is None else mined.num_pairs,
        "pairs_without_negative": (
            stats.pairs_without_negative if mined is None else mined.pairs_without_negative
        ),
        "mean_ap": stats.mean_ap,
        "mean_an": stats.mean_an,
        "embedding_spread": stats.embedding_spread,
        "grad_norm": stats.grad_norm,
        "lr": stats.lr,
        "images_per_s": images_per_s,
        "elapsed_s": state.elapsed_s,
        **{f"loss_{name}": value for name, value in stats.terms.items()},
    }


def _every(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _out_of_time(state: TrainState) -> bool:
    """Whether any rank has spent ``time_limit_minutes`` of training (all ranks agree)."""
    limit = state.config.time_limit_minutes
    over = limit > 0 and state.elapsed_s > 60 * limit
    return not D.all_true(not over, state.info.device)


def _finish(state: TrainState, stop_reason: str, images_per_s: float) -> TrainResult:
    """Report a stop, draw ``curves.png`` and export safetensors weights (rank 0)."""
    if stop_reason and state.info.is_main:
        print(f"stopped at step {state.step}: {stop_reason}", file=sys.stderr)
    result = TrainResult(
        step=state.step,
        run_dir=state.run_dir,
        last_checkpoint=state.last_path if state.last_path.exists() else None,
        best_checkpoint=state.best_path if state.best_path.exists() else None,
        best=state.best,
        last_validation=state.metrics["validation"],
        images_per_s=images_per_s,
    )
    if state.info.is_main:
        plot_curves(state.run_dir)
        if state.config.output.weights:
            export_weights(state.run_dir, lambda model: _annotate(state, model))
    return result


# why: 2,000 faces put each dimension's calibrated maximum within a few percent of the whole
# training set's (the codec clips the rare value beyond it, the distance bound allows for it)
INT8_CALIBRATION_FACES = 2000


def _annotate(state: TrainState, model: torch.nn.Module) -> None:
    """What the exported weights' card records beside the checkpoint's: the 128-byte code of
    the model's embeddings (int8 scales calibrated on up to ``INT8_CALIBRATION_FACES`` seeded
    training faces, as validation frames them) and, for a harmonic model, the old model's
    weights hash (its galleries accept this model's probes)."""
    images = state.data.images
    rng = np.random.default_rng(state.config.seed)
    pick = np.sort(rng.choice(len(images), min(len(images), INT8_CALIBRATION_FACES), False))
    embeddings = state.embed(model.to(state.info.device), images[pick]).numpy()
    card = card_of(model)
    card.int8 = Int8Codec.calibrate(embeddings).to_dict()
    if state.old is not None:
        card.compatible_with = (state.old.weights_hash,)
        # v1 embeds each pair's left face (as its gallery stored it), this model the right one
        own = state.embed(model, state.pairs.images)
        far = state.config.validation.far_target
        mixed = score_validation(state.old.pairs, state.pairs, far, right=own)
        card.mixed_thresholds = {state.old.weights_hash: mixed.thresholds}
