"""Training configuration: frozen dataclasses with a comment per field, YAML + overrides.

A run is described by one ``Config``. It is loaded from YAML (``load_config``), adjusted with
``key.sub=value`` overrides from the command line (values parsed as YAML), and written back
resolved beside the run and inside every checkpoint, so a checkpoint alone says how it was made.
"""

from __future__ import annotations

import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny"  # registry name (see `facenet models`)
    kwargs: dict[str, Any] = field(default_factory=dict)  # factory kwargs, e.g. embedding_dim
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU and tensor cores
    sync_batchnorm: bool = True  # SyncBatchNorm under DDP on CUDA (GPU-only in PyTorch)
    # fine-tuning: start from these weights ("NAME:PRETRAINED" or a .safetensors/.pt file of
    # model.name's architecture) instead of the seed's random initialisation; "" = from scratch
    init: str = ""
    # fine-tuning: parameter-name prefixes (e.g. [conv1, block35]) kept frozen for the first
    # freeze_steps steps, so a new head settles before it reshapes the early features
    freeze: tuple[str, ...] = ()
    freeze_steps: int = 0


@dataclass(frozen=True)
class AugmentConfig:
    random_crop: bool = True  # random crop of input size from the cached image (else centre)
    flip: bool = True  # horizontal flip with probability 1/2
    brightness: float = 0.2  # multiply by U(1-b, 1+b)
    contrast: float = 0.2  # blend with the image mean by U(1-c, 1+c)
    saturation: float = 0.2  # blend with greyscale by U(1-s, 1+s)
    jpeg_probability: float = 0.0  # re-encode as JPEG with this probability (robustness, SPEC §6)
    jpeg_quality: tuple[int, int] = (30, 95)  # quality drawn uniformly from this range
    # geometric jitter around the crop window (one affine warp): zoom factor drawn from
    # ``scale`` (> 1 zooms in) and a rotation of up to ``rotate`` degrees either way
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0
    # resolution jitter: with this probability shrink the face to a side drawn from
    # [low_res_min, input side) and enlarge it back (LFW holds many small, blurry faces)
    low_res_probability: float = 0.0
    low_res_min: int = 32
    grey_probability: float = 0.0  # replace the colours by their luma with this probability
    # random erasing (Zhong et al., AAAI 2020): with this probability fill one rectangle covering
    # a fraction of the input drawn from ``erase_area`` (aspect ratio 0.3-3.3) with noise, the
    # occlusions (hands, glasses, microphones) a metric learned from few identities must ignore
    erase_probability: float = 0.0
    erase_area: tuple[float, float] = (0.02, 0.25)


@dataclass(frozen=True)
class DataConfig:
    roots: tuple[str, ...] = ()  # folder-per-identity roots (e.g. `facenet align` outputs)
    synthetic_identities: int = 0  # > 0: use facenet.data.synthetic instead of roots (tests)
    synthetic_images_per_identity: int = 8  # images per synthetic identity
    min_images_per_identity: int = 2  # an identity needs an anchor and a positive
    max_identities: int = 0  # keep at most this many identities (0 = all), for quick runs
    # person-disjoint split against LFW: "lfw_view1" drops peopleDevTest.txt people,
    # "lfw_folds" drops people of fold `test_fold` of people.txt, "none" keeps everyone.
    split: Literal["none", "lfw_view1", "lfw_folds"] = "none"
    lfw_dir: str = ""  # folder with LFW protocol files; "" = <shared data>/lfw
    test_fold: int = 0  # held-out fold of people.txt for split="lfw_folds" (0..9)
    exclude_people: tuple[str, ...] = ()  # extra people-list files whose people are dropped
    stored_size: int = 0  # side of cached images in pixels; 0 = input size * 8/7 (crop room)
    # centre fraction of each image kept before resizing into the cache (training and
    # validation images alike): 1.0 for `facenet align` crops; ~0.6 for deep-funneled LFW
    # originals, whose face spans about 1/2.2 of the 250 px frame.
    crop_fraction: float = 1.0
    cache_dir: str = "~/.cache/facenet/images"  # decoded uint8 caches, reused across runs
    decode_threads: int = 2  # threads decoding JPEGs while building the cache
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class SamplerConfig:
    # why: the paper used ~1,800-face batches with ~40 faces per identity (SPEC §3): 45 x 40.
    identities_per_batch: int = 45  # P identities in each global batch
    images_per_identity: int = 40  # K faces per identity
    extra_negatives: int = 0  # random extra faces per global batch (negatives only)


@dataclass(frozen=True)
class MiningConfig:
    rule: str = "semi_hard"  # see facenet.losses.RULES; the paper's rule is semi_hard
    margin: float = 0.2  # why: alpha = 0.2 in the paper (SPEC §2)
    # "online": mine within each training batch (what the paper's results use); "offline":
    # every refresh_every steps embed a fresh identity-balanced subset with the current model,
    # mine it with `rule`, and train on batches of those triplets (SPEC §3's alternative,
    # facenet.train.offline; one process only). The sampler section is then unused.
    strategy: Literal["online", "offline"] = "online"
    refresh_every: int = 100  # offline: steps between two minings
    subset_identities: int = 200  # offline: identities in each mined subset
    subset_images_per_identity: int = 20  # offline: faces per identity in the subset
    triplets_per_batch: int = 600  # offline: mined triplets in each training batch


@dataclass(frozen=True)
class OptimiserConfig:
    name: Literal["adagrad", "sgd", "adamw"] = "adagrad"  # why: AdaGrad is the paper's (SPEC §4)
    lr: float = 0.05  # why: the paper's initial learning rate (SPEC §4)
    weight_decay: float = 0.0  # L2 (adagrad, sgd) or decoupled (adamw) weight decay
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adamw only
    eps: float = 1e-8  # adamw / adagrad denominator epsilon
    initial_accumulator_value: float = 0.1  # adagrad only (TensorFlow's default)
    grad_clip: float = 0.0  # clip the global gradient norm to this (0 = off)
    # exponential moving average of the weights (facenet.train.ema), validated, checkpointed and
    # exported instead of the raw weights; 0 = off, e.g. 0.998 (a ~500-step memory)
    ema_decay: float = 0.0


@dataclass(frozen=True)
class ScheduleConfig:
    name: Literal["constant", "cosine", "step", "linear"] = "constant"  # shape after warm-up
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps
    min_lr_ratio: float = 0.0  # cosine/linear floor as a fraction of the initial lr
    milestones: tuple[int, ...] = ()  # step schedule: multiply by gamma at each of these steps
    gamma: float = 0.1  # step schedule factor


@dataclass(frozen=True)
class ValidationConfig:
    # pairs file ("" = <lfw_dir>/pairsDevTest.txt); "synthetic" = pairs of held-out synthetic ids
    pairs: str = ""
    root: str = ""  # folder-per-identity images of the pairs' people (aligned LFW)
    every: int = 500  # validate every this many steps (and at the end); 0 = only at the end
    far_target: float = 1e-3  # why: the paper reports VAL at FAR = 1e-3 (SPEC §6)
    folds: int = 10  # k-fold threshold selection, as LFW's protocol
    batch_size: int = 256  # images per forward pass while embedding
    flip: bool = False  # add the embedding of the mirrored image (test-time augmentation)


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/train"  # run folder: config.yaml, checkpoints, logs, curves
    checkpoint_every: int = 200  # write last.pt every this many steps (and at the end)
    log_every: int = 10  # CSV / TensorBoard row every this many steps
    tensorboard: bool = True  # write TensorBoard events (needs the `train` extra)
    progress: bool = True  # tqdm progress bar on stderr
    weights: bool = True  # also write best/last weights as safetensors at the end


@dataclass(frozen=True)
class DistillConfig:
    # the teacher whose embedding geometry the student learns besides the triplet loss (any
    # model name, "NAME:PRETRAINED" or weights file); "" = no distillation. Its embeddings of
    # every training face (and of its mirror) are computed once, in the teacher's own framing,
    # and cached beside the decoded faces (facenet.train.teacher)
    teacher: str = ""
    # squared L2 between the student's embedding and the teacher's, projected onto the top
    # principal directions of the teacher's training embeddings when the dimensions differ (and,
    # with harmonic.model, rotated into the old model's frame: the same distances, oriented as
    # close to v1's embeddings as a rotation gets, so the two terms do not pull apart)
    embedding_weight: float = 1.0
    # squared difference of the batch's pairwise cosine similarities, student vs teacher
    relation_weight: float = 1.0
    # consistent teaching: the teacher also embeds each step's augmented faces, exactly as the
    # student sees them (resized to its input), and those are the targets; the cached clean
    # faces then only fix the projection (and harmonic rotation). Each step costs one teacher
    # pass more; the student no longer learns fixed targets for distorted copies, which is
    # where distillation from few faces stalls (Beyer et al., CVPR 2022). A non-square student
    # sees the centre window of the square face the teacher sees
    online: bool = False
    # what runs the teacher (and harmonic.model)
    backend: Literal["torch", "onnxruntime"] = "torch"
    batch_size: int = 64  # faces per teacher forward pass
    cache: str = ""  # the teacher cache file; "" = keyed by teacher, framing and faces


@dataclass(frozen=True)
class HarmonicConfig:
    # harmonic embeddings (SPEC §6): the old model (v1) whose stored embeddings this model's
    # must be comparable with, e.g. resnet_cpu:lfw-celeba; "" = off. v1 is frozen: its
    # embeddings of the training faces are computed once and cached (as distill.teacher's), and
    # triplets mixing them with this model's are trained on (facenet.losses.harmonic). The
    # weights record v1's hash (ModelCard.compatible_with): v1 galleries accept their probes.
    model: str = ""
    weight: float = 1.0  # weight of the mixed triplets' loss
    cache: str = ""  # v1's embedding cache; "" = keyed by model, framing and faces


@dataclass(frozen=True)
class FaultConfig:
    # collapse: all embeddings converging to one point (SPEC §3), seen as the batch's
    # embedding spread (sqrt of total variance: ~1 spread over the sphere, 0 = one point).
    collapse_spread: float = 0.1  # spread below this counts as collapsed
    collapse_patience: int = 20  # consecutive collapsed steps before the run stops


@dataclass(frozen=True)
class Config:
    seed: int = 0  # every random stream is derived from (seed, step)
    max_steps: int = 1000  # optimiser steps of the run; schedules are functions of the step
    # also stop (with a checkpoint) after this much training time, summed over resumes (0 = off)
    time_limit_minutes: float = 0.0
    device: str = "auto"  # "auto" (cuda if present), "cpu", "cuda", "cuda:1", ...
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype on CUDA; CPU uses fp32
    threads: int = 0  # torch intra-op threads (0 = leave PyTorch's default)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    harmonic: HarmonicConfig = field(default_factory=HarmonicConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)


class ConfigError(ValueError):
    """A config file or override that does not fit the dataclasses."""


# why: options that were measured, did not help (README) and left the code; a config that still
# names one is told so, and where to find it, instead of reading "unknown key"
LAST_COMMIT_WITH_REMOVED = "b0f95e6"
REMOVED: dict[str, str] = {
    "classifier": "the CosFace identity classifier beside the triplet loss",
    "optimiser.sam_rho": "sharpness-aware minimisation, SAM",
    "optimiser.sam_start_step": "sharpness-aware minimisation, SAM",
    "optimiser.ema_consistency": "mean-teacher consistency with the weight average",
}


def _check_not_removed(key: str) -> None:
    """``ConfigError`` when ``key`` (dotted) is, or lies under, a removed option."""
    parts = key.split(".")
    for i in range(1, len(parts) + 1):
        option = ".".join(parts[:i])
        if option in REMOVED:
            raise ConfigError(
                f"{key}: option removed ({REMOVED[option]}; it did not help, see README); "
                f"commit {LAST_COMMIT_WITH_REMOVED} is the last that has it"
            )


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` (tuples, nested dataclasses, numbers)."""
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, f"{where}." if where else "")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        if isinstance(value, str | int | float):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(
            _coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # why: YAML 1.1 (PyYAML) reads 3e-5 (no dot) as a string, as does an override
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        return str(value)
    return value


def _from_dict(cls: type, d: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    for k in unknown:
        _check_not_removed(where + k)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(where + k for k in unknown)}; "
            f"valid keys{' under ' + where.rstrip('.') if where else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, where + k) for k, v in d.items()}
    return cls(**kwargs)


def config_from_dict(d: dict[str, Any]) -> Config:
    """Build a ``Config`` from a nested mapping (missing keys take their defaults)."""
    return _from_dict(Config, d or {})


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) — what is written to YAML and into checkpoints."""

    def plain(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(config)


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``0.1``, ``[a, b]``, ``true``).

    Raises ``ConfigError`` naming the key when it does not exist or the value does not fit.
    """
    d = config_to_dict(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        _check_not_removed(key.strip())
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            problem = " ".join(str(getattr(e, "problem", None) or e).split())
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({problem})"
            ) from None
        node, section = d, config  # the dict being edited and the config object it mirrors
        parts = key.strip().split(".")
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = node[p]
            section = getattr(section, p) if is_dataclass(section) else None
        # why: a dataclass section has a fixed set of keys; a mapping field (model.kwargs) is
        # free-form and takes new ones
        if is_dataclass(section):
            if parts[-1] not in node:
                raise ConfigError(
                    f"override {item!r}: unknown key {key!r}; valid here: {', '.join(sorted(node))}"
                )
            if is_dataclass(getattr(section, parts[-1])):
                raise ConfigError(f"override {item!r}: {key!r} is a section; set one of its keys")
        node[parts[-1]] = value
    return config_from_dict(d)


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read a YAML config (``None`` = all defaults) and apply command-line overrides."""
    d: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a config file")
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: unreadable ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = config_from_dict(d)
    except ConfigError as e:
        if path is None:
            raise
        raise ConfigError(f"{path}: {e}") from e
    return check_config(apply_overrides(config, overrides))


# key -> (lowest, highest, whether the ends are allowed), for a number or each number of a tuple;
# values outside stop the run before it starts, with the key named (a 0 here would divide by zero
# or train on nothing much later)
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "max_steps": (1, math.inf, True, True),
    "time_limit_minutes": (0, math.inf, True, True),
    # why: libgomp fails (or crashes) creating thousands of threads
    "threads": (0, 1024, True, True),
    "data.synthetic_identities": (0, math.inf, True, True),
    "data.synthetic_images_per_identity": (1, math.inf, True, True),
    "data.min_images_per_identity": (1, math.inf, True, True),
    "data.max_identities": (0, math.inf, True, True),
    "data.stored_size": (0, math.inf, True, True),
    "data.crop_fraction": (0, 1, False, True),
    "data.decode_threads": (1, 1024, True, True),
    "data.augment.brightness": (0, 1, True, True),  # factors U(1-b, 1+b) stay >= 0
    "data.augment.contrast": (0, 1, True, True),
    "data.augment.saturation": (0, 1, True, True),
    "data.augment.jpeg_probability": (0, 1, True, True),
    "data.augment.rotate": (0, 180, True, True),
    "data.augment.low_res_probability": (0, 1, True, True),
    "data.augment.low_res_min": (2, math.inf, True, True),
    "data.augment.grey_probability": (0, 1, True, True),
    "data.augment.erase_probability": (0, 1, True, True),
    "sampler.identities_per_batch": (2, math.inf, True, True),
    "sampler.images_per_identity": (2, math.inf, True, True),
    "sampler.extra_negatives": (0, math.inf, True, True),
    "mining.margin": (0, math.inf, True, True),
    "optimiser.lr": (0, math.inf, False, True),
    "optimiser.weight_decay": (0, math.inf, True, True),
    "optimiser.eps": (0, math.inf, False, True),
    "optimiser.momentum": (0, 1, True, False),
    "optimiser.betas": (0, 1, True, False),  # each of the two, in any order
    "optimiser.initial_accumulator_value": (0, math.inf, True, True),
    "optimiser.grad_clip": (0, math.inf, True, True),
    "optimiser.ema_decay": (0, 1, True, False),  # 0 = off; 1 would never move
    "schedule.warmup_steps": (0, math.inf, True, True),
    "schedule.min_lr_ratio": (0, 1, True, True),
    "schedule.gamma": (0, math.inf, False, True),
    "validation.every": (0, math.inf, True, True),
    "validation.far_target": (0, 1, False, False),
    "validation.folds": (2, math.inf, True, True),
    "validation.batch_size": (1, math.inf, True, True),
    "output.checkpoint_every": (1, math.inf, True, True),
    "output.log_every": (1, math.inf, True, True),
    "faults.collapse_patience": (1, math.inf, True, True),
    "faults.collapse_spread": (0, 2, True, True),  # the spread of unit vectors is at most ~1.4
    "model.freeze_steps": (0, math.inf, True, True),
    "distill.embedding_weight": (0, math.inf, True, True),
    "distill.relation_weight": (0, math.inf, True, True),
    "distill.batch_size": (1, math.inf, True, True),
    "harmonic.weight": (0, math.inf, True, True),
}


def check_ranges(config: Config) -> Config:
    """``config`` unchanged, or ``ConfigError`` naming the first key outside its ``RANGES``."""
    for key, (low, high, low_ok, high_ok) in RANGES.items():
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        inside = all(
            math.isfinite(v)
            and (low < v or (low_ok and v == low))
            and (v < high or (high_ok and v == high))
            for v in (value if isinstance(value, tuple) else (value,))
        )
        if not inside:
            shown = f"{'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
            raise ConfigError(f"{key}={value!r} is out of range: must be in {shown}")
    return config


# key -> (lowest, highest) of a [low, high] pair setting: both ends inside, low <= high
PAIR_RANGES: dict[str, tuple[float, float]] = {
    "data.augment.jpeg_quality": (1, 100),
    "data.augment.scale": (0.05, 20),
    "data.augment.erase_area": (1e-6, 1),
}


def check_pairs(config: Config) -> Config:
    """``config`` unchanged, or ``ConfigError`` naming the first pair outside ``PAIR_RANGES``
    or in the wrong order."""
    for key, (low, high) in PAIR_RANGES.items():
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        a, b = value
        if not (low <= a <= b <= high):
            raise ConfigError(
                f"{key}={list(value)} is out of range: must be [low, high] with "
                f"{low:g} <= low <= high <= {high:g}"
            )
    return config


def check_config(config: Config, world_size: int = 1) -> Config:
    """``config`` unchanged, or ``ConfigError`` naming what cannot run: a key outside its
    ``RANGES``, offline mining with a size below 1, offline mining in ``world_size`` > 1 processes.

    ``load_config`` calls it with one process; ``facenet.train.loop.train`` again with the real
    world size, before any work.
    """
    check_ranges(config)
    check_pairs(config)
    check_online_teacher(config.distill)
    mining = config.mining
    if mining.strategy != "offline":
        return config
    sizes = {
        "refresh_every": mining.refresh_every,
        "subset_identities": mining.subset_identities,
        "subset_images_per_identity": mining.subset_images_per_identity,
        "triplets_per_batch": mining.triplets_per_batch,
    }
    bad = [f"mining.{k}={v}" for k, v in sizes.items() if v < 1]
    if bad:
        raise ConfigError(f"offline mining needs positive sizes: {', '.join(bad)}")
    if world_size > 1:
        raise ConfigError(
            "mining.strategy=offline runs in one process; under torchrun use online mining "
            "(the global batch is mined across ranks)"
        )
    return config


def check_online_teacher(d: DistillConfig) -> None:
    """``ConfigError`` for ``distill.online`` that would do nothing or only cost time."""
    if not d.online:
        return
    if not d.teacher:
        raise ConfigError("distill.online=true needs a distill.teacher to run on each batch")
    if d.embedding_weight == 0 and d.relation_weight == 0:
        raise ConfigError(
            "distill.online=true with distill.embedding_weight and distill.relation_weight both "
            "0: the teacher would run on every batch for no loss term"
        )


def dump_config(config: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
