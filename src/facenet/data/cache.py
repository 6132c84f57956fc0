"""Decoded-image cache: every image once decoded to uint8 and kept in a memory-mapped file.

On a 2-core machine JPEG decoding would take as much CPU as the model itself; a cache built
once turns every later epoch (and every later run on the same files) into array indexing.
The cache file is keyed by the paths, sizes and modification times of the images and the
stored size, built in a temporary file and renamed into place (atomic), and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet.data.images import ImageError, load_image
from facenet.data.transforms import resize
from facenet.utils import atomic_write

CACHE_VERSION = 1


@dataclass(frozen=True)
class CachedImages:
    """Decoded images, square, uint8.

    Attributes:
        images: (N, S, S, 3) uint8, memory-mapped read-only.
        ok: (N,) bool, False where the file could not be decoded (its image is all zeros).
        path: the cache file.
    """

    images: np.ndarray
    ok: np.ndarray
    path: Path

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


def square_resize(image: np.ndarray, size: int, crop_fraction: float = 1.0) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3): centre square of ``crop_fraction`` of the shorter
    side, then resize."""
    h, w = image.shape[:2]
    s = max(1, round(min(h, w) * crop_fraction))
    top, left = (h - s) // 2, (w - s) // 2
    return resize(image[top : top + s, left : left + s], (size, size))


def cache_key(paths: Sequence[str], size: int, crop_fraction: float = 1.0) -> str:
    """Hex digest of (paths, file sizes, mtimes, size, crop): changes when any input changes."""
    crop = "" if crop_fraction == 1.0 else f":crop{crop_fraction!r}"
    h = hashlib.sha1(f"v{CACHE_VERSION}:{size}:{len(paths)}{crop}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:20]


def _decode(path: str, size: int, crop_fraction: float) -> tuple[np.ndarray | None, str | None]:
    try:
        return square_resize(load_image(path), size, crop_fraction), None
    except ImageError as e:
        return None, str(e)


def build_cache(
    paths: Sequence[str],
    size: int,
    cache_dir: str | os.PathLike,
    threads: int = 2,
    progress: bool = False,
    crop_fraction: float = 1.0,
) -> CachedImages:
    """Decode ``paths`` into an (N, size, size, 3) uint8 memmap under ``cache_dir`` (or reuse it).

    Each image keeps its centre square of ``crop_fraction`` of the shorter side, resized to
    ``size`` (see ``square_resize``).

    Unreadable images are reported with a warning naming the file and marked in ``ok``; the
    rest of the batch continues. The finished cache is published atomically: a crash leaves
    either no cache or a complete one.
    """
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size, crop_fraction)
    data_path = cache_dir / f"{key}.u8"
    index_path = cache_dir / f"{key}.json"
    n = len(paths)
    if index_path.is_file() and data_path.is_file():
        index = json.loads(index_path.read_text())
        if index.get("shape") == [n, size, size, 3]:
            images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=(n, size, size, 3))
            return CachedImages(images, np.asarray(index["ok"], dtype=bool), data_path)

    tmp = cache_dir / f".{key}.{os.getpid()}.u8.tmp"
    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(max(n, 1), size, size, 3))
    ok = np.zeros(n, dtype=bool)
    errors: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"caching {n} images at {size}px", file=sys.stderr)
    try:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            chunk = 256
            for start in range(0, n, chunk):
                batch = paths[start : start + chunk]
                for i, (img, err) in enumerate(
                    pool.map(lambda p: _decode(p, size, crop_fraction), batch)
                ):
                    if img is None:
                        errors.append(err or f"{batch[i]}: unreadable")
                        out[start + i] = 0
                    else:
                        out[start + i] = img
                        ok[start + i] = True
                if bar is not None:
                    bar.update(len(batch))
        out.flush()
        del out
        os.replace(tmp, data_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    for err in errors[:20]:
        warnings.warn(f"skipping unreadable image {err}", stacklevel=2)
    if len(errors) > 20:
        warnings.warn(f"... and {len(errors) - 20} more unreadable images", stacklevel=2)
    index = {"version": CACHE_VERSION, "shape": [n, size, size, 3], "ok": ok.tolist()}
    index["paths_sha1"] = key
    with atomic_write(index_path, "w") as f:
        json.dump(index, f)
    images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=(n, size, size, 3))
    return CachedImages(images, ok, data_path)
