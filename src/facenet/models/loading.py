"""Self-describing weight files and one resolver for every way a user names a model.

A weights file is a ``.safetensors`` whose metadata holds ``facenet`` = JSON
``{"model": name, "model_kwargs": {...}, "spec": {...}, "thresholds": {...}, ...}``, so the file
alone rebuilds its model. Training checkpoints (``.pt``, see ``facenet.train.checkpoint``) carry
the same fields beside the optimiser state.

No file is ever unpickled with code execution: safetensors holds tensors and a JSON string, and
``.pt`` checkpoints are read with ``torch.load(weights_only=True)`` (tensors and plain Python
containers only, no allow-listed extras). A crafted pickle is refused with ``ModelFileError``,
never run.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facenet.models.card import card_of
from facenet.models.registry import create_model
from facenet.preprocess import ModelSpec
from facenet.utils import atomic_write, first_line

METADATA_KEY = "facenet"
MODEL_FILE_SUFFIXES = (".safetensors", ".pt", ".pth")


class ModelFileError(ValueError):
    """A weights or checkpoint file that cannot be used; ``str(e)`` names the file and why."""


def safe_torch_load(path: str | os.PathLike, map_location: str = "cpu") -> Any:
    """``torch.load`` that can never run code: tensors and plain containers only.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: a pickle holding anything else (refused, not executed), or a file that
            is not a readable torch checkpoint (corrupt, truncated, another format).
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ModelFileError(f"{path}: is a folder, not a checkpoint file")
        raise FileNotFoundError(f"{path}: no such file")
    try:
        # why: the allow-list is empty: everything a facenet checkpoint holds is tensors,
        # numbers, strings and containers, which weights_only=True admits without help (the
        # one numpy array a checkpoint held, the offline miner's pool, is saved as a tensor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on TorchScript zips etc.: ours below
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise ModelFileError(
                f"{path}: refused: it holds a Python object ({found.group(1)}) that could run "
                "code when loaded; facenet loads only tensors and plain data from .pt files"
            ) from None
        raise ModelFileError(
            f"{path}: not a readable torch checkpoint (corrupt or another format)"
        ) from None
    except OSError as e:
        if not e.strerror:
            raise ModelFileError(f"{path}: {_UNREADABLE}") from None
        raise ModelFileError(f"{path}: cannot read it ({e.strerror})") from None
    except Exception as e:  # noqa: BLE001 -- the unpickler raises anything on arbitrary bytes
        if "TorchScript" in str(e):
            raise ModelFileError(
                f"{path}: is a TorchScript export (facenet export --format torchscript), not "
                "a facenet checkpoint or weights file; use the .safetensors it was made from"
            ) from None
        raise ModelFileError(f"{path}: {_UNREADABLE}") from None


_UNREADABLE = "not a readable checkpoint (corrupt, truncated, empty or another format)"


def is_file_ref(ref: str) -> bool:
    """Whether a model reference names a file (rather than a registered or published model)."""
    return os.path.exists(ref) or ref.lower().endswith(MODEL_FILE_SUFFIXES) or os.sep in ref


def model_info(model: nn.Module) -> dict[str, Any]:
    """The fields that rebuild ``model``: registry name, factory kwargs, spec, thresholds."""
    card = card_of(model)
    info = {
        "model": card.name,
        "model_kwargs": dict(card.kwargs),
        "spec": model.spec.to_dict(),
        "thresholds": dict(card.thresholds),
    }
    if card.int8:
        info["int8"] = dict(card.int8)
    if card.compatible_with:
        info["compatible_with"] = list(card.compatible_with)
    if card.mixed_thresholds:
        info["mixed_thresholds"] = {h: dict(t) for h, t in card.mixed_thresholds.items()}
    return info


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Atomically write ``model``'s weights + self-description as safetensors.

    ``dtype`` (e.g. ``torch.float16``) stores floating tensors in that type to halve the file;
    loading casts them back to the model's own dtype.

    Raises:
        ValueError: ``model`` is an inference copy (``facenet.models.fold``): its folded weights
            do not fit the architecture its description names.
    """
    from safetensors.torch import save

    if getattr(model, "folded_from", None):
        raise ValueError("an inference copy (batch norm folded) cannot be saved: save its model")
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
        meta = _safetensors_metadata(path)
        if METADATA_KEY not in meta:
            raise ModelFileError(
                f"{path}: not a facenet weights file (no '{METADATA_KEY}' metadata)"
            )
        try:
            info = json.loads(meta[METADATA_KEY])
        except json.JSONDecodeError as e:
            raise ModelFileError(f"{path}: unreadable '{METADATA_KEY}' metadata ({e})") from None
        if not isinstance(info, dict):
            raise ModelFileError(f"{path}: '{METADATA_KEY}' metadata is not a JSON object")
        return info
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict):
        raise ModelFileError(f"{path}: not a facenet checkpoint (holds a {type(ckpt).__name__})")
    return {k: v for k, v in ckpt.items() if k not in ("model_state", "optimizer", "scheduler")}


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    if not path.is_file():
        if path.is_dir():
            raise ModelFileError(f"{path}: is a folder, not a weights file")
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelFileError(f"{path}: not a readable safetensors file ({first_line(e)})") from None


def training_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """What a training checkpoint (``.pt``) or weights file says about how it was trained:
    ``{"config", "step", "metrics", "best"}`` (empty for files that carry none)."""
    meta = read_metadata(path)
    if "training" in meta:
        return dict(meta["training"])
    return {k: meta[k] for k in ("config", "step", "metrics", "best") if k in meta}


def load_weights_file(path: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Rebuild a model from a ``.safetensors`` weights file or a ``.pt`` training checkpoint."""
    shown = os.fspath(path)  # as typed: Path drops a leading ./
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{shown}: is a folder, not a weights file")
    if path.exists() and not path.is_file():
        raise ModelFileError(f"{shown}: not a regular file (a device, pipe or socket)")
    if not path.is_file():
        raise FileNotFoundError(f"{shown}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        info = read_metadata(path)
        try:
            state = load_file(str(path), device=map_location)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise ModelFileError(
                f"{path}: not a readable safetensors file ({first_line(e)})"
            ) from None
    else:
        ckpt = safe_torch_load(path, map_location=map_location)
        if not isinstance(ckpt, dict) or "model_state" not in ckpt or "model" not in ckpt:
            raise ModelFileError(
                f"{path}: not a facenet checkpoint (needs 'model' and 'model_state')"
            )
        info, state = ckpt, ckpt["model_state"]
    return _build(path, info, state)


def check_state_fits(path: str | os.PathLike, model: nn.Module, state: Any, name: str = "") -> None:
    """Raise ``ModelFileError`` naming ``path`` unless ``state`` has exactly ``model``'s tensor
    names and shapes (one line: counts and the first of each kind of mismatch)."""
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: its weights are not a state dict")
    mine = model.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    misshapen = sorted(
        k
        for k in set(mine) & set(state)
        if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(mine[k].shape)
    )
    # why: integer tensors where the model has float weights would be cast silently
    mistyped = sorted(
        k
        for k in set(mine) & set(state) - set(misshapen)
        if state[k].is_floating_point() != mine[k].is_floating_point()
    )
    if missing or unexpected or misshapen or mistyped:
        parts = [
            f"{len(v)} {what} (first: {v[0]})"
            for what, v in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("of another shape", misshapen),
                ("of another kind of number", mistyped),
            )
            if v
        ]
        arch = name or card_of(model).name
        raise ModelFileError(
            f"{path}: its weights do not fit the architecture {arch!r}: " + ", ".join(parts)
        )


# why: what the weights file says about where its weights come from; kept on the model card
PROVENANCE_KEYS = (
    "source",
    "licence",
    "converter",
    "conversion",
    "weights_sha256",
    "training",
    "data_terms",
    "thresholds_info",
)


def _with_state(
    model: nn.Module, state: dict[str, torch.Tensor], rebuild: Callable[[], nn.Module]
) -> nn.Module:
    """``model`` (built on the meta device, its state's names and shapes checked) holding
    ``state``: CPU tensors of the model's own dtypes, exactly as ``load_state_dict`` copies them
    into a model built on the CPU. A model with tensors outside its state dict (non-persistent
    buffers) is built again on the CPU by ``rebuild`` and loaded that way instead."""
    own = model.state_dict()
    # why: the model owns its tensors (a copy), as load_state_dict's would: never views of the
    # caller's, nor of a memory-mapped file that may be rewritten under it
    state = {k: v.to(device="cpu", dtype=own[k].dtype, copy=True) for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    left_on_meta = any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    if left_on_meta:
        model = rebuild()
        model.load_state_dict(state)
    return model


def _build(path: Path, info: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """The model ``info`` describes with ``state`` loaded; errors name ``path``."""
    name = info.get("model")
    kwargs = info.get("model_kwargs") or {}
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ModelFileError(f"{path}: metadata names no model architecture")
    try:
        # why: cold start: built on the meta device, the architecture costs no memory and no
        # random initialisation (~0.1-0.3 s for Inception-ResNet-v1 on 2 cores), which the
        # loaded weights would overwrite anyway
        with torch.device("meta"):
            model = create_model(name, **kwargs)
    except (KeyError, TypeError, ValueError) as e:
        reason = e.args[0] if e.args else e
        raise ModelFileError(f"{path}: cannot build its model {name!r} ({reason})") from None
    check_state_fits(path, model, state, name)
    model = _with_state(model, state, lambda: create_model(name, **kwargs))
    return describe(model, path, info).eval()


def describe(model: nn.Module, path: Path, info: dict[str, Any]) -> nn.Module:
    """Give ``model`` what the weights file's metadata ``info`` says of it: its spec and card
    (thresholds, provenance, int8 code, harmonic compatibility and mixed-pair thresholds);
    errors name ``path``."""
    if "spec" in info:
        built = int(model.spec.embedding_dim)
        try:
            model.spec = check_spec(ModelSpec.from_dict(info["spec"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{path}: unreadable model spec ({e})") from None
        if model.spec.embedding_dim != built:
            raise ModelFileError(
                f"{path}: its spec says {model.spec.embedding_dim}-d embeddings, its network "
                f"makes {built}-d"
            )
    thresholds = info.get("thresholds") or {}
    try:
        card_of(model).set_thresholds(thresholds)
        _check_thresholds(card_of(model).thresholds, "thresholds")
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: unreadable thresholds {thresholds!r} ({e})") from None
    card = card_of(model)
    card.provenance = {k: info[k] for k in PROVENANCE_KEYS if k in info}
    card.int8 = _int8_codec(path, info.get("int8"))
    card.compatible_with = tuple(str(h) for h in info.get("compatible_with") or ())
    card.mixed_thresholds = _mixed_thresholds(path, info.get("mixed_thresholds"))
    return model


# why: the largest input side a model file may ask for (every face is resized to it)
MAX_INPUT_SIDE = 2048


def check_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` unchanged, or ``ValueError`` saying which field cannot preprocess a face."""
    sides = spec.input_size
    if len(sides) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= MAX_INPUT_SIDE for v in sides
    ):
        raise ValueError(f"input_size {list(sides)} is not two sides of 8..{MAX_INPUT_SIDE} px")
    if not isinstance(spec.embedding_dim, int) or spec.embedding_dim < 1:
        raise ValueError(f"embedding_dim {spec.embedding_dim!r} is not a positive integer")
    numbers = [*spec.mean, *spec.std, spec.crop_fraction]
    if len(spec.mean) != 3 or len(spec.std) != 3 or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"mean {list(spec.mean)} / std {list(spec.std)} are not 3 finite numbers")
    if min(spec.std) <= 0:
        raise ValueError(f"std {list(spec.std)} must be positive")
    if spec.channels not in ("rgb", "grey") or spec.normalization not in ("fixed", "per_image"):
        raise ValueError(
            f"channels {spec.channels!r} / normalization {spec.normalization!r}: expected "
            "rgb|grey and fixed|per_image"
        )
    if not 0 < spec.crop_fraction <= 4:
        raise ValueError(f"crop_fraction {spec.crop_fraction} is not in (0, 4]")
    return spec


def _check_thresholds(thresholds: dict[str, float], what: str) -> None:
    """``ValueError`` unless every threshold is a squared L2 distance of unit vectors, [0, 4]
    (a hair below 0 is calibration's "accept none", ``nextafter(0, -inf)``)."""
    bad = {k: v for k, v in thresholds.items() if not (math.isfinite(v) and -1e-6 <= v <= 4 + 1e-6)}
    if bad:
        raise ValueError(f"{what} {bad} are not squared distances in [0, 4]")


def _mixed_thresholds(path: Path, recorded: Any) -> dict[str, dict[str, float]]:
    """The recorded thresholds against other models' galleries, checked."""
    try:
        out = {
            str(h): {str(k): float(v) for k, v in dict(t).items()}
            for h, t in dict(recorded or {}).items()
        }
        for h, t in out.items():
            _check_thresholds(t, f"mixed_thresholds[{h[:12]}]")
        return out
    except (TypeError, ValueError):
        raise ModelFileError(f"{path}: unreadable mixed_thresholds {recorded!r}") from None


def _int8_codec(path: Path, recorded: Any) -> dict[str, Any]:
    """The recorded int8 codec, checked (an unreadable one names the file)."""
    if not recorded:
        return {}
    from facenet.quantize import Int8Codec

    try:
        return Int8Codec.from_dict(recorded).to_dict()
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: unreadable int8 codec ({e})") from None


def recorded_model_ref(ref: str, where: str) -> str:
    """A model reference read from data (a gallery, an embeddings file), checked before use.

    What data names is loaded exactly like what a user types (``load_model``): safetensors, or
    ``.pt`` through ``safe_torch_load``, so a swapped or crafted file can never run code; callers
    also compare the loaded weights' hash with the one recorded beside the reference.

    Raises:
        ModelFileError: ``ref`` is empty (the message says to pass ``--model``).
    """
    ref = (ref or "").strip()
    if not ref:
        raise ModelFileError(f"{where} does not say which model made it; pass --model")
    return ref


def is_untrained_ref(ref: str) -> bool:
    """Whether ``ref`` names an architecture alone (``nn4``): random weights, no thresholds."""
    return not is_file_ref(ref) and ":" not in ref


def check_trained(ref: str, allow_untrained: bool = False) -> None:
    """Refuse a model with random weights where answers are expected from it.

    Raises:
        ValueError: ``ref`` names no weights and ``allow_untrained`` is False.
    """
    if is_untrained_ref(ref) and not allow_untrained:
        raise ValueError(
            f"model {ref!r} names an architecture without weights: its answers would be random. "
            f"Pass trained weights (a .safetensors/.pt file or NAME:PRETRAINED, e.g. "
            f"'inception_resnet_v1:casia-webface'), or --allow-untrained for tests"
        )


def load_model(ref: str, map_location: str = "cpu") -> nn.Module:
    """Resolve what a user typed into a ready model (eval mode).

    - a path to ``.safetensors`` / ``.pt``: that file;
    - ``NAME:PRETRAINED`` (e.g. ``inception_resnet_v1:casia-webface``): published weights;
    - ``NAME``: a registered architecture, randomly initialised.
    """
    if is_file_ref(ref):
        return load_weights_file(ref, map_location)
    name, colon, pretrained = ref.partition(":")
    if colon and not pretrained.strip():
        # why: "resnet_cpu:" would otherwise load random weights past check_trained
        raise ValueError(
            f"model {ref!r}: no pretrained name after ':' (e.g. 'resnet_cpu:lfw-celeba'; "
            "`facenet models` lists the architectures)"
        )
    model = create_model(name, pretrained=pretrained or None)
    return model.to(map_location).eval()
