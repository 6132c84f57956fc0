"""Image bytes for the API tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png(image: np.ndarray) -> bytes:
    """uint8 RGB (H, W, 3) -> the bytes of a PNG file."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
