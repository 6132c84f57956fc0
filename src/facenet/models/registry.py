"""Model registry: one decorated factory per model, ``create_model(name, **kw)``.

Family modules are imported on the first lookup, not at package import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from facenet.models.card import ModelCard

# why: modules that hold ``@register_model`` factories; imported lazily on first lookup.
_FAMILY_MODULES = (
    "facenet.models.tiny",
    "facenet.models.zeiler_fergus",
    "facenet.models.inception",
    "facenet.models.inception_resnet_v1",
    "facenet.models.resnet",
)

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_loaded = False


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects as input and what it returns; preprocessing reads it from the model."""

    name: str  # registry name of the architecture
    input_size: tuple[int, int]  # (height, width) of the face crop in pixels
    embedding_dim: int = 128  # length of the L2-normalised output vector
    channels: Literal["rgb", "grey"] = "rgb"  # channel order of the input tensor
    # "fixed": (x - mean) / std per channel; "per_image": subtract the image's mean, divide by
    # its std (Sandberg's "prewhiten"); pixel values x are in [0, 255].
    normalization: Literal["fixed", "per_image"] = "fixed"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)  # per-channel, 0..255 scale
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)  # per-channel, 0..255 scale
    # Framing: the model sees the centre ``crop_fraction`` of a standard face crop (detector box
    # + a margin of 32/160 of the crop side, Sandberg's protocol, as `facenet align` writes).
    # 1.0 for published models; a model trained on random crops of cached faces records the
    # centre fraction its validation used, and eval / the apps crop the same way.
    crop_fraction: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # family-specific notes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        d = dict(d)
        d["input_size"] = tuple(d["input_size"])
        d["mean"] = tuple(d.get("mean", (127.5,) * 3))
        d["std"] = tuple(d.get("std", (128.0,) * 3))
        d["crop_fraction"] = float(d.get("crop_fraction", 1.0))  # older files: the standard crop
        return cls(**d)


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name."""
    name = fn.__name__
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    for module in _FAMILY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:  # a family file not written yet must not break the rest
            if e.name != module:
                raise
    _loaded = True


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def create_model(name: str, *, pretrained: str | None = None, **kwargs: Any) -> nn.Module:
    """Build model ``name`` (kwargs go to its factory, e.g. ``embedding_dim``).

    ``pretrained`` names published weights (see ``facenet.models.pretrained``).
    Raises ``KeyError`` listing the valid names when ``name`` is unknown.
    """
    _load_families()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if pretrained is not None:
        from facenet.models.pretrained import load_pretrained

        return load_pretrained(name, pretrained, **kwargs)
    model = _REGISTRY[name](**kwargs)
    # why: a saved model rebuilds itself from these (see facenet.models.loading).
    model.card = ModelCard(name=name, kwargs=dict(kwargs))
    return model


def get_spec(name: str, **kwargs: Any) -> ModelSpec:
    """The ``ModelSpec`` of model ``name`` (builds it once; models are small to construct)."""
    return create_model(name, **kwargs).spec
