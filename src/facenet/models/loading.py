"""Self-describing weight files and one resolver for every way a user names a model.

A weights file is a ``.safetensors`` whose metadata holds ``facenet`` = JSON
``{"model": name, "model_kwargs": {...}, "spec": {...}, "thresholds": {...}, ...}``, so the file
alone rebuilds its model. Training checkpoints (``.pt``, see ``facenet.train.checkpoint``) carry
the same fields beside the optimiser state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facenet.models.registry import ModelSpec, create_model
from facenet.utils import atomic_write

METADATA_KEY = "facenet"


def model_info(model: nn.Module) -> dict[str, Any]:
    """The fields that rebuild ``model``: registry name, factory kwargs, spec, thresholds."""
    return {
        "model": getattr(model, "model_name", model.spec.name),
        "model_kwargs": dict(getattr(model, "model_kwargs", {})),
        "spec": model.spec.to_dict(),
        "thresholds": dict(getattr(model, "thresholds", None) or {}),
    }


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Atomically write ``model``'s weights + self-description as safetensors.

    ``dtype`` (e.g. ``torch.float16``) stores floating tensors in that type to halve the file;
    loading casts them back to the model's own dtype.
    """
    from safetensors.torch import save

    info = model_info(model) | (extra or {})
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous()
    blob = save(state, metadata={METADATA_KEY: json.dumps(info)})
    path = Path(path)
    with atomic_write(path) as f:
        f.write(blob)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``facenet`` metadata of a weights file (safetensors) or checkpoint (.pt)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if METADATA_KEY not in meta:
            raise ValueError(f"{path}: not a facenet weights file (no '{METADATA_KEY}' metadata)")
        return json.loads(meta[METADATA_KEY])
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return {k: v for k, v in ckpt.items() if k not in ("model_state", "optimizer", "scheduler")}


def training_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """What a training checkpoint (``.pt``) or weights file says about how it was trained:
    ``{"config", "step", "metrics", "best"}`` (empty for files that carry none)."""
    meta = read_metadata(path)
    if "training" in meta:
        return dict(meta["training"])
    return {k: meta[k] for k in ("config", "step", "metrics", "best") if k in meta}


def load_weights_file(path: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Rebuild a model from a ``.safetensors`` weights file or a ``.pt`` training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        info = read_metadata(path)
        state = load_file(str(path), device=map_location)
    else:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        if "model_state" not in ckpt or "model" not in ckpt:
            raise ValueError(f"{path}: not a facenet checkpoint (needs 'model' and 'model_state')")
        info, state = ckpt, ckpt["model_state"]
    model = create_model(info["model"], **info.get("model_kwargs", {}))
    model.load_state_dict(state)
    if "spec" in info:
        model.spec = ModelSpec.from_dict(info["spec"])
    model.thresholds = dict(info.get("thresholds") or {})
    return model.eval()


def load_model(ref: str, map_location: str = "cpu") -> nn.Module:
    """Resolve what a user typed into a ready model (eval mode).

    - a path to ``.safetensors`` / ``.pt``: that file;
    - ``NAME:PRETRAINED`` (e.g. ``inception_resnet_v1:casia-webface``): published weights;
    - ``NAME``: a registered architecture, randomly initialised.
    """
    if os.path.exists(ref) or ref.endswith((".safetensors", ".pt", ".pth")):
        return load_weights_file(ref, map_location)
    name, _, pretrained = ref.partition(":")
    model = create_model(name, pretrained=pretrained or None)
    return model.to(map_location).eval()
