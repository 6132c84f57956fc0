"""Self-describing, atomically written training checkpoints.

A checkpoint (``.pt``) holds everything to rebuild the model without the config file (model
name, factory kwargs, ``ModelSpec``, weights, calibrated thresholds — the keys
``facenet.models.loading.load_weights_file`` reads) and everything to continue training
bit-exactly (config, step, optimiser state, sampler state, RNG states, metric history).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facenet.models.loading import (
    ModelFileError,
    load_weights_file,
    model_info,
    safe_torch_load,
    save_weights,
    training_metadata,
)
from facenet.utils import atomic_write

FORMAT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copy of the weights; SyncBatchNorm layers save under BatchNorm's names."""
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def checkpoint_dict(
    model: nn.Module,
    *,
    config: dict[str, Any],
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    sampler_state: dict[str, Any] | None = None,
    rng_state: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    best: dict[str, Any] | None = None,
    thresholds: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint of ``model`` and a run's state, as ``save_checkpoint`` writes it.

    Keys: ``format_version``, ``model`` (registry name), ``model_kwargs``, ``spec`` (dict),
    ``model_state``, ``thresholds``, ``config``, ``step``, ``optimizer``, ``scheduler``
    (``{"step": step}``: schedules are pure functions of the step), ``sampler``, ``rng``,
    ``metrics`` (latest training + validation values), ``best``, and ``extra``'s keys.
    """
    bare = unwrap(model)
    info = model_info(bare)  # registry name, factory kwargs, spec, thresholds
    return {
        "format_version": FORMAT_VERSION,
        "model": info["model"],
        "model_kwargs": info["model_kwargs"],
        "spec": info["spec"],
        "model_state": model_state_dict(bare),
        "thresholds": dict(thresholds or info["thresholds"]),
        "config": config,
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": {"step": int(step)},
        "sampler": sampler_state,
        "rng": rng_state,
        "metrics": metrics or {},
        "best": best or {},
    } | (extra or {})


def write_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> Path:
    """Write ``ckpt`` atomically (temporary file, fsync, rename)."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    path = Path(path)
    with atomic_write(path) as f:
        f.write(buf.getbuffer())
    return path


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **fields: Any) -> Path:
    """Write ``checkpoint_dict(model, **fields)`` atomically (see ``checkpoint_dict``)."""
    return write_checkpoint(path, checkpoint_dict(model, **fields))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (CPU tensors); never runs code
    (``facenet.models.loading.safe_torch_load``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    # why: tensors and plain data only; a crafted last.pt is refused, never executed
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict):
        raise ModelFileError(f"{path}: not a facenet training checkpoint")
    for key in ("model", "model_state", "config", "step"):
        if key not in ckpt:
            raise ValueError(f"{path}: not a facenet training checkpoint (missing {key!r})")
    return ckpt


def export_weights(run_dir: Path, annotate: Callable[[nn.Module], None] | None = None) -> None:
    """``best.safetensors`` / ``last.safetensors`` beside the run's ``.pt`` checkpoints: the
    weights, spec and thresholds the applications load, with the training record, and what
    ``annotate(model)`` adds to the model's card (the int8 code, harmonic compatibility)."""
    for name in ("best", "last"):
        path = run_dir / f"{name}.pt"
        if path.exists():
            model = load_weights_file(path)
            if annotate is not None:
                annotate(model)
            save_weights(
                model, run_dir / f"{name}.safetensors", extra={"training": training_metadata(path)}
            )


def rng_states() -> dict[str, Any]:
    """The global torch RNG states (dropout etc. draw from them)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict[str, Any] | None) -> None:
    """Inverse of ``rng_states``."""
    if not state:
        return
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
