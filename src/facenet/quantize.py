"""128-byte faces: int8 codes of embeddings, one byte per dimension (SPEC §2: "128 floats,
quantisable to 128 bytes per face").

A code is ``round(x / scale)`` clipped to [-127, 127], per dimension; ``scale`` (one float per
dimension) is calibrated on embeddings of training faces so that the largest value seen (or a high
percentile of it) maps to 127. Decoding multiplies back: a value inside the calibrated range comes
back within ``scale / 2`` of itself, so a squared-L2 distance ``d`` between two decoded faces is
within ``2 * sqrt(d) * ||scale|| + ||scale||**2`` of the float one (``distance_error_bound``).

NumPy only: the models layer stores a codec in a model's metadata (``to_dict``), and galleries and
evaluation use it without loading PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LEVELS = 127  # symmetric: -127..127 (-128 is never used, so negation is exact)


@dataclass(frozen=True)
class Int8Codec:
    """Per-dimension symmetric int8 quantisation of D-dimensional embeddings."""

    scale: np.ndarray  # (D,) float32 > 0: the value of one step in each dimension

    def __post_init__(self) -> None:
        s = np.asarray(self.scale, np.float32)
        if s.ndim != 1 or not len(s) or not np.isfinite(s).all() or (s <= 0).any():
            raise ValueError("an int8 codec needs a (D,) array of finite positive scales")
        object.__setattr__(self, "scale", s)

    @property
    def dim(self) -> int:
        return int(self.scale.shape[0])

    @classmethod
    def calibrate(cls, embeddings: np.ndarray, percentile: float = 100.0) -> Int8Codec:
        """Scales from (N, D) calibration embeddings (training faces, never evaluated ones): the
        ``percentile`` of each dimension's absolute values maps to 127 (100: the maximum)."""
        x = np.asarray(embeddings, np.float32)
        if x.ndim != 2 or len(x) < 1 or not np.isfinite(x).all():
            raise ValueError(f"calibration embeddings must be finite (N, D); got {x.shape}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        top = np.percentile(np.abs(x), percentile, axis=0)
        return cls(np.maximum(top, 1e-8).astype(np.float32) / LEVELS)

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) float -> (N, D) int8 codes (values past the calibrated range are clipped)."""
        x = self._check(embeddings)
        return np.clip(np.rint(x / self.scale), -LEVELS, LEVELS).astype(np.int8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(N, D) int8 codes -> (N, D) float32 embeddings."""
        c = np.asarray(codes)
        if c.dtype != np.int8 or c.ndim != 2 or c.shape[1] != self.dim:
            raise ValueError(f"codes must be int8 (N, {self.dim}); got {c.dtype} {c.shape}")
        return c.astype(np.float32) * self.scale

    def roundtrip(self, embeddings: np.ndarray) -> np.ndarray:
        """``decode(encode(x))``: what a 128-byte face stands for."""
        return self.decode(self.encode(embeddings))

    def distance_error_bound(self, distance: float) -> float:
        """The most a squared-L2 ``distance`` between two in-range faces can move when both are
        decoded: each coordinate difference moves by at most one step, so
        ``|d' - d| <= 2 * sqrt(d) * ||scale|| + ||scale||**2``."""
        norm = float(np.linalg.norm(self.scale))
        return 2.0 * float(np.sqrt(max(distance, 0.0))) * norm + norm**2

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "int8", "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Int8Codec:
        if d.get("kind") != "int8":
            raise ValueError(f"not an int8 codec: kind {d.get('kind')!r}")
        return cls(np.asarray(d["scale"], np.float32))

    def _check(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"embeddings must be (N, {self.dim}); got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("embeddings contain NaN or infinity")
        return x
