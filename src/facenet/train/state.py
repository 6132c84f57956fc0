"""What a training run holds: ``TrainState`` and how it is built, saved and resumed.

``build_state(config, info, resume)`` makes the model (initialised from the seed), the data, the
optimiser, the weight average and the batch streams, and, with ``resume``, restores them from
``<output.dir>/last.pt`` after checking that the checkpoint was made the same way.
``state.state_dict()`` is that checkpoint: the shipped model (the weight average's, with EMA) and
everything that continues the run bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
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
from facenet.models import create_model
from facenet.models.card import card_of
from facenet.models.loading import check_state_fits, load_model
from facenet.models.unfold import unfold_identity_batchnorm
from facenet.preprocess import preprocess
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
    stored_size,
)
from facenet.train.ema import make_ema
from facenet.train.offline import OfflineTripletMiner
from facenet.train.teacher import (
    TeacherTargets,
    align_targets,
    build_targets,
    cached_embeddings,
    pair_embeddings,
)
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
    model = _build_model(config, info)
    pairs, data = _build_data(config, tuple(model.spec.input_size), info)
    if config.model.init and not resume:
        _unfold_batchnorm(model, data, config, info)
    teacher = _build_teacher(config, data, int(model.spec.embedding_dim), info)
    old = _build_old(config, data, pairs, int(model.spec.embedding_dim), info)
    if teacher is not None and old is not None:
        teacher = _align_teacher(teacher, old, config.output.progress and info.is_main)
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
        stream=BatchStream(data.labels, config, info.rank, info.world_size),
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
        autocast=_autocast(config, info.device),
    )
    if resume:
        ckpt = load_checkpoint(last_path)
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


def _build_model(config: Config, info: D.DistInfo) -> nn.Module:
    """The network, initialised from the seed (the only use of the global RNG besides dropout),
    or from ``model.init``'s weights (fine-tuning)."""
    torch.manual_seed(config.seed)
    model = create_model(config.model.name, **config.model.kwargs)
    if config.model.init:
        _load_init(model, config.model.init)
    _check_freeze(model, config.model.freeze)
    input_size = tuple(model.spec.input_size)
    # why: validation (and so every later use) shows the model the centre input/stored of each
    # cached face, itself the centre data.crop_fraction of the training images; record it.
    framing = config.data.crop_fraction * max(input_size) / stored_size(config, input_size)
    _record_framing(model, round(framing, 6))
    fmt = torch.channels_last if config.model.channels_last else torch.contiguous_format
    model = model.to(device=info.device, memory_format=fmt)
    if info.distributed and info.device.type == "cuda" and config.model.sync_batchnorm:
        model = D.convert_sync_batchnorm(model)
    return model


def _load_init(model: nn.Module, ref: str) -> None:
    """Start ``model`` from the weights of ``ref`` (same architecture and kwargs), taking its
    preprocessing (normalisation) too; the framing is recorded afresh from the data config."""
    source = load_model(ref)
    check_state_fits(ref, model, source.state_dict())
    model.load_state_dict(source.state_dict())
    model.spec = dataclasses.replace(source.spec, crop_fraction=model.spec.crop_fraction)


# why: a few hundred faces pin each channel's mean and variance to a fraction of a percent
UNFOLD_FACES = 512


def _unfold_batchnorm(model: nn.Module, data: TrainData, config: Config, info: D.DistInfo) -> None:
    """A model converted from a frozen graph (batch norm folded: identity statistics) gets its
    batch norms' statistics back from (seeded) training faces before fine-tuning, so that train
    mode normalises as the original was trained (``facenet.models.unfold``); eval is unchanged."""
    images = data.images
    rng = np.random.default_rng(config.seed)
    pick = np.sort(rng.choice(len(images), min(len(images), UNFOLD_FACES), replace=False))
    h, w = model.spec.input_size
    top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
    fmt = torch.channels_last if config.model.channels_last else torch.contiguous_format

    def batches():
        for start in range(0, len(pick), 64):
            crops = images[pick[start : start + 64], top : top + h, left : left + w]
            x = preprocess(crops, model.spec, framed=True).to(info.device)
            yield x.contiguous(memory_format=fmt)

    n = unfold_identity_batchnorm(model, batches())
    if n and info.is_main and config.output.progress:
        print(
            f"model.init {config.model.init}: {n} folded batch norms given their statistics "
            f"back from {len(pick)} training faces (eval unchanged; train mode consistent)",
            file=sys.stderr,
        )


def frozen(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether parameter ``name`` lies under one of ``prefixes`` (module paths, e.g. ``conv1``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _check_freeze(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """``ConfigError`` for a ``model.freeze`` prefix that names no parameter (a typo would
    otherwise freeze nothing, silently)."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(frozen(n, (prefix,)) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise ConfigError(
                f"model.freeze: {prefix!r} names no parameter of {model.spec.name}; its "
                f"top-level modules are {', '.join(tops)}"
            )


def _build_teacher(
    config: Config, data: TrainData, student_dim: int, info: D.DistInfo
) -> TeacherTargets | None:
    """``distill.teacher``'s targets: rank 0 computes (or reuses) the cache, the others read it."""
    if not config.distill.teacher:
        return None
    progress = config.output.progress and info.is_main
    targets = build_targets(config, data, student_dim, progress) if info.is_main else None
    D.barrier()
    if targets is None:
        targets = build_targets(config, data, student_dim, False, compute=False)
    elif progress:
        dims = f"{targets.embeddings.shape[2]}-d"
        if targets.embeddings.shape[2] != student_dim:
            dims += f" -> {student_dim}-d (keeps {100 * targets.kept_energy:.3f}% of the energy)"
        print(f"teacher {config.distill.teacher}: {dims}, cache {targets.path}", file=sys.stderr)
    return targets


def _align_teacher(teacher: TeacherTargets, old: OldEmbeddings, progress: bool) -> TeacherTargets:
    """The teacher's targets rotated into the harmonic v1's frame (``align_targets``): the same
    geometry, oriented so that learning it does not fight the mixed triplets."""
    before = float((teacher.targets * old.embeddings).sum(dim=1).mean())
    rotated, after = align_targets(teacher.targets, old.embeddings)
    if progress:
        print(
            f"teacher targets rotated into {old.weights_hash[:12]}'s frame: mean cosine with "
            f"v1 {before:.3f} -> {after:.3f}",
            file=sys.stderr,
        )
    return dataclasses.replace(teacher, targets=rotated)


@dataclass(frozen=True)
class OldEmbeddings:
    """``harmonic.model``'s (v1's) embeddings of the training faces, as a gallery stores them
    (the face itself, not its mirror).

    Attributes:
        embeddings: (N, D) float32 unit vectors, rows aligned with ``TrainData``.
        weights_hash: v1's weights hash: what the trained model declares itself compatible with.
        pairs: (M, D) v1's embeddings of the validation pairs' images (``pair_embeddings``), for
            the mixed-pair thresholds the export records; rank 0 only (None elsewhere).
    """

    embeddings: torch.Tensor
    weights_hash: str
    pairs: torch.Tensor | None = None


def _build_old(
    config: Config, data: TrainData, pairs: PairSet, dim: int, info: D.DistInfo
) -> OldEmbeddings | None:
    """``harmonic.model``'s embeddings: rank 0 computes (or reuses) the cache, the others read
    it; rank 0 also embeds the validation pairs with it."""
    h = config.harmonic
    if not h.model:
        return None
    v1 = load_model(h.model)
    old_dim = int(v1.spec.embedding_dim)
    if old_dim != dim:  # why: before minutes of embedding the training faces with it
        raise ConfigError(
            f"harmonic.model {h.model} embeds in {old_dim} dimensions, this model in {dim}: a "
            "harmonic model must have the old model's dimension"
        )
    progress = config.output.progress and info.is_main
    made = (
        cached_embeddings(h.model, h.cache, config, data, progress, model=v1)
        if info.is_main
        else None
    )
    D.barrier()
    if made is None:
        made = cached_embeddings(h.model, h.cache, config, data, False, compute=False, model=v1)
    embeddings, meta, _ = made
    unit = torch.nn.functional.normalize(torch.from_numpy(embeddings[:, 0]), dim=1)
    on_pairs = pair_embeddings(v1, config, pairs, info.device) if info.is_main else None
    return OldEmbeddings(unit, str(meta["weights_hash"]), on_pairs)


def _record_framing(model: nn.Module, crop_fraction: float) -> None:
    """Write the face framing training validated with into the model's spec."""
    model.spec = dataclasses.replace(model.spec, crop_fraction=crop_fraction)


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


def _autocast(config: Config, device: torch.device) -> Autocast:
    if device.type == "cuda" and config.precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext
