"""Uploaded bytes -> uint8 RGB (H, W, 3), refusing what must not be decoded.

``facenet.data.images.decode_image`` reads the pixel count from the header (Pillow's lazy
``open``) and checks it before any pixel is decoded, so a small file whose header claims
100,000 x 100,000 pixels (a decompression bomb) is refused at once; Pillow's own
``Image.MAX_IMAGE_PIXELS`` alone would not do (it only warns up to twice its value, and it is a
process-wide setting). Here its ``ImageError`` becomes a problem: 413 for too many pixels, 422
for anything else.
"""

from __future__ import annotations

import numpy as np

from facenet.data.images import ImageError, decode_image
from facenet.serve.problems import ProblemError


def decode_upload(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """``data`` (an image file's bytes) as uint8 RGB (H, W, 3).

    Raises:
        ProblemError: ``image_too_large`` (more than ``max_pixels``, from the header, before
            decoding) or ``image_corrupt`` (empty, not an image, truncated, corrupt).
    """
    try:
        return decode_image(data, name, max_pixels)
    except ImageError as e:
        code = "image_too_large" if e.reason.startswith("image too large") else "image_corrupt"
        raise ProblemError(code, str(e)) from None
