"""One preprocessing path: what a model expects (``ModelSpec``) and how a face crop becomes the
model's input (``preprocess``).

Every embedder goes through here (the applications' ``Embedder``, ``facenet eval`` and training
validation), so a face is framed, resized and normalised the same way everywhere.

Framing. A **standard face crop** is a square detector box plus a margin of 32/160 of the crop
side on every side (Sandberg's LFW protocol; what ``facenet align --mode box`` writes). A model
sees the centre ``spec.crop_fraction`` of a standard crop: 1.0 for published models; a model
trained on random crops of cached faces records the centre fraction its validation used. Crops
cut from a photo at the model's own margin (``model_margin_fraction``) are already framed.

A bottom module: NumPy, OpenCV and PyTorch only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from facenet.data.transforms import center_crop, resize

# why: Sandberg's LFW protocol crops 160 px with a 32 px margin (the box fills 128/160 = 80%);
# we keep that proportion at any model input size.
MARGIN_FRACTION = 32.0 / 160.0


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects as input and what it returns; preprocessing reads it from the model."""

    name: str  # registry name of the architecture
    input_size: tuple[int, int]  # (height, width) of the face crop in pixels
    embedding_dim: int = 128  # length of the L2-normalised output vector
    channels: Literal["rgb", "grey"] = "rgb"  # channel order of the input tensor
    # "fixed": (x - mean) / std per channel; "per_image": subtract the image's mean, divide by
    # its std (Sandberg's "prewhiten"); pixel values x are in [0, 255].
    normalization: Literal["fixed", "per_image"] = "fixed"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)  # per-channel, 0..255 scale
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)  # per-channel, 0..255 scale
    # Framing: the centre fraction of a standard face crop the model sees (module docstring).
    crop_fraction: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # family-specific notes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        d = dict(d)
        d["input_size"] = tuple(d["input_size"])
        d["mean"] = tuple(d.get("mean", (127.5,) * 3))
        d["std"] = tuple(d.get("std", (128.0,) * 3))
        d["crop_fraction"] = float(d.get("crop_fraction", 1.0))  # older files: the standard crop
        return cls(**d)


def model_margin_fraction(spec: ModelSpec) -> float:
    """The crop margin (fraction of the crop side) that frames faces as ``spec`` expects.

    A standard crop's box fills ``1 - MARGIN_FRACTION`` of its side; a model trained on its
    centre ``crop_fraction`` sees the box fill ``(1 - MARGIN_FRACTION) / crop_fraction``.
    """
    fraction = float(spec.crop_fraction)
    if fraction == 1.0:
        return MARGIN_FRACTION
    return max(0.0, 1.0 - (1.0 - MARGIN_FRACTION) / fraction)


# why: 2 = a non-square input takes the centre window of its own aspect ratio instead of the
# whole (squashed) square; caches of a non-square model's embeddings record it (square models'
# framing is unchanged, so their caches stay valid)
FRAMING_VERSION = 2


def center_window(image: np.ndarray, fraction: float, size: tuple[int, int]) -> np.ndarray:
    """The centre window of ``image`` (square) with the aspect ratio of ``size`` (H, W), its
    longer side ``fraction`` of the image's. A model trained on random (H, W) windows of square
    cached faces is validated on their centre window, so a non-square input is a window of the
    square crop, never the square squashed; for a square input it is the centre ``fraction``."""
    h, w = size
    longest = max(h, w)
    fh, fw = fraction * h / longest, fraction * w / longest
    return image if fh >= 1.0 and fw >= 1.0 else center_crop(image, fh, fw)


def frame(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """A standard face crop (uint8 (H, W, 3), any size) -> what the model sees: its centre
    ``spec.crop_fraction`` window (``center_window``), at the model's input size."""
    return resize(center_window(image, spec.crop_fraction, spec.input_size), spec.input_size)


def _fit(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """A crop already framed for ``spec`` -> the input size; a square crop for a non-square
    input gives its centre window of the input's aspect ratio (as ``frame``), not a squash."""
    if image.shape[0] == image.shape[1]:
        image = center_window(image, 1.0, spec.input_size)
    return resize(image, spec.input_size)


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


def preprocess(
    images: Sequence[np.ndarray] | np.ndarray, spec: ModelSpec, *, framed: bool = False
) -> Tensor:
    """uint8 RGB face crops -> the model's normalised input, float (B, 3, H, W).

    Args:
        images: each (H, W, 3), any size; or one (B, H, W, 3) array.
        spec: the model's ``ModelSpec``.
        framed: the crops already frame the face as the model expects (cut at the model's
            margin, or cached training faces); otherwise each is a standard face crop and is
            framed first (``frame``).
    """
    if (
        isinstance(images, np.ndarray)
        and images.ndim == 4
        and images.shape[1:3] == tuple(spec.input_size)
        and (framed or spec.crop_fraction == 1.0)
    ):
        stacked = np.ascontiguousarray(images, dtype=np.uint8)
        if not stacked.flags.writeable:  # why: a read-only cache memmap; from_numpy warns on it
            stacked = stacked.copy()
    else:
        prepare = (lambda im: _fit(im, spec)) if framed else (lambda im: frame(im, spec))
        stacked = np.stack([prepare(np.asarray(im, dtype=np.uint8)) for im in images])
    batch = torch.from_numpy(stacked).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    return normalize(batch, spec)
