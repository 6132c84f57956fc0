"""Model registry: one decorated factory per model, ``create_model(name, **kw)``.

Family modules are imported on the first lookup, not at package import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from facenet.models.card import ModelCard
from facenet.preprocess import ModelSpec

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
        # why: published weights are loaded from a file that names its architecture, which is
        # built here: a mutual recursion kept in the models layer (docs/architecture.md)
        from facenet.models.pretrained import load_pretrained

        return load_pretrained(name, pretrained, **kwargs)
    model = _REGISTRY[name](**kwargs)
    # why: a saved model rebuilds itself from these (see facenet.models.loading).
    model.card = ModelCard(name=name, kwargs=dict(kwargs))
    return model


def get_spec(name: str, **kwargs: Any) -> ModelSpec:
    """The ``ModelSpec`` of model ``name`` (builds it once; models are small to construct)."""
    return create_model(name, **kwargs).spec
