"""The network a run trains: built from the seed or from ``model.init``'s weights (fine-tuning),
its frozen stages checked, the framing training validates with recorded in its spec, and a
converted model's folded batch norms given their statistics back before fine-tuning."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch
from torch import nn

from facenet.config import Config, ConfigError
from facenet.data.augment import center_windows
from facenet.models import create_model
from facenet.models.loading import check_state_fits, load_model
from facenet.models.unfold import unfold_identity_batchnorm
from facenet.preprocess import preprocess
from facenet.train import distributed as D
from facenet.train.data import TrainData, stored_size


def build_model(config: Config, info: D.DistInfo) -> nn.Module:
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


def unfold_batchnorm(model: nn.Module, data: TrainData, config: Config, info: D.DistInfo) -> None:
    """A model converted from a frozen graph (batch norm folded: identity statistics) gets its
    batch norms' statistics back from (seeded) training faces before fine-tuning, so that train
    mode normalises as the original was trained (``facenet.models.unfold``); eval is unchanged."""
    images = data.images
    rng = np.random.default_rng(config.seed)
    pick = np.sort(rng.choice(len(images), min(len(images), UNFOLD_FACES), replace=False))
    fmt = torch.channels_last if config.model.channels_last else torch.contiguous_format

    def batches():
        for start in range(0, len(pick), 64):
            crops = center_windows(images[pick[start : start + 64]], model.spec.input_size)
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


def _record_framing(model: nn.Module, crop_fraction: float) -> None:
    """Write the face framing training validated with into the model's spec."""
    model.spec = dataclasses.replace(model.spec, crop_fraction=crop_fraction)
