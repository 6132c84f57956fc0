"""Turning uint8 face crops into model input, as the model's ``ModelSpec`` says."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from facenet.models.registry import ModelSpec


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> (size[0], size[1], 3); area filter when shrinking, bilinear when growing."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrinking = image.shape[0] > h or image.shape[1] > w
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def center_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the central ``fraction`` of height and width."""
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top : top + ch, left : left + cw]


def normalize(batch: Tensor, spec: ModelSpec) -> Tensor:
    """float (B, 3, H, W) in [0, 255] -> model input per ``spec.normalization``."""
    if spec.channels == "grey":
        weights = batch.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        batch = (batch * weights).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    if spec.normalization == "per_image":
        # why: Sandberg's "prewhiten": std floored at 1/sqrt(N) so flat images stay finite.
        n = batch[0].numel()
        mean = batch.mean(dim=(1, 2, 3), keepdim=True)
        std = batch.std(dim=(1, 2, 3), keepdim=True, unbiased=False).clamp_min(1.0 / n**0.5)
        return (batch - mean) / std
    mean = batch.new_tensor(spec.mean).view(1, 3, 1, 1)
    std = batch.new_tensor(spec.std).view(1, 3, 1, 1)
    return (batch - mean) / std


def to_tensor(images: Sequence[np.ndarray] | np.ndarray, spec: ModelSpec) -> Tensor:
    """uint8 RGB crops (each (H, W, 3), any size) -> normalised float (B, 3, H', W') at the
    model's input size."""
    resized = np.stack([resize(np.asarray(im, dtype=np.uint8), spec.input_size) for im in images])
    batch = torch.from_numpy(resized).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    return normalize(batch, spec)
