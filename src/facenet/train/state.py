"""What a training run holds: ``TrainState`` and how it is built, saved and resumed.

``build_state(config, info, resume)`` makes the model (initialised from the seed), the data, the
optimiser, the weight average and the batch streams, and, with ``resume``, restores them from
``<output.dir>/last.pt`` after checking that the checkpoint was made the same way.
``state.state_dict()`` is that checkpoint: the shipped model (the weight average's, with EMA) and
everything that continues the run bit for bit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from facenet.config import LAST_COMMIT_WITH_REMOVED, Config, ConfigError, config_to_dict
from facenet.models.card import card_of
from facenet.models.loading import check_state_fits
from facenet.train import distributed as D
from facenet.train.checkpoint import (
    checkpoint_dict,
    load_checkpoint,
    model_state_dict,
    restore_rng_states,
    rng_states,
    unwrap,
    write_checkpoint,
)
from facenet.train.data import (
    BatchStream,
    TrainData,
    build_train_data,
    build_validation,
)
from facenet.train.ema import make_ema
from facenet.train.model_setup import build_model, unfold_batchnorm
from facenet.train.offline import OfflineTripletMiner
from facenet.train.online_teacher import OnlineTeacher, build_online_teacher
from facenet.train.reference_models import (
    OldEmbeddings,
    align_teacher,
    build_old,
    build_teacher,
)
from facenet.train.teacher import TeacherTargets
from facenet.train.terms import LossTerm, build_terms
from facenet.train.validate import PairSet, embed_images

Autocast = Callable[[], AbstractContextManager[Any]]


@dataclass
class TrainState:
    """Everything a training step reads and changes.

    ``state_dict()`` saves the model, optimiser, scaler, weight average, batch and miner positions,
    global RNG state, step, metrics and elapsed time; ``terms``, ``data``, ``pairs`` and
    ``autocast`` are rebuilt from the config.
    """

    config: Config
    info: D.DistInfo
    model: nn.Module  # the trained network (DDP-wrapped under torchrun)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16 loss scaling on CUDA; disabled otherwise
    ema: AveragedModel | None  # weight average (rank 0 only): validated, saved and shipped
    stream: BatchStream  # identity-balanced batches and their position
    miner: OfflineTripletMiner | None  # mining.strategy=offline: the mined pool and its position
    terms: list[LossTerm]  # what the step minimises (summed)
    data: TrainData
    pairs: PairSet  # validation pairs
    teacher: TeacherTargets | None  # distill.teacher's targets for every training face
    old: OldEmbeddings | None  # harmonic.model's embeddings of every training face
    online_teacher: OnlineTeacher | None  # distill.online: embeds each step's augmented faces
    autocast: Autocast  # mixed-precision context of forward passes
    step: int = 0  # optimiser steps taken
    best: dict[str, Any] = field(default_factory=dict)  # validation row of best.pt
    metrics: dict[str, Any] = field(default_factory=lambda: {"train": {}, "validation": {}})
    thresholds: dict[str, float] = field(default_factory=dict)  # of the last validation
    elapsed_before: float = 0.0  # training seconds of earlier sessions of a resumed run
    clock_start: float = field(default_factory=time.perf_counter)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output.dir).expanduser()

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def shipped(self) -> nn.Module:
        """The model that is validated, saved and exported: the weight average, if any."""
        return unwrap(self.model) if self.ema is None else self.ema.module

    @property
    def epoch(self) -> int:
        """Passes over the data (online) or minings done (offline)."""
        return self.stream.epoch if self.miner is None else self.miner.refreshes

    @property
    def elapsed_s(self) -> float:
        """Training seconds of this run, earlier sessions included."""
        return time.perf_counter() - self.clock_start + self.elapsed_before

    def start_clock(self) -> None:
        """Count training time from now on (set-up is not training)."""
        self.clock_start = time.perf_counter()

    def embed(self, model: nn.Module, images: np.ndarray, flip: bool = False) -> torch.Tensor:
        """Unit embeddings of cached faces (centre crops, eval mode), as validation sees them."""
        device = self.info.device
        return embed_images(
            model,
            images,
            tuple(model.spec.input_size),
            device,
            self.config.validation.batch_size,
            flip,
            self.config.model.channels_last,
            self.autocast if device.type == "cuda" else None,
        )

    def record_thresholds(self, thresholds: dict[str, float]) -> None:
        """Keep the calibrated thresholds, on the trained model's card and the average's."""
        self.thresholds = dict(thresholds)
        card_of(unwrap(self.model)).set_thresholds(self.thresholds)
        if self.ema is not None:
            card_of(self.ema.module).set_thresholds(self.thresholds)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of this state (see ``facenet.train.checkpoint.checkpoint_dict``)."""
        extra: dict[str, Any] = {
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "offline_miner": self.miner.state_dict() if self.miner is not None else None,
        }
        if self.ema is not None:  # why: model_state is the average; --resume needs the trained one
            extra["train_model_state"] = model_state_dict(self.model)
            extra["ema_updates"] = int(self.ema.n_averaged)
        return checkpoint_dict(
            self.shipped,
            config=config_to_dict(self.config),
            step=self.step,
            optimizer=self.optimizer,
            sampler_state=self.stream.state_dict(),
            rng_state=rng_states(),
            # why: elapsed_s lets a resumed run count its training time from here
            metrics=self.metrics | {"elapsed_s": self.elapsed_s},
            best=self.best,
            thresholds=self.thresholds,
            extra=extra,
        )

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Continue from ``ckpt`` (checked by ``check_resumable``)."""
        trained = ckpt.get("train_model_state")
        unwrap(self.model).load_state_dict(trained or ckpt["model_state"])
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt["model_state"])
            self.ema.n_averaged.fill_(int(ckpt["ema_updates"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.stream.load_state_dict(ckpt["sampler"])
        if self.miner is not None:
            self.miner.load_state_dict(ckpt["offline_miner"])
        restore_rng_states(ckpt["rng"])
        self.step = int(ckpt["step"])
        self.best = dict(ckpt.get("best") or {})
        metrics = ckpt.get("metrics") or {}
        self.metrics = {k: dict(metrics.get(k) or {}) for k in ("train", "validation")}
        self.elapsed_before = float(metrics.get("elapsed_s", 0.0))
        self.record_thresholds(ckpt.get("thresholds") or {})

    def save(self, path: Path) -> None:
        """Write the checkpoint to ``path`` (rank 0; every rank holds the same weights)."""
        if self.info.is_main:
            write_checkpoint(path, self.state_dict())


def check_resumable(ckpt: dict[str, Any], state: TrainState, path: Path) -> None:
    """``ValueError`` naming ``path`` when ``ckpt`` was trained in a way ``state`` cannot continue
    (another weight-average or mining setting, a removed option, another architecture)."""
    saved = ckpt.get("config") or {}
    if ckpt.get("classifier") is not None:
        weight = (saved.get("classifier") or {}).get("weight")
        raise ValueError(
            f"{path} was trained with the CosFace classifier (classifier.weight={weight}), an "
            f"option removed after commit {LAST_COMMIT_WITH_REMOVED}; resume it with that commit"
        )
    trained = ckpt.get("train_model_state")
    if (trained is None) != (state.config.optimiser.ema_decay == 0):
        decay = saved.get("optimiser", {}).get("ema_decay", 0.0)
        raise ValueError(
            f"{path} was trained with optimiser.ema_decay={decay}; resume it with an "
            "EMA setting of the same kind (on or off)"
        )
    # why: a checkpoint of another architecture is one line naming it, not torch's list
    check_state_fits(path, unwrap(state.model), trained or ckpt["model_state"])
    if (state.miner is None) != (ckpt.get("offline_miner") is None):
        strategy = saved.get("mining", {}).get("strategy", "online")
        raise ValueError(
            f"{path} was trained with mining.strategy={strategy}; resume it with the same strategy"
        )


# why: what may differ when a run is resumed: how long it runs, where and how fast, what it
# writes and shows, and where its files live. Everything else defines the run (what is learnt, from
# what, how): a checkpoint continued under other settings would be neither run, while its saved
# config claimed the new settings for every step.
RESUME_MAY_CHANGE = (
    # where the data and the start weights live (a run moved to another disk or machine; the
    # sampler still checks the identities, model.init is not read again on resume)
    "data.roots",
    "data.lfw_dir",
    "validation.root",
    "validation.pairs",
    "model.init",
    "model.channels_last",  # a memory layout, same values
    "max_steps",
    "time_limit_minutes",
    "device",
    "threads",
    "output.",
    "faults.",
    "data.cache_dir",
    "data.decode_threads",
    "validation.batch_size",
    "validation.every",
    "distill.batch_size",
    "distill.backend",
    "distill.cache",
    "harmonic.cache",
)
ONLINE_TEACHER_KEYS = ("distill.batch_size", "distill.backend")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not (prefix == "model." and k == "kwargs"):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = v
    return out


def check_same_run(ckpt: dict[str, Any], config: Config, path: Path) -> None:
    """``ValueError`` naming ``path`` and every setting that differs from the checkpoint's
    config beyond ``RESUME_MAY_CHANGE`` (a setting the checkpoint predates counts as its
    default)."""
    step = int(ckpt.get("step", 0))
    if config.max_steps < step:
        raise ValueError(
            f"{path} is at step {step}, past max_steps={config.max_steps}: a run cannot go back; "
            "raise max_steps to continue it"
        )
    # why: a setting the checkpoint predates ran at its default (new options default to the
    # old behaviour), so that is what it is compared with
    saved = _flat(config_to_dict(Config())) | _flat(ckpt.get("config") or {})
    now = _flat(config_to_dict(config))
    may_change = RESUME_MAY_CHANGE
    if saved.get("distill.online"):
        # why: the teacher then runs on every step's batch: its backend and chunking are part
        # of the targets, not of a one-off cache
        may_change = tuple(k for k in may_change if k not in ONLINE_TEACHER_KEYS)
    changed = [
        k
        for k in now
        if now[k] != saved[k]
        and not any(k == p or (p.endswith(".") and k.startswith(p)) for p in may_change)
    ]
    if changed:
        shown = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ValueError(
            f"{path} was trained with other settings ({shown}{more}); resume it with the run's "
            f"own ({path.parent / 'config.yaml'}), or start a new output.dir from its weights "
            f"with model.init={path}"
        )


# ------------------------------------------------------------------------------------ build
def build_state(config: Config, info: D.DistInfo, resume: bool) -> TrainState:
    """A fresh run's state, or (``resume``) the state of ``<output.dir>/last.pt``.

    Raises:
        FileExistsError: the run folder holds a checkpoint and ``resume`` is False.
        FileNotFoundError: ``resume`` without a checkpoint.
        ValueError: the checkpoint cannot be continued with ``config`` (``check_resumable``).
    """
    run_dir = Path(config.output.dir).expanduser()
    last_path = run_dir / "last.pt"
    if not resume and last_path.exists():
        raise FileExistsError(
            f"{run_dir} already holds a checkpoint; pass --resume to continue it, "
            "or choose another output.dir"
        )
    if resume and not last_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
    ckpt = None
    if resume:  # checked before minutes of caching; model.init's file is not needed again
        ckpt = load_checkpoint(last_path)
        check_same_run(ckpt, config, last_path)
    model = build_model(config, info, resumed_spec=ckpt.get("spec") if ckpt else None)
    pairs, data = _build_data(config, tuple(model.spec.input_size), info)
    # why: too few identities for the batch is said now, not after minutes of teacher embeddings
    stream = BatchStream(data.labels, config, info.rank, info.world_size)
    if config.model.init and not resume:
        unfold_batchnorm(model, data, config, info)
    teacher = build_teacher(config, data, int(model.spec.embedding_dim), info)
    old = build_old(config, data, pairs, int(model.spec.embedding_dim), info)
    if teacher is not None and old is not None:
        teacher = align_teacher(teacher, old, config.output.progress and info.is_main)
    decay = config.optimiser.ema_decay
    state = TrainState(
        config=config,
        info=info,
        model=model,
        optimizer=build_optimizer(model, config),
        scaler=torch.amp.GradScaler(
            "cuda", enabled=info.device.type == "cuda" and config.precision == "fp16"
        ),
        # why: only rank 0 validates and saves, and every rank's weights are the same
        ema=make_ema(model, decay) if decay > 0 and info.is_main else None,
        stream=stream,
        miner=_build_miner(config, data),
        terms=build_terms(
            config,
            teacher.targets.to(info.device) if teacher else None,
            old.embeddings.to(info.device) if old else None,
        ),
        data=data,
        pairs=pairs,
        teacher=teacher,
        old=old,
        online_teacher=(
            build_online_teacher(config, teacher, info) if teacher is not None else None
        ),
        autocast=_autocast(config, info.device),
    )
    if ckpt is not None:
        check_resumable(ckpt, state, last_path)
        state.load_state_dict(ckpt)
    if info.distributed:
        device = info.device
        ids = [device.index] if device.type == "cuda" else None
        state.model = DistributedDataParallel(state.model, device_ids=ids)
    return state


def build_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """AdaGrad (the paper's), SGD with momentum, or AdamW; no weight decay on norms/biases."""
    o = config.optimiser
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if o.name == "adagrad":
        return torch.optim.Adagrad(
            groups, lr=o.lr, eps=o.eps, initial_accumulator_value=o.initial_accumulator_value
        )
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps)
    raise ValueError(f"unknown optimiser {o.name!r}; choose adagrad, sgd or adamw")


def _build_data(
    config: Config, input_size: tuple[int, int], info: D.DistInfo
) -> tuple[PairSet, TrainData]:
    """The validation pairs, then the training faces (which must not hold the pairs' people)."""
    progress = config.output.progress and info.is_main
    # why: rank 0 builds the image caches first, so that the other ranks reuse them
    pairs = build_validation(config, input_size, progress) if info.is_main else None
    D.barrier()
    if pairs is None:
        pairs = build_validation(config, input_size, False)
    data = build_train_data(config, input_size, progress, pairs.people)
    D.barrier()
    return pairs, data


def _build_miner(config: Config, data: TrainData) -> OfflineTripletMiner | None:
    m = config.mining
    if m.strategy != "offline":
        return None
    try:
        return OfflineTripletMiner(
            data.labels,
            rule=m.rule,
            margin=m.margin,
            refresh_every=m.refresh_every,
            identities_per_subset=m.subset_identities,
            images_per_identity=m.subset_images_per_identity,
            triplets_per_batch=m.triplets_per_batch,
            seed=config.seed,
            embed_batch_size=config.validation.batch_size,
        )
    except ValueError as e:  # why: the sampler's words are about "batches"; name the settings
        raise ConfigError(
            f"mining.subset_identities={m.subset_identities} / mining.subset_images_per_identity="
            f"{m.subset_images_per_identity}: {e}"
        ) from None


def _autocast(config: Config, device: torch.device) -> Autocast:
    if device.type == "cuda" and config.precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext
