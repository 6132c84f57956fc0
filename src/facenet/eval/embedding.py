"""Embeddings for every image a protocol file names: batched, optional flips, cached on disk.

Pipeline per image (each step recorded in the cache key):

1. ``load_image`` (uint8 RGB);
2. the face crop, by ``align``:
   - ``"center"``: the central ``center_fraction`` of the frame (default 0.6, i.e. 150x150 of
     LFW's deep-funneled 250x250, where the face spans about 1/2.2 of the width = ~114 px, so the
     crop is the face plus ~18 px of margin on each side: close to a detector box with margin);
   - ``"box"`` / ``"similarity"``: the image is already a face crop written by ``facenet align``
     (``--data`` points at the aligned folder), or, when an ``aligner`` callable is given, it
     runs on the fly;
   - a peer model that detects and aligns by itself (``facenet.eval.peers``) ignores ``align``.
3. the model's framing and input size (``facenet.preprocess``: a standard face crop is framed
   as the model was trained, ``ModelSpec.crop_fraction``; a centre crop is only resized);
4. an optional degradation for the robustness sweeps (``"jpeg:Q"`` or ``"size:S"``, applied to
   the crop at the model's input size, see ``degrade``);
5. an optional horizontal flip: the model also embeds the mirrored crop and the two embeddings
   are combined by ``flip_mode``: ``"mean"`` (average; re-normalised to unit length for models
   with unit-length outputs, so distances keep their 0..4 range) or ``"concat"`` ((2D,) vector,
   scaled by 1/sqrt(2) for unit-length models so it stays unit length, Sandberg's variant);
6. the model's ``ModelSpec`` normalisation and the network, batched: the one embedding engine
   (``facenet.models.inference.embed_faces``) every embedder uses, running an inference-ready
   copy of the model (``inference_network``: batch norm folded, channels-last; or ONNX Runtime,
   optionally int8).

Cache: one ``.npz`` per (model identity, preprocessing) under ``cache_dir``, holding a key per
image (absolute path + size + mtime) and its embedding. Sweeps and repeated runs only compute
what is missing; the file is rewritten atomically every ``SAVE_EVERY`` images, so an interrupted
run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import cv2
import numpy as np
from PIL import Image

from facenet.data.images import ImageError, load_image
from facenet.data.transforms import resize
from facenet.models.card import card_of
from facenet.models.inference import (
    Backend,
    FlipMode,
    check_backend,
    combine_flips,
    embed_faces,
    inference_network,
)
from facenet.preprocess import FRAMING_VERSION, center_window, frame
from facenet.utils import atomic_write, open_npz, prefetched

Align = Literal["center", "box", "similarity"]
DEFAULT_CENTER_FRACTION = 0.6  # why: 150 of 250 px keeps the deep-funneled face + a thin margin
SAVE_EVERY = 512  # images between cache checkpoints


@runtime_checkable
class FaceEmbedder(Protocol):
    """What ``embed_paths`` drives: a crop step and a batched embedding step.

    Torch models are wrapped automatically; peers (``facenet.eval.peers``) implement it directly.
    """

    identity: str  # changes whenever the weights or architecture change (cache key)
    input_size: tuple[int, int]  # (H, W) of the crops ``embed_crops`` takes
    unit_norm: bool  # True when embeddings are L2-normalised

    def crop(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB (H0, W0, 3) full image -> uint8 (H, W, 3) face crop at ``input_size``."""
        ...

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """B crops at ``input_size`` -> float32 (B, D)."""
        ...


class EmbeddingError(RuntimeError):
    """Images that could not be embedded; ``failures`` maps path -> reason."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures
        lines = [f"  {p}: {r}" for p, r in list(failures.items())[:20]]
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(
            f"{len(failures)} image(s) could not be embedded:\n" + "\n".join(lines) + more
        )

    def summary(self, show: int = 3) -> str:
        """One line: the count and the first ``show`` failures."""
        first = "; ".join(f"{p}: {r}" for p, r in list(self.failures.items())[:show])
        more = f"; ... {len(self.failures) - show} more" if len(self.failures) > show else ""
        return f"{len(self.failures)} image(s) could not be embedded ({first}{more})"


@dataclass(frozen=True)
class Preprocessing:
    """Everything between the file and the model that changes an embedding (cache key)."""

    align: str = "center"  # "center", "box", "similarity" or the peer's own
    center_fraction: float = DEFAULT_CENTER_FRACTION  # used by align="center" only
    flip: bool = False  # also embed the mirrored crop
    flip_mode: str = "mean"  # "mean" or "concat" (see module docstring)
    degrade: str | None = None  # "jpeg:Q" or "size:S" (robustness sweeps)
    aligner: str | None = None  # name of an on-the-fly aligner, None for pre-aligned data

    def key(self) -> str:
        d = asdict(self)
        if self.align != "center":
            d.pop("center_fraction")
        if not self.flip:
            d.pop("flip_mode")
        return json.dumps(d, sort_keys=True)


def degrade(crop: np.ndarray, spec: str | None) -> np.ndarray:
    """Apply a robustness degradation to a uint8 (H, W, 3) crop; the output has the same size.

    - ``"jpeg:Q"``: encode as JPEG at quality Q (Pillow, 4:2:0 subsampling) and decode;
    - ``"size:S"``: the face seen at S x S pixels: resize to S x S (area filter when shrinking),
      then back to (H, W) bilinearly, as if a small face had been upscaled to the model input.
    """
    if spec is None:
        return crop
    kind, _, value = spec.partition(":")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"degradation must be 'jpeg:Q' or 'size:S', got {spec!r}") from None
    if kind == "jpeg":
        if not 1 <= number <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {number}")
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="JPEG", quality=number)
        buf.seek(0)
        return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)
    if kind == "size":
        if number < 1:
            raise ValueError(f"face size must be >= 1 px, got {number}")
        h, w = crop.shape[:2]
        interp = cv2.INTER_AREA if number < max(h, w) else cv2.INTER_LINEAR
        small = cv2.resize(crop, (number, number), interpolation=interp)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    raise ValueError(f"degradation must be 'jpeg:Q' or 'size:S', got {spec!r}")


def model_identity(model: Any) -> str:
    """A stable id for a torch model: name, kwargs, spec and a SHA-1 of every weight."""
    h = hashlib.sha1()
    spec = getattr(model, "spec", None)
    info = {
        "model": card_of(model).name,
        "kwargs": card_of(model).kwargs,
        "spec": spec.to_dict() if spec is not None else None,
    }
    if spec is not None and spec.input_size[0] != spec.input_size[1]:
        info["framing"] = FRAMING_VERSION  # why: embeddings cached before the fix are stale
    h.update(json.dumps(info, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{info['model']}-{h.hexdigest()[:16]}"


class TorchEmbedder:
    """A ``FaceEmbedder`` over an ``EmbeddingNet`` (our models).

    Args:
        model: the embedding network (left as it is; an inference copy runs).
        align, center_fraction, aligner: the crop step (see the module docstring).
        device: torch device (torch backend).
        backend: ``"torch"`` (batch norm folded, channels-last) or ``"onnxruntime"``.
        quantize: ``"int8"`` (onnxruntime only), calibrated on the crops of ``calibration``.
        calibration: image files whose crops (this embedder's crop step) set the int8
            activation ranges; never the evaluated images themselves.
    """

    unit_norm = True

    def __init__(
        self,
        model: Any,
        align: str = "center",
        center_fraction: float = DEFAULT_CENTER_FRACTION,
        aligner: Callable[[np.ndarray], np.ndarray] | None = None,
        device: str = "cpu",
        backend: Backend = "torch",
        quantize: str | None = None,
        calibration: Sequence[str | os.PathLike] | None = None,
    ) -> None:
        if align not in ("center", "box", "similarity"):
            raise ValueError(f"align must be 'center', 'box' or 'similarity', got {align!r}")
        if not 0 < center_fraction <= 1:
            raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction}")
        check_backend(backend, quantize)
        if quantize and not calibration:
            raise ValueError("int8 quantisation needs calibration images")
        self.model = model.eval().to(device)
        self.spec = model.spec
        self.input_size = tuple(model.spec.input_size)
        self.align = align
        self.center_fraction = center_fraction
        self.aligner = aligner
        self.device = device if backend == "torch" else "cpu"
        self.backend = backend
        self.quantize = quantize
        self.calibration = [Path(p) for p in calibration or ()]
        # why: torch and ONNX Runtime float32 agree to ~1e-6, so they share cached embeddings;
        # int8 embeddings differ (~1e-2) and are cached apart, per calibration set
        self.identity = model_identity(model)
        if quantize:
            files = hashlib.sha1("\n".join(map(_file_key, self.calibration)).encode())
            self.identity += f"-{quantize}-{files.hexdigest()[:8]}"
        self._network: Any = None

    @property
    def network(self) -> Any:
        """The module that runs (``inference_network``), built on first use."""
        if self._network is None:
            crops = self._calibration_crops() if self.quantize else None
            self._network = inference_network(
                self.model, self.backend, quantize=self.quantize, calibration=crops
            )
        return self._network

    def _calibration_crops(self) -> list[np.ndarray]:
        """The calibration images through this embedder's crop step; one that cannot be read
        or aligned is left out, as ``embed_paths`` leaves it out."""
        crops, left_out = [], []
        for p in self.calibration:
            try:
                crops.append(self.crop(load_image(p)))
            except (ImageError, ValueError, RuntimeError) as e:
                left_out.append(f"{p}: {e}" if not isinstance(e, ImageError) else str(e))
        if left_out:
            what = f"{len(left_out)} of {len(self.calibration)} int8 calibration images"
            if not crops:
                raise ValueError(f"{what} could not be read or aligned (first: {left_out[0]})")
            warnings.warn(
                f"{what} left out, unreadable or unaligned (first: {left_out[0]})", stacklevel=2
            )
        return crops

    def crop(self, image: np.ndarray) -> np.ndarray:
        if self.align == "center":
            # a non-square input takes the centre window of its aspect ratio (as ``frame``)
            window = center_window(image, self.center_fraction, self.input_size)
            return resize(window, self.input_size)
        if self.aligner is not None:
            image = self.aligner(image)
        return frame(image, self.spec)  # a standard face crop, framed as the model was trained

    def _embed(self, crops: list[np.ndarray], flip: bool) -> Any:
        # why: one forward pass per call, as embed_paths batches them
        return embed_faces(
            self.network,
            crops,
            framed=True,
            batch_size=len(crops),
            device=self.device,
            flip=flip,
            channels_last=self.backend == "torch",
        )

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self._embed(list(crops), flip=False).numpy()

    def embed_with_flips(self, crops: Sequence[np.ndarray], flip_mode: FlipMode) -> np.ndarray:
        """Each crop and its mirror in one pass, combined by ``flip_mode``."""
        return combine_flips(self._embed(list(crops), flip=True), flip_mode).numpy()


def as_embedder(
    model: Any,
    align: str = "center",
    center_fraction: float = DEFAULT_CENTER_FRACTION,
    aligner: Callable[[np.ndarray], np.ndarray] | None = None,
) -> FaceEmbedder:
    """``model`` itself when it is a ``FaceEmbedder`` (peers), else a ``TorchEmbedder``."""
    if isinstance(model, FaceEmbedder):
        return model
    return TorchEmbedder(model, align=align, center_fraction=center_fraction, aligner=aligner)


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


@dataclass
class EmbeddingStats:
    """Filled in by ``embed_paths``: how many images came from the cache, timing, failures."""

    n_images: int = 0
    n_cached: int = 0
    n_computed: int = 0
    seconds: float = 0.0
    cache_file: str | None = None
    failures: dict[str, str] = field(default_factory=dict)


def cache_file_for(cache_dir: str | os.PathLike, identity: str, prep: Preprocessing) -> Path:
    """``<cache_dir>/<identity>-<hash of preprocessing>.npz``."""
    digest = hashlib.sha1(f"{identity}\n{prep.key()}".encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", identity)[:80]
    return Path(cache_dir) / f"{safe}-{digest}.npz"


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with open_npz(path) as z:
            return dict(zip(z["keys"].tolist(), z["embeddings"], strict=True))
    except (OSError, ValueError, KeyError):  # a corrupt cache is recomputed, never trusted
        return {}


def _save_cache(path: Path, cache: dict[str, np.ndarray], prep: Preprocessing, identity: str):
    keys = np.array(list(cache), dtype=str)
    emb = np.stack(list(cache.values())).astype(np.float32)
    with atomic_write(path) as f:
        np.savez(f, keys=keys, embeddings=emb, identity=identity, preprocessing=prep.key())


def embed_paths(
    model: Any,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 64,
    flip: bool = False,
    align: str = "center",
    cache_dir: str | os.PathLike | None = None,
    *,
    center_fraction: float = DEFAULT_CENTER_FRACTION,
    flip_mode: FlipMode = "mean",
    degradation: str | None = None,
    aligner: Callable[[np.ndarray], np.ndarray] | None = None,
    aligner_name: str | None = None,
    on_error: Literal["raise", "nan"] = "raise",
    stats: EmbeddingStats | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embed every image in ``paths`` (duplicates are embedded once).

    Args:
        model: an ``EmbeddingNet`` or a ``FaceEmbedder`` (a peer such as ``dlib-resnet``).
        paths: N image files.
        batch_size: crops per forward pass.
        flip: also embed the horizontally mirrored crop and combine by ``flip_mode``.
        align: ``"center"`` | ``"box"`` | ``"similarity"`` (see module docstring).
        cache_dir: folder for the embedding cache; None disables it.
        center_fraction: fraction of the frame kept by ``align="center"``.
        flip_mode: ``"mean"`` or ``"concat"``.
        degradation: ``"jpeg:Q"`` / ``"size:S"`` robustness degradation, or None.
        aligner: on-the-fly face aligner for ``box``/``similarity`` on unaligned data.
        aligner_name: name of ``aligner`` for the cache key (required with ``aligner``).
        on_error: ``"raise"`` (after trying every image, ``EmbeddingError`` lists all failures)
            or ``"nan"`` (failed rows are NaN).
        stats: filled with counts and timing when given.
        progress: called as ``progress(done, total)`` after each batch.

    Returns:
        float32 (N, D) embeddings, (N, 2D) for ``flip_mode="concat"``.
    """
    t0 = time.perf_counter()
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if flip_mode not in ("mean", "concat"):
        raise ValueError(f"flip_mode must be 'mean' or 'concat', got {flip_mode!r}")
    if aligner is not None and aligner_name is None:
        raise ValueError("aligner_name is required with aligner (it keys the cache)")
    embedder = as_embedder(model, align, center_fraction, aligner)
    is_peer = not isinstance(embedder, TorchEmbedder)
    prep = Preprocessing(
        align=getattr(embedder, "align_name", "own") if is_peer else align,
        center_fraction=center_fraction,
        flip=flip,
        flip_mode=flip_mode,
        degrade=degradation,
        aligner=None if is_peer else aligner_name,
    )
    degrade(np.zeros((8, 8, 3), np.uint8), degradation)  # validate the spec before any work
    stats = stats if stats is not None else EmbeddingStats()
    paths = [Path(p) for p in paths]
    unique = list(dict.fromkeys(paths))
    stats.n_images = len(unique)

    keys: dict[Path, str] = {}
    for p in unique:
        try:
            keys[p] = _file_key(p)
        except OSError:
            keys[p] = f"{p.resolve()}|missing"
    cache_path = cache_file_for(cache_dir, embedder.identity, prep) if cache_dir else None
    cache = _load_cache(cache_path) if cache_path else {}
    stats.cache_file = str(cache_path) if cache_path else None
    todo = [p for p in unique if keys[p] not in cache]
    stats.n_cached = len(unique) - len(todo)

    since_save = 0

    def crops_of(chunk: list[Path]) -> tuple[list[np.ndarray], list[Path], dict[str, str]]:
        crops, ok, failed = [], [], {}
        for p in chunk:
            try:
                crop = degrade(embedder.crop(load_image(p)), degradation)
            except ImageError as e:
                failed[str(p)] = e.reason
                continue
            except (ValueError, RuntimeError) as e:  # e.g. an aligner that found no face
                failed[str(p)] = str(e)
                continue
            crops.append(crop)
            ok.append(p)
        return crops, ok, failed

    chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    if chunks and isinstance(embedder, TorchEmbedder):
        # why: built here, before the worker thread starts: folding traces the model with
        # torch.fx, which patches nn.Module.__call__ for every thread while it runs, and would
        # capture the worker's detector calls
        embedder.network  # noqa: B018
    # why: one pipeline: the next chunk is decoded (and detected, when aligning on the fly) in a
    # worker thread while the network embeds this one; decoding and OpenCV release the GIL
    for n, (crops, ok, failed) in enumerate(prefetched(crops_of, chunks, "facenet-eval-crops")):
        stats.failures.update(failed)
        since_save += _embed_chunk(embedder, crops, ok, keys, cache, flip, flip_mode, stats)
        if cache_path and since_save >= SAVE_EVERY:
            _save_cache(cache_path, cache, prep, embedder.identity)
            since_save = 0
        if progress:
            progress(min((n + 1) * batch_size, len(todo)), len(todo))
    if cache_path and since_save:
        _save_cache(cache_path, cache, prep, embedder.identity)
    stats.seconds = time.perf_counter() - t0
    if stats.failures and on_error == "raise":
        raise EmbeddingError(stats.failures)

    missing = [p for p in unique if keys[p] not in cache]
    if missing and on_error == "raise":
        # why: a run that embedded nothing must never score as a 50% coin toss
        raise EmbeddingError({str(p): "not embedded" for p in missing})
    dim = next(iter(cache.values())).shape[0] if cache else 0
    out = np.full((len(paths), dim), np.nan, dtype=np.float32)
    for i, p in enumerate(paths):
        e = cache.get(keys[p])
        if e is not None:
            out[i] = e
    return out


def _embed_chunk(
    embedder: Any,
    crops: list[np.ndarray],
    ok: list[Path],
    keys: dict[Path, str],
    cache: dict[str, np.ndarray],
    flip: bool,
    flip_mode: FlipMode,
    stats: EmbeddingStats,
) -> int:
    """Embed one chunk's crops into ``cache``; returns how many were embedded."""
    if not crops:
        return 0
    if flip and isinstance(embedder, TorchEmbedder):
        emb = embedder.embed_with_flips(crops, flip_mode)
    elif flip:
        emb = embedder.embed_crops(crops)
        mirrored = embedder.embed_crops([c[:, ::-1].copy() for c in crops])
        emb = _combine_flips(emb, mirrored, flip_mode, embedder.unit_norm)
    else:
        emb = embedder.embed_crops(crops)
    for p, e in zip(ok, emb, strict=True):
        cache[keys[p]] = np.asarray(e, dtype=np.float32)
    stats.n_computed += len(ok)
    return len(ok)


def _combine_flips(a: np.ndarray, b: np.ndarray, mode: str, unit_norm: bool) -> np.ndarray:
    """A peer's (B, D), (B, D) -> (B, D) mean or (B, 2D) concatenation (unit length if inputs
    are); our models combine in the engine (``facenet.models.inference.combine_flips``)."""
    if mode == "concat":
        out = np.concatenate([a, b], axis=1)
        return out / np.sqrt(2.0) if unit_norm else out
    out = (a + b) / 2.0
    if unit_norm:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
