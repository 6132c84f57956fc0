"""The training loop: identity-balanced batches -> embeddings -> online mining -> triplet loss
(or, with ``mining.strategy=offline``, batches of triplets mined every n steps on a subset).

Read top to bottom: ``train(config)`` builds the data, model and optimiser, optionally restores a
checkpoint, then runs ``config.max_steps`` optimiser steps. Every random stream is a function of
(seed, step) or lives in a checkpoint, so a resumed run reproduces an uninterrupted one bit for
bit (same machine, same thread count). Health is checked every step: a non-finite loss or
gradient (divergence) stops the run before the optimiser touches the weights; an embedding spread
below ``faults.collapse_spread`` for ``faults.collapse_patience`` steps (collapse) stops it too.
Checkpoints are only written from healthy steps, so the last one is always good.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facenet.config import Config, ConfigError, config_to_dict, dump_config
from facenet.data.augment import augment_batch, step_rng
from facenet.data.transforms import normalize
from facenet.models.card import card_of
from facenet.train import distributed as D
from facenet.train import sam
from facenet.train.checkpoint import (
    load_checkpoint,
    model_state_dict,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    unwrap,
)
from facenet.train.schedule import lr_at
from facenet.train.validate import PairSet, ValidationResult, embed_images, evaluate_pairs

TRAIN_FIELDS = (
    "step",
    "epoch",
    "loss",
    "classifier_loss",
    "classifier_accuracy",
    "consistency",
    "fraction_active",
    "num_triplets",
    "num_pairs",
    "pairs_without_negative",
    "mean_ap",
    "mean_an",
    "embedding_spread",
    "grad_norm",
    "lr",
    "images_per_s",
    "elapsed_s",
)
# step_rng streams, each drawn afresh from (seed, step, stream). Rank 0 augments from stream 0, so a
# single process draws what it always drew; the other ranks' augmentation and every rank's
# consistency view (optimiser.ema_consistency) sit apart from each other and from the mining seed.
MINING_STREAM = 1
_RANK_AUGMENT_STREAM = 1 << 16  # + rank, ranks >= 1
_CONSISTENCY_STREAM = 1 << 20  # + rank


def augment_stream(rank: int) -> int:
    """The step_rng stream of ``rank``'s training augmentation."""
    return 0 if rank == 0 else _RANK_AUGMENT_STREAM + rank


def consistency_stream(rank: int) -> int:
    """The step_rng stream of ``rank``'s second view for the consistency term."""
    return _CONSISTENCY_STREAM + rank


# why: with optimiser.ema_decay the metrics are the averaged model's; raw_* are the raw weights'
VAL_FIELDS = (
    "step",
    "accuracy",
    "accuracy_std",
    "val",
    "far",
    "auc",
    "threshold",
    "pairs",
    "raw_accuracy",
    "raw_auc",
)


class TrainingStopped(RuntimeError):
    """The run stopped itself; ``str(e)`` says why and where the last good checkpoint is."""

    exit_code = 3


class DivergenceError(TrainingStopped):
    """Loss or gradients became NaN/inf."""

    exit_code = 4


class CollapseError(TrainingStopped):
    """Embeddings converged to one point (SPEC §3's collapsed model)."""

    exit_code = 5


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


@dataclass(frozen=True)
class TrainData:
    """Training images and labels (images may be a memmap)."""

    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int64 (N,)
    identities: tuple[str, ...]


# ----------------------------------------------------------------------------------- data
def stored_size(config: Config, input_size: tuple[int, int]) -> int:
    """Side of cached images: configured, or the input size plus 1/7 of room for random crops."""
    if config.data.stored_size > 0:
        return config.data.stored_size
    return int(round(max(input_size) * 8 / 7))


def lfw_dir(config: Config) -> Path | None:
    if config.data.lfw_dir:
        return Path(config.data.lfw_dir).expanduser()
    from facenet.utils import default_data_dir

    root = default_data_dir()
    return root / "lfw" if root is not None else None


def build_train_data(
    config: Config, input_size: tuple[int, int], progress: bool, forbidden: frozenset[str]
) -> TrainData:
    """The training set from synthetic faces or folder roots (cached, person-disjoint split).

    ``forbidden`` names people that must not be trained on (the validation pairs' people); a
    split that would include any of them is an error, not a silent leak.
    """
    size = stored_size(config, input_size)
    if config.data.synthetic_identities > 0:
        from facenet.data.synthetic import make_synthetic

        faces = make_synthetic(
            config.data.synthetic_identities,
            config.data.synthetic_images_per_identity,
            size,
            config.seed,
        )
        return TrainData(faces.images, faces.labels, faces.identities)
    from facenet.data.cache import build_cache
    from facenet.data.folder import read_people_list, scan_roots, split_excluded_people

    if not config.data.roots:
        raise ValueError("data.roots is empty and data.synthetic_identities is 0: no training data")
    excluded = split_excluded_people(config.data.split, lfw_dir(config), config.data.test_fold)
    for f in config.data.exclude_people:
        excluded |= set(read_people_list(f))
    dataset = scan_roots(
        config.data.roots,
        min_images_per_identity=config.data.min_images_per_identity,
        exclude=excluded,
        max_identities=config.data.max_identities,
    )
    leak = forbidden & set(dataset.identities)
    if leak:
        raise ValueError(
            f"{len(leak)} validation people are in the training set (e.g. {sorted(leak)[:3]}); "
            "use data.split / data.exclude_people to keep them out"
        )
    cached = build_cache(
        dataset.paths,
        size,
        config.data.cache_dir,
        config.data.decode_threads,
        progress,
        config.data.crop_fraction,
    )
    keep = np.flatnonzero(cached.ok)
    labels = dataset.labels[keep]
    # why: an identity that lost images to decode errors may fall below the minimum.
    counts = np.bincount(labels, minlength=len(dataset.identities))
    keep = keep[counts[labels] >= config.data.min_images_per_identity]
    if len(keep) == len(cached.images):
        return TrainData(cached.images, dataset.labels, dataset.identities)
    return TrainData(np.asarray(cached.images[keep]), dataset.labels[keep], dataset.identities)


def build_validation(config: Config, input_size: tuple[int, int], progress: bool) -> PairSet:
    """The validation pairs named by ``config.validation``."""
    size = stored_size(config, input_size)
    v = config.validation
    if v.pairs == "synthetic" or (not v.pairs and config.data.synthetic_identities > 0):
        from facenet.train.validate import synthetic_pairs

        return synthetic_pairs(size, config.seed)
    from facenet.train.validate import default_pairs_path, load_lfw_pairs

    pairs = v.pairs or (str(default_pairs_path(lfw_dir(config))) if lfw_dir(config) else "")
    if not pairs or not v.root:
        raise ValueError("validation needs validation.pairs and validation.root (aligned images)")
    return load_lfw_pairs(
        pairs,
        Path(v.root).expanduser(),
        size,
        config.data.cache_dir,
        v.folds,
        progress,
        config.data.crop_fraction,
    )


class BatchStream:
    """Endless identity-balanced batches for this rank, with a resumable position.

    Wraps ``facenet.data.sampler.IdentityBalancedSampler`` (global batch ``i`` of epoch ``e`` is a
    pure function of (seed, e, i)); the position is (epoch, batches consumed in the epoch).
    """

    def __init__(self, labels: np.ndarray, config: Config, rank: int, world_size: int) -> None:
        from facenet.data.sampler import IdentityBalancedSampler

        s = config.sampler
        self.sampler = IdentityBalancedSampler(
            labels,
            identities_per_batch=s.identities_per_batch,
            images_per_identity=s.images_per_identity,
            extra_negatives=s.extra_negatives,
            seed=config.seed,
            rank=rank,
            world_size=world_size,
        )
        self.epoch = 0
        self.batch_in_epoch = 0
        self._it: Iterator[Any] | None = None

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self._it = iter(self.sampler)

    def next(self) -> np.ndarray:
        """This rank's indices of the next global batch."""
        if self._it is None:
            self._start_epoch()
        while True:
            try:
                batch = next(self._it)
                self.batch_in_epoch += 1
                return np.asarray(batch, dtype=np.int64)
            except StopIteration:
                self.epoch += 1
                self.batch_in_epoch = 0
                self._start_epoch()

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state at the number of batches *consumed* (no prefetching here)."""
        return {**self.sampler.state_dict(), "epoch": self.epoch, "position": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at (epoch, position); the sampler checks its configuration matches."""
        self.sampler.load_state_dict(state)
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["position"])
        self._it = iter(self.sampler)


# ------------------------------------------------------------------------------ optimiser
def build_optimizer(
    model: nn.Module, config: Config, classifier: nn.Module | None = None
) -> torch.optim.Optimizer:
    """AdaGrad (the paper's), SGD with momentum, or AdamW; no weight decay on norms/biases.

    A training-only ``classifier`` gets a third parameter group without weight decay (its class
    proxies are normalised, so decay would only shrink them towards the origin).
    """
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
    if classifier is not None:
        groups.append({"params": list(classifier.parameters()), "weight_decay": 0.0})
    if o.name == "adagrad":
        return torch.optim.Adagrad(
            groups, lr=o.lr, eps=o.eps, initial_accumulator_value=o.initial_accumulator_value
        )
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps)
    raise ValueError(f"unknown optimiser {o.name!r}; choose adagrad, sgd or adamw")


# -------------------------------------------------------------------------------- logging
class _Logs:
    """CSV (always) and TensorBoard (if installed and enabled) on rank 0."""

    def __init__(self, run_dir: Path, config: Config, resume_step: int | None) -> None:
        self.train_csv = run_dir / "train_log.csv"
        self.val_csv = run_dir / "val_log.csv"
        for path, fields in ((self.train_csv, TRAIN_FIELDS), (self.val_csv, VAL_FIELDS)):
            rows = _read_csv(path) if resume_step is not None else []
            # why: rows written after the checkpoint we resume from are replayed, not duplicated.
            rows = [r for r in rows if int(float(r["step"])) <= (resume_step or 0)]
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
        self.tb = None
        if config.output.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError:
                print("tensorboard not installed: CSV logs only", file=sys.stderr)

    def train(self, row: dict[str, Any]) -> None:
        _append_csv(self.train_csv, TRAIN_FIELDS, row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def val(self, row: dict[str, Any]) -> None:
        _append_csv(self.val_csv, VAL_FIELDS, row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"val/{k}", v, row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _append_csv(path: Path, fields: tuple[str, ...], row: dict[str, Any]) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerow(row)


def plot_curves(run_dir: str | os.PathLike) -> Path | None:
    """``curves.png``: training loss / active fraction / spread and validation accuracy / AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train_rows = _read_csv(run_dir / "train_log.csv")
    val_rows = _read_csv(run_dir / "val_log.csv")
    if not train_rows:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [int(r["step"]) for r in train_rows]

    def col(rows: list[dict[str, str]], key: str) -> list[float]:
        return [float(r[key]) if r[key] not in ("", "nan") else float("nan") for r in rows]

    axes[0].plot(steps, col(train_rows, "loss"), label="triplet")
    axes[0].set(title="triplet loss", xlabel="step")
    cls = col(train_rows, "classifier_loss") if "classifier_loss" in train_rows[0] else []
    if any(math.isfinite(v) for v in cls):
        # why: the optional classifier's cross-entropy is ~10x the triplet loss: own axis
        twin = axes[0].twinx()
        twin.plot(steps, cls, color="tab:orange", label="classifier (right)")
        twin.set_ylabel("classifier cross-entropy")
        axes[0].set(title="losses")
        axes[0].legend(
            handles=axes[0].get_lines() + twin.get_lines(), loc="upper right", fontsize="small"
        )
    axes[1].plot(steps, col(train_rows, "fraction_active"), label="fraction of triplets active")
    if "num_pairs" in train_rows[0]:
        pairs = np.maximum(np.array(col(train_rows, "num_pairs")), 1)
        mined = 1 - np.array(col(train_rows, "pairs_without_negative")) / pairs
        axes[1].plot(steps, mined, label="pairs with a mined negative")
    axes[1].plot(steps, col(train_rows, "embedding_spread"), label="embedding spread")
    axes[1].set(title="mining health", xlabel="step", ylim=(0, 1.05))
    axes[1].legend()
    if val_rows:
        vs = [int(r["step"]) for r in val_rows]
        axes[2].plot(vs, col(val_rows, "accuracy"), "o-", label="accuracy")
        axes[2].plot(vs, col(val_rows, "auc"), "s-", label="AUC")
        axes[2].plot(vs, col(val_rows, "val"), "^-", label="VAL@FAR")
        axes[2].legend()
    axes[2].set(title="validation", xlabel="step", ylim=(0, 1.0))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------ run
def _autocast(config: Config, device: torch.device) -> Any:
    if device.type == "cuda" and config.precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext


def train(config: Config, resume: bool = False) -> TrainResult:
    """Run (or continue) the training described by ``config``.

    Args:
        config: the resolved configuration.
        resume: continue from ``<output.dir>/last.pt`` (bit-exact). Without it, a run folder that
            already holds a checkpoint is refused.

    Returns:
        ``TrainResult`` with the final step, checkpoints and best validation metrics.

    Raises:
        DivergenceError / CollapseError: the run stopped itself (last good checkpoint intact).
        FileExistsError: the run folder has a checkpoint and ``resume`` is False.
    """
    info = D.setup(config.device)
    try:
        return _train(config, resume, info)
    finally:
        D.cleanup()


def _train(config: Config, resume: bool, info: D.DistInfo) -> TrainResult:
    from facenet.losses import triplet_loss
    from facenet.losses.distances import pairwise_squared_distances
    from facenet.losses.mining import Triplets
    from facenet.losses.triplet import TripletLossOutput, loss_and_stats
    from facenet.models import create_model
    from facenet.models.loading import check_state_fits

    if config.optimiser.sam_rho < 0:
        raise ConfigError(
            f"optimiser.sam_rho must be >= 0 (0 = off), got {config.optimiser.sam_rho}"
        )
    if not 0.0 <= config.optimiser.ema_decay < 1.0:
        raise ConfigError(
            f"optimiser.ema_decay must lie in [0, 1) (0 = off), got {config.optimiser.ema_decay}"
        )
    consistency_weight = config.optimiser.ema_consistency
    if consistency_weight < 0:
        raise ConfigError(
            f"optimiser.ema_consistency must be >= 0 (0 = off), got {consistency_weight}"
        )
    if consistency_weight > 0 and config.optimiser.ema_decay == 0:
        raise ConfigError(
            "optimiser.ema_consistency needs a weight average to agree with: set "
            "optimiser.ema_decay (e.g. 0.998)"
        )
    mining = config.mining
    if mining.strategy == "offline":
        if info.distributed:
            raise ConfigError(
                "mining.strategy=offline runs in one process; under torchrun use online mining "
                "(the global batch is mined across ranks)"
            )
        sizes = {
            "refresh_every": mining.refresh_every,
            "subset_identities": mining.subset_identities,
            "subset_images_per_identity": mining.subset_images_per_identity,
            "triplets_per_batch": mining.triplets_per_batch,
        }
        bad = [f"mining.{k}={v}" for k, v in sizes.items() if v < 1]
        if bad:
            raise ConfigError(f"offline mining needs positive sizes: {', '.join(bad)}")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.output.dir).expanduser()
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if not resume and last_path.exists():
        raise FileExistsError(
            f"{run_dir} already holds a checkpoint; pass --resume to continue it, "
            "or choose another output.dir"
        )
    if resume and not last_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
    show = config.output.progress and info.is_main
    device = info.device

    # -- model: initialised from the seed (the only use of the global RNG besides dropout)
    torch.manual_seed(config.seed)
    model = create_model(config.model.name, **config.model.kwargs)
    input_size = tuple(model.spec.input_size)
    # why: validation (and so every later use) shows the model the centre input/stored of each
    # cached face, itself the centre data.crop_fraction of the training images; record it.
    framing = config.data.crop_fraction * max(input_size) / stored_size(config, input_size)
    model.spec = dataclasses.replace(model.spec, crop_fraction=round(framing, 6))
    spec = model.spec
    memory_format = torch.channels_last if config.model.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    if info.distributed and device.type == "cuda" and config.model.sync_batchnorm:
        model = D.convert_sync_batchnorm(model)
    scaler = torch.amp.GradScaler(
        "cuda", enabled=device.type == "cuda" and config.precision == "fp16"
    )
    autocast = _autocast(config, device)

    # -- data (rank 0 builds caches first so that other ranks reuse them)
    validation: PairSet | None = None
    if info.is_main:
        validation = build_validation(config, input_size, show)
    D.barrier()
    if not info.is_main:
        validation = build_validation(config, input_size, False)
    forbidden = validation.people if validation is not None else frozenset()
    data = build_train_data(config, input_size, show, forbidden)
    D.barrier()
    stream = BatchStream(data.labels, config, info.rank, info.world_size)
    miner = None
    if mining.strategy == "offline":
        from facenet.losses.offline import OfflineTripletMiner

        miner = OfflineTripletMiner(
            data.labels,
            rule=mining.rule,
            margin=mining.margin,
            refresh_every=mining.refresh_every,
            identities_per_subset=mining.subset_identities,
            images_per_identity=mining.subset_images_per_identity,
            triplets_per_batch=mining.triplets_per_batch,
            seed=config.seed,
            embed_batch_size=config.validation.batch_size,
        )
    classifier: nn.Module | None = None
    if config.classifier.weight > 0:
        from facenet.losses.classifier import CosineClassifier

        c = config.classifier
        classifier = CosineClassifier(
            spec.embedding_dim,
            len(data.identities),
            c.scale,
            c.margin,
            generator=torch.Generator().manual_seed(config.seed + 1),
        ).to(device)
    optimizer = build_optimizer(model, config, classifier)
    # why: only rank 0 validates and saves; every rank's weights are the same after a step, so
    # the other ranks need the average only when it is the consistency target of their faces
    ema = None
    if config.optimiser.ema_decay > 0 and (info.is_main or consistency_weight > 0):
        from facenet.train.ema import make_ema

        ema = make_ema(model, config.optimiser.ema_decay)

    # -- resume
    step = 0
    best: dict[str, Any] = {}
    last_val: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    elapsed_before = 0.0  # training seconds of earlier sessions of a resumed run
    if resume:
        ckpt = load_checkpoint(last_path)
        # why: with EMA the checkpoint's model_state is the average; the trained weights are apart
        trained_state = ckpt.get("train_model_state")
        if (trained_state is None) != (config.optimiser.ema_decay == 0):
            saved = (ckpt.get("config") or {}).get("optimiser", {}).get("ema_decay", 0.0)
            raise ValueError(
                f"{last_path} was trained with optimiser.ema_decay={saved}; resume it with an "
                "EMA setting of the same kind (on or off)"
            )
        # why: a checkpoint of another architecture is one line naming it, not torch's list
        check_state_fits(last_path, unwrap(model), trained_state or ckpt["model_state"])
        unwrap(model).load_state_dict(trained_state or ckpt["model_state"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["model_state"])
            ema.n_averaged.fill_(int(ckpt["ema_updates"]))
        if (classifier is None) != (ckpt.get("classifier") is None):
            saved = (ckpt.get("config") or {}).get("classifier", {}).get("weight", 0.0)
            raise ValueError(
                f"{last_path} was trained with classifier.weight={saved}; resume it with the "
                "same setting (the classifier's weights and optimiser state must match)"
            )
        if classifier is not None:
            classifier.load_state_dict(ckpt["classifier"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        stream.load_state_dict(ckpt["sampler"])
        if (miner is None) != (ckpt.get("offline_miner") is None):
            saved = (ckpt.get("config") or {}).get("mining", {}).get("strategy", "online")
            raise ValueError(
                f"{last_path} was trained with mining.strategy={saved}; resume it with the "
                "same strategy"
            )
        if miner is not None:
            miner.load_state_dict(ckpt["offline_miner"])
        restore_rng_states(ckpt["rng"])
        step = int(ckpt["step"])
        best = dict(ckpt.get("best") or {})
        last_val = dict((ckpt.get("metrics") or {}).get("validation") or {})
        elapsed_before = float((ckpt.get("metrics") or {}).get("elapsed_s", 0.0))
        thresholds = dict(ckpt.get("thresholds") or {})
        card_of(unwrap(model)).set_thresholds(thresholds)
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        if classifier is not None:
            # why: every rank sees the same gathered batch; DDP keeps the proxies in step anyway
            classifier = DDP(
                classifier, device_ids=[device.index] if device.type == "cuda" else None
            )

    logs = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(config))
        logs = _Logs(run_dir, config, step if resume else None)
    config_dict = config_to_dict(config)

    def checkpoint(path: Path, metrics: dict[str, Any]) -> None:
        if not info.is_main:
            return
        extra = {
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "classifier": unwrap(classifier).state_dict() if classifier is not None else None,
            "offline_miner": miner.state_dict() if miner is not None else None,
        }
        if ema is not None:  # why: model_state is the average; --resume needs the trained weights
            extra |= {
                "train_model_state": model_state_dict(model),
                "ema_updates": int(ema.n_averaged),
            }
        save_checkpoint(
            path,
            model if ema is None else ema.module,
            config=config_dict,
            step=step,
            optimizer=optimizer,
            sampler_state=stream.state_dict(),
            rng_state=rng_states(),
            # why: elapsed_s lets a resumed run count its training time from here
            metrics=metrics | {"elapsed_s": time.perf_counter() - t_start},
            best=best,
            thresholds=thresholds,
            extra=extra,
        )

    def embed(m: nn.Module, images: np.ndarray, flip: bool = False) -> torch.Tensor:
        """Unit embeddings of cached faces (centre crops, eval mode) as validation sees them."""
        return embed_images(
            m,
            images,
            input_size,
            device,
            config.validation.batch_size,
            flip,
            config.model.channels_last,
            autocast if device.type == "cuda" else None,
        )

    def validate() -> dict[str, Any]:
        nonlocal thresholds
        if not info.is_main or validation is None:
            return {}

        def evaluate(m: nn.Module) -> ValidationResult:
            emb = embed(m, validation.images, config.validation.flip)
            return evaluate_pairs(emb, validation, config.validation.far_target)

        res = evaluate(unwrap(model) if ema is None else ema.module)
        raw = evaluate(unwrap(model)) if ema is not None else None
        thresholds = dict(res.thresholds)
        card_of(unwrap(model)).set_thresholds(thresholds)
        if ema is not None:
            card_of(ema.module).set_thresholds(thresholds)
        row = {
            "step": step,
            "accuracy": res.accuracy,
            "accuracy_std": res.accuracy_std,
            "val": res.val,
            "far": res.far,
            "auc": res.auc,
            "threshold": res.threshold,
            "pairs": res.pairs,
        }
        if raw is not None:
            row |= {"raw_accuracy": raw.accuracy, "raw_auc": raw.auc}
        logs.val(row)
        return row

    def embed_subset(indices: list[int]) -> torch.Tensor:
        """Offline mining's view of training faces: the current weights on centre crops."""
        return embed(unwrap(model), data.images[np.asarray(indices, dtype=np.int64)])

    def augmented(idx: np.ndarray, stream: int) -> torch.Tensor:
        """This step's augmentation of faces ``idx`` drawn from ``stream``, as the model takes it."""
        rng = step_rng(config.seed, step, stream)
        x = augment_batch(data.images[idx], input_size, config.data.augment, rng)
        x = normalize(x, spec).to(device, non_blocking=True)
        return x.contiguous(memory_format=memory_format)

    def consistency_target(idx: np.ndarray) -> torch.Tensor | None:
        """The weight average's embeddings (eval mode: the model that is validated and shipped)
        of a second augmentation of the global batch's faces, this rank's drawn from its own
        random stream, so that the first view's draws are those of a run without consistency."""
        if consistency_weight == 0:
            return None
        with torch.no_grad(), autocast():
            target = ema.module(augmented(idx, consistency_stream(info.rank))).float()
        if info.distributed:
            from facenet.losses.distributed import gather_no_grad

            target = gather_no_grad(target)
        return target

    def batch_loss(
        x: torch.Tensor,
        labels: torch.Tensor,
        mining_seed: int,
        triplets: Triplets | None,
        target: torch.Tensor | None = None,
    ) -> tuple[Any, torch.Tensor, float, float, float]:
        """Forward pass, mining (unless ``triplets`` were mined offline) and loss of one batch:
        (triplet output, total loss, classifier loss, classifier accuracy, consistency loss)."""
        with autocast():
            emb = model(x)
        emb, batch_labels = emb.float(), labels
        if info.distributed:
            from facenet.losses.distributed import gather_labels, gather_with_grad

            # why: every rank mines (and classifies) the global batch, gathered once, so the
            # losses and gradients are those of one process on the whole batch
            emb, batch_labels = gather_with_grad(emb), gather_labels(labels)
        if triplets is None:
            out = triplet_loss(
                emb,
                batch_labels,
                rule=mining.rule,
                margin=mining.margin,
                generator=torch.Generator().manual_seed(mining_seed),
            )
        else:
            sq_dist = pairwise_squared_distances(emb)
            given_loss, given_stats = loss_and_stats(emb, sq_dist, triplets, mining.margin)
            out = TripletLossOutput(given_loss, given_stats, triplets)
        loss = out.loss
        cls_loss_value = cls_accuracy = float("nan")
        if classifier is not None:
            cls_loss, cls_acc = classifier(emb, batch_labels)
            cls_loss_value, cls_accuracy = float(cls_loss.detach()), float(cls_acc)
            loss = loss + config.classifier.weight * cls_loss
        cons_value = float("nan")
        if target is not None:
            cons_loss = (emb - target).pow(2).sum(dim=1).mean()
            cons_value = float(cons_loss.detach())
            loss = loss + consistency_weight * cons_loss
        return out, loss, cls_loss_value, cls_accuracy, cons_value

    def trainable() -> list[torch.Tensor]:
        params = [p for p in model.parameters() if p.grad is not None]
        if classifier is not None:
            params += [p for p in classifier.parameters() if p.grad is not None]
        return params

    # -- loop
    faults = config.faults
    sam_rho = config.optimiser.sam_rho
    collapsed_steps = 0
    global_batch = config.sampler.identities_per_batch * config.sampler.images_per_identity
    global_batch += config.sampler.extra_negatives
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=config.max_steps, initial=step, desc="train", file=sys.stderr)
    # why: elapsed_s in the logs and time_limit_minutes count training time across resumes
    t_start = time.perf_counter() - elapsed_before
    t_window, images_window, images_per_s = time.perf_counter(), 0, 0.0
    train_seconds, train_images = 0.0, 0
    last_row: dict[str, Any] = {}
    model.train()
    stop_reason = ""
    try:
        while step < config.max_steps:
            t_step = time.perf_counter()
            lr = lr_at(step, config.optimiser.lr, config.max_steps, config.schedule)
            for g in optimizer.param_groups:
                g["lr"] = lr
            triplets = None
            if miner is None:
                idx = stream.next()  # this rank's share of the global batch
            else:
                offline = miner.step(step, embed_subset)  # re-mines every refresh_every steps
                idx = np.asarray(offline.indices, dtype=np.int64)
                triplets = offline.triplets
                if len(idx) == 0:
                    # why: the last mining found no triplet (all pairs satisfied): mine online
                    # until the next one rather than stall
                    idx, triplets = stream.next(), None
            x = augmented(idx, augment_stream(info.rank))
            labels = torch.from_numpy(data.labels[idx]).to(device)
            mining_seed = int(step_rng(config.seed, step, MINING_STREAM).integers(2**62))
            target = consistency_target(idx)
            out, loss, cls_loss_value, cls_accuracy, cons_value = batch_loss(
                x, labels, mining_seed, triplets, target
            )
            stats = out.stats
            loss_value = float(out.loss.detach())
            total_value = float(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if sam_rho > 0 and step >= config.optimiser.sam_start_step:
                # why: SAM's gradient is taken at the weights moved uphill by sam_rho, on the same
                # images (mined again there with the same random draw); the step starts from the unmoved weights
                moved = sam.ascend(trainable(), sam_rho)
                optimizer.zero_grad(set_to_none=True)
                with sam.frozen_batchnorm_stats(model):
                    _, sam_loss, _, _, _ = batch_loss(x, labels, mining_seed, triplets, target)
                scaler.scale(sam_loss).backward()
                sam.restore(moved)
                total_value = float(sam_loss.detach())
            scaler.unscale_(optimizer)
            params = trainable()
            if config.optimiser.grad_clip > 0:
                grad_norm = float(
                    torch.nn.utils.clip_grad_norm_(params, config.optimiser.grad_clip)
                )
            else:
                grad_norm = (
                    float(
                        torch.linalg.vector_norm(
                            torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
                        )
                    )
                    if params
                    else 0.0
                )
            finite = math.isfinite(total_value) and math.isfinite(grad_norm)
            if not D.all_true(finite, device) and not (
                scaler.is_enabled() and math.isfinite(total_value)
            ):
                raise DivergenceError(
                    f"training diverged at step {step + 1}: loss={total_value:.4g}, "
                    f"gradient norm={grad_norm:.4g} (NaN/inf). The weights were not updated; "
                    f"last good checkpoint: {last_path if last_path.exists() else 'none yet'}. "
                    "Lower optimiser.lr, enable optimiser.grad_clip or use precision=fp32."
                )
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(unwrap(model))
                if info.distributed and consistency_weight > 0:
                    # why: without SyncBatchNorm each rank's BatchNorm statistics follow its own
                    # shard; the averages the ranks' consistency targets come from (and the saved
                    # one, rank 0's) must stay the same for DDP to match one process and resume
                    D.broadcast_buffers(ema.module)
            step += 1

            spread = float(stats.embedding_spread)
            collapsed_steps = collapsed_steps + 1 if spread < faults.collapse_spread else 0
            if not D.all_true(collapsed_steps < faults.collapse_patience, device):
                raise CollapseError(
                    f"training collapsed at step {step}: embedding spread {spread:.4f} < "
                    f"{faults.collapse_spread} for {collapsed_steps} steps (all faces map to one "
                    f"point, SPEC §3). Last good checkpoint: "
                    f"{last_path if last_path.exists() else 'none yet'}. Try mining.rule=semi_hard, "
                    "a lower optimiser.lr or a warm-up (schedule.warmup_steps)."
                )

            dt = time.perf_counter() - t_step
            train_seconds += dt
            n_images = global_batch if triplets is None else len(idx)
            train_images += n_images
            images_window += n_images
            if bar is not None:
                bar.update(1)
            if info.is_main and (step % config.output.log_every == 0 or step == config.max_steps):
                now = time.perf_counter()
                images_per_s = images_window / max(now - t_window, 1e-9)
                mined = miner.last_stats if triplets is not None else None
                t_window, images_window = now, 0
                last_row = {
                    "step": step,
                    "epoch": stream.epoch if miner is None else miner.refreshes,
                    "loss": loss_value,
                    "classifier_loss": cls_loss_value,
                    "classifier_accuracy": cls_accuracy,
                    "consistency": cons_value,
                    "fraction_active": stats.fraction_active,
                    "num_triplets": stats.num_triplets,
                    # offline: the pairs of the last mining, not of this batch
                    "num_pairs": stats.num_pairs if mined is None else mined.num_pairs,
                    "pairs_without_negative": (
                        stats.pairs_without_negative
                        if mined is None
                        else mined.pairs_without_negative
                    ),
                    "mean_ap": stats.mean_ap,
                    "mean_an": stats.mean_an,
                    "embedding_spread": spread,
                    "grad_norm": grad_norm,
                    "lr": lr,
                    "images_per_s": images_per_s,
                    "elapsed_s": now - t_start,
                }
                logs.train(last_row)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{loss_value:.4f}",
                        active=f"{stats.fraction_active:.2f}",
                        spread=f"{spread:.2f}",
                        img_s=f"{images_per_s:.0f}",
                    )
            out_of_time = config.time_limit_minutes > 0 and (
                time.perf_counter() - t_start > 60 * config.time_limit_minutes
            )
            out_of_time = not D.all_true(not out_of_time, device)
            final = step == config.max_steps or out_of_time
            v_every = config.validation.every
            if final or (v_every > 0 and step % v_every == 0):
                t_val = time.perf_counter()
                row = validate()
                if row:
                    last_val = row
                    if not best or row["accuracy"] > best.get("accuracy", -1):
                        best = dict(row)
                        checkpoint(best_path, {"train": last_row, "validation": row})
                    if bar is not None:
                        bar.write(
                            f"step {step}: val accuracy {row['accuracy']:.4f} "
                            f"± {row['accuracy_std']:.4f}, VAL@FAR {row['val']:.4f}, "
                            f"AUC {row['auc']:.4f} (best {best['accuracy']:.4f})"
                        )
                D.barrier()
                t_window += time.perf_counter() - t_val  # why: keep validation out of images/s
            if final or step % config.output.checkpoint_every == 0:
                checkpoint(last_path, {"train": last_row, "validation": last_val})
            if out_of_time:
                stop_reason = f"time limit of {config.time_limit_minutes} min reached"
                break
    finally:
        if bar is not None:
            bar.close()
        if logs is not None:
            logs.close()
    if stop_reason and info.is_main:
        print(f"stopped at step {step}: {stop_reason}", file=sys.stderr)
    result = TrainResult(
        step=step,
        run_dir=run_dir,
        last_checkpoint=last_path if last_path.exists() else None,
        best_checkpoint=best_path if best_path.exists() else None,
        best=best,
        last_validation=last_val,
        images_per_s=train_images / train_seconds if train_seconds else 0.0,
    )
    if info.is_main:
        plot_curves(run_dir)
        if config.output.weights:
            from facenet.models.loading import load_weights_file, save_weights, training_metadata

            for name in ("best", "last"):
                p = run_dir / f"{name}.pt"
                if p.exists():
                    save_weights(
                        load_weights_file(p),
                        run_dir / f"{name}.safetensors",
                        extra={"training": training_metadata(p)},
                    )
    return result
