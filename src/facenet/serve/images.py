"""Uploaded bytes -> uint8 RGB (H, W, 3), refusing what must not be decoded.

The pixel count is read from the header (Pillow's lazy ``open``) and checked before any pixel is
decoded: a small file whose header claims 100,000 x 100,000 pixels (a decompression bomb) is
refused at once. ``Image.MAX_IMAGE_PIXELS`` alone would not do: it only warns up to twice its
value, and it is a process-wide setting. After the check, pixels are converted exactly as
``facenet.data.images.load_image`` converts a file (EXIF rotation, greyscale, 16-bit, alpha).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# why: one conversion of pixels for files and uploads; data.images reads paths, not bytes
from facenet.data.images import _to_rgb_uint8
from facenet.serve.problems import ProblemError


def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """``data`` (an image file's bytes) as uint8 RGB (H, W, 3).

    Raises:
        ProblemError: ``image_too_large`` (more than ``max_pixels``, from the header, before
            decoding) or ``image_corrupt`` (empty, not an image, truncated, corrupt).
    """
    if not data:
        raise ProblemError("image_corrupt", f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ProblemError(
                        "image_too_large",
                        f"{name}: {w}x{h} = {w * h:,} pixels; at most {max_pixels:,}",
                    )
                if w == 0 or h == 0:
                    raise ProblemError("image_corrupt", f"{name}: image has no pixels ({w}x{h})")
                img.load()  # decode now, so a truncated file fails here
                return _to_rgb_uint8(ImageOps.exif_transpose(img))
    except ProblemError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ProblemError(
            "image_too_large", f"{name}: more pixels than allowed (decompression-bomb guard)"
        ) from None
    except UnidentifiedImageError:
        raise ProblemError("image_corrupt", f"{name}: not an image (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        kind = "truncated" if "truncated" in str(e).lower() else "corrupt or unreadable"
        raise ProblemError("image_corrupt", f"{name}: {kind} image") from None
