"""Pixel operations on uint8 images: resizing and centre crops (no knowledge of any model; the
model's preprocessing is ``facenet.preprocess``)."""

from __future__ import annotations

import cv2
import numpy as np


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> (size[0], size[1], 3); area filter when shrinking, bilinear when growing."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrinking = image.shape[0] > h or image.shape[1] > w
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def center_crop(image: np.ndarray, fraction: float, fraction_w: float | None = None) -> np.ndarray:
    """Keep the central ``fraction`` of the height and ``fraction_w`` (default: the same) of the
    width."""
    h, w = image.shape[:2]
    fw = fraction if fraction_w is None else fraction_w
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fw))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top : top + ch, left : left + cw]
