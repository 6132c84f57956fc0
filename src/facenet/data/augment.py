"""Training augmentation on batches of cached uint8 faces: random crop, optional zoom/rotation
jitter, flip, optional resolution jitter and JPEG re-encoding, colour jitter, optional greyscale,
optional random erasing.
All randomness comes from a ``numpy.random.Generator`` the caller derives from (seed, step), so a
batch's augmentation is reproducible after a resume.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from facenet.config import AugmentConfig

# why: ITU-R BT.601 luma weights, the usual greyscale for saturation jitter.
_LUMA = (0.299, 0.587, 0.114)
# why: Zhong et al.'s random-erasing aspect ratios (r1 = 0.3, 1/r1), drawn log-uniformly.
_ERASE_ASPECT = (0.3, 1 / 0.3)


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """An independent generator for (seed, step, stream); the same triple gives the same draws."""
    return np.random.default_rng(np.random.SeedSequence([seed, step, stream]))


def center_windows(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (B, S, S, 3) -> their central h x w windows (B, h, w, 3), a view: a memmap stays
    on disk."""
    h, w = size
    top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
    return images[:, top : top + h, left : left + w]


def center_crops(images: np.ndarray, size: tuple[int, int]) -> Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, h, w) in [0, 255]: the central h x w window."""
    crop = np.ascontiguousarray(center_windows(images, size))
    return torch.from_numpy(crop).permute(0, 3, 1, 2).float()


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        return image
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]


def augment_batch(
    images: np.ndarray, size: tuple[int, int], config: AugmentConfig, rng: np.random.Generator
) -> Tensor:
    """Augment a batch of cached faces.

    Args:
        images: uint8 (B, S, S, 3) with S >= the crop size.
        size: (h, w) of the model input.
        config: which augmentations, and how strong.
        rng: the batch's generator (see ``step_rng``).

    Returns:
        float32 (B, 3, h, w) with values in [0, 255] (normalise with the model's spec).
    """
    b, sh, sw = images.shape[:3]
    h, w = size
    if sh < h or sw < w:
        raise ValueError(f"cached images are {sh}x{sw}, smaller than the {h}x{w} input")
    if config.random_crop:
        tops = rng.integers(0, sh - h + 1, size=b)
        lefts = rng.integers(0, sw - w + 1, size=b)
    else:
        tops = np.full(b, (sh - h) // 2)
        lefts = np.full(b, (sw - w) // 2)
    flips = rng.random(b) < 0.5 if config.flip else np.zeros(b, dtype=bool)
    jpeg = rng.random(b) < config.jpeg_probability
    lo, hi = config.jpeg_quality
    qualities = rng.integers(lo, hi + 1, size=b)
    # why: draws for the optional augmentations come after the original ones and only when
    # enabled, so configs without them reproduce earlier runs' batches exactly
    warp = config.rotate > 0 or tuple(config.scale) != (1.0, 1.0)
    if warp:
        angles = rng.uniform(-config.rotate, config.rotate, size=b)
        zooms = rng.uniform(config.scale[0], config.scale[1], size=b)
    if config.low_res_probability > 0:
        low_res = rng.random(b) < config.low_res_probability
        low_sides = rng.integers(min(config.low_res_min, h), h, size=b, endpoint=False)
    out = np.empty((b, h, w, 3), dtype=np.uint8)
    for i in range(b):
        if warp:
            # rotate + zoom about the crop window's centre, sampled straight into an h x w crop
            cy, cx = tops[i] + h / 2, lefts[i] + w / 2
            m = cv2.getRotationMatrix2D((cx, cy), float(angles[i]), float(zooms[i]))
            m[:, 2] += (w / 2 - cx, h / 2 - cy)
            crop = cv2.warpAffine(
                images[i], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
        else:
            crop = images[i, tops[i] : tops[i] + h, lefts[i] : lefts[i] + w]
        if config.low_res_probability > 0 and low_res[i]:
            side = int(low_sides[i])
            small = cv2.resize(
                np.ascontiguousarray(crop), (side, side), interpolation=cv2.INTER_AREA
            )
            crop = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if flips[i]:
            crop = crop[:, ::-1]
        if jpeg[i]:
            crop = _jpeg(np.ascontiguousarray(crop), qualities[i])
        out[i] = crop
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float()  # (B, 3, h, w)

    def factors(strength: float) -> Tensor:
        f = rng.uniform(1 - strength, 1 + strength, size=b) if strength > 0 else np.ones(b)
        return torch.from_numpy(f.astype(np.float32)).view(b, 1, 1, 1)

    brightness, contrast, saturation = (
        factors(config.brightness),
        factors(config.contrast),
        factors(config.saturation),
    )
    if config.brightness > 0 or config.contrast > 0 or config.saturation > 0:
        luma = x.new_tensor(_LUMA).view(1, 3, 1, 1)
        x = x * brightness
        mean = (x * luma).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
        x = (x - mean) * contrast + mean
        grey = (x * luma).sum(1, keepdim=True)  # (B, 1, h, w)
        x = (x - grey) * saturation + grey
        x = x.clamp_(0, 255)
    if config.grey_probability > 0:
        to_grey = torch.from_numpy(rng.random(b) < config.grey_probability)
        if bool(to_grey.any()):
            grey = (x[to_grey] * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x[to_grey] = grey.expand(-1, 3, -1, -1)
    if config.erase_probability > 0:
        erase_rectangles(x, config.erase_probability, config.erase_area, rng)
    return x


def erase_rectangles(
    x: Tensor, probability: float, area: tuple[float, float], rng: np.random.Generator
) -> Tensor:
    """Random erasing in place: with ``probability`` per image, one rectangle of ``area`` (fraction
    of the image, drawn uniformly) and log-uniform aspect ratio becomes uniform noise in [0, 255].

    Args:
        x: float (B, C, H, W) in [0, 255], modified in place.

    Returns:
        ``x``.
    """
    b, c, h, w = x.shape
    lo, hi = area
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"erase_area {area} must satisfy 0 < low <= high <= 1")
    hit = rng.random(b) < probability
    fractions = rng.uniform(lo, hi, size=b)
    aspects = np.exp(rng.uniform(*np.log(_ERASE_ASPECT), size=b))
    corners = rng.random((b, 2))
    for i in np.flatnonzero(hit):
        eh = int(np.clip(round(np.sqrt(fractions[i] * h * w * aspects[i])), 1, h))
        ew = int(np.clip(round(np.sqrt(fractions[i] * h * w / aspects[i])), 1, w))
        top = int(corners[i, 0] * (h - eh + 1))
        left = int(corners[i, 1] * (w - ew + 1))
        noise = rng.integers(0, 256, size=(c, eh, ew)).astype(np.float32)
        x[i, :, top : top + eh, left : left + ew] = torch.from_numpy(noise)
    return x
