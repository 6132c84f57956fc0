"""Robust image loading: every readable photo becomes uint8 RGB (H, W, 3); anything else raises
``ImageError`` naming the file and the problem."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)

# why: a decompression-bomb guard; 100 MP is far above any real face photo we handle.
MAX_PIXELS = 100_000_000


class ImageError(Exception):
    """An image that cannot be used; ``str(e)`` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 RGB array (EXIF orientation already applied)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        grey = np.clip((arr - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # why: composite transparent pixels on white instead of whatever colour they hide.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read ``path`` as uint8 RGB (H, W, 3), honouring EXIF orientation.

    Handles greyscale, 16-bit, CMYK, palette/alpha PNG, GIF (first frame), PGM. Raises
    ``ImageError`` for missing, unreadable, empty, truncated, corrupt, non-image and oversized files.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise ImageError(p, "file not found") from None
    except OSError as e:
        raise ImageError(p, f"cannot stat file ({e.strerror or e})") from None
    if p.is_dir():
        raise ImageError(p, "is a directory, not an image")
    if not p.is_file():  # why: a FIFO or device reports size 0 and may block a read
        raise ImageError(p, "not a regular file (a device, pipe or socket)")
    if size == 0:
        raise ImageError(p, "empty file (0 bytes)")
    return _decode(p, p, max_pixels)


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``load_image`` for the bytes of an encoded image (an upload); errors name ``name``."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: Path | io.BytesIO, p: str | os.PathLike, max_pixels: int) -> np.ndarray:
    """Open, check the pixel count from the header before decoding, decode, orient."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
    except PermissionError:
        raise ImageError(p, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(p, "not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(p, f"image too large (decompression-bomb guard: {e})") from None
    except OSError as e:
        raise ImageError(p, f"corrupt or unreadable image ({e})") from None
    except (ValueError, SyntaxError) as e:
        raise ImageError(p, f"corrupt image ({e})") from None
    with img:  # decoding, its checks and its errors: from_pil
        return from_pil(img, p, max_pixels)


def from_pil(img: Image.Image, name: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``load_image`` for an opened PIL image (e.g. one a caller of the Python API holds): the
    same checks, EXIF orientation and mode handling; errors name ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    name, f"image too large ({w}x{h} = {w * h:,} pixels > {max_pixels:,})"
                )
            if w == 0 or h == 0:
                raise ImageError(name, f"image has no pixels ({w}x{h})")
            img.load()  # decode now so truncation is detected here
            img = ImageOps.exif_transpose(img)
            return _to_rgb_uint8(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(name, f"image too large (decompression-bomb guard: {e})") from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise ImageError(name, f"truncated image ({msg})") from None
        raise ImageError(name, f"corrupt or unreadable image ({msg})") from None
    except (ValueError, SyntaxError) as e:
        raise ImageError(name, f"corrupt image ({e})") from None
