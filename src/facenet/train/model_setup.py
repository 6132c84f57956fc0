"""The network a run trains: built from the seed or from ``model.init``'s weights (fine-tuning),
its frozen stages checked, the framing training validates with recorded in its spec, and a
converted model's folded batch norms given their statistics back before fine-tuning."""

from __future__ import annotations

import dataclasses
import sys
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from facenet.config import Config, ConfigError
from facenet.data.augment import center_windows
from facenet.models import create_model
from facenet.models.loading import check_spec, check_state_fits, check_trained, load_model
from facenet.models.unfold import unfold_identity_batchnorm
from facenet.preprocess import ModelSpec, preprocess
from facenet.train import distributed as D
from facenet.train.data import TrainData, stored_size


def build_model(
    config: Config, info: D.DistInfo, resumed_spec: dict[str, Any] | None = None
) -> nn.Module:
    """The network, initialised from the seed (the only use of the global RNG besides dropout),
    or from ``model.init``'s weights (fine-tuning). A resumed run (``resumed_spec``: its
    checkpoint's spec) takes its weights from the checkpoint later, so ``model.init`` is not
    read again: only the preprocessing it gave the run."""
    torch.manual_seed(config.seed)
    model = _create(config)
    if config.model.init and resumed_spec is not None:
        spec = ModelSpec.from_dict(resumed_spec)
        model.spec = dataclasses.replace(spec, crop_fraction=model.spec.crop_fraction)
    elif config.model.init:
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


def _create(config: Config) -> nn.Module:
    """``create_model(model.name, **model.kwargs)``; ``ConfigError`` naming the setting when the
    factory refuses its kwargs or the model cannot train on its augmentation settings."""
    kwargs = config.model.kwargs
    dim = kwargs.get("embedding_dim", 1)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"model.kwargs.embedding_dim={dim!r}: must be a positive integer")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = create_model(config.model.name, **kwargs)
            check_spec(model.spec)  # e.g. a list where the factory takes one side
    except KeyError as e:
        raise ConfigError(f"model.name={config.model.name!r}: {e.args[0]}") from None
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(
            f"model.kwargs={kwargs!r}: {config.model.name} cannot be built with them ({e})"
        ) from None
    side = min(model.spec.input_size)
    augment = config.data.augment
    if augment.low_res_probability > 0 and augment.low_res_min >= side:
        raise ConfigError(
            f"data.augment.low_res_min={augment.low_res_min} must be below the model's input "
            f"side ({side} px), the size faces are shrunk from"
        )
    return model


def load_reference(key: str, ref: str) -> nn.Module:
    """The trained model a setting names (``model.init``, ``distill.teacher``,
    ``harmonic.model``); ``ConfigError`` naming the setting when ``ref`` is not a model, is an
    architecture without weights, or its file cannot be read."""
    try:
        check_trained(ref)
        return load_model(ref)
    except KeyError as e:
        raise ConfigError(f"{key}={ref}: {e.args[0] if e.args else e}") from None
    except (OSError, ValueError) as e:  # ModelFileError is a ValueError
        text = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.strerror else e
        raise ConfigError(f"{key}={ref}: {text}") from None


def _load_init(model: nn.Module, ref: str) -> None:
    """Start ``model`` from the weights of ``ref`` (same architecture and kwargs), taking its
    preprocessing (normalisation) too; the framing is recorded afresh from the data config."""
    source = load_reference("model.init", ref)
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
