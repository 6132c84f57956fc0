"""Face verification: are the main faces of two photos the same person?

The squared L2 distance of the two unit embeddings is compared with a threshold: the model's
calibrated one (best LFW accuracy, or a target false-accept rate), or one the caller passes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from facenet.apps.embedder import Embedder, Face, resolve_threshold


@dataclass(frozen=True)
class Verification:
    """The verdict on one pair of photos."""

    path_a: str
    path_b: str
    distance: float  # squared L2 distance between the two embeddings, in [0, 4]
    threshold: float  # same person iff distance <= threshold
    threshold_source: str  # "--threshold", "model accuracy", "model far_1e-3", ...
    same: bool
    box_a: tuple[float, float, float, float]
    box_b: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.path_a,
            "b": self.path_b,
            "distance": round(self.distance, 6),
            "threshold": round(self.threshold, 6),
            "threshold_source": self.threshold_source,
            "same": self.same,
            "box_a": [round(v, 1) for v in self.box_a],
            "box_b": [round(v, 1) for v in self.box_b],
        }

    def sentence(self) -> str:
        verdict = "SAME person" if self.same else "DIFFERENT people"
        return (
            f"{verdict}: distance {self.distance:.3f} "
            f"{'<=' if self.same else '>'} threshold {self.threshold:.3f} ({self.threshold_source})"
        )


def squared_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Squared L2 distance of two (D,) vectors."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(d @ d)


def verify_faces(
    a: Face, b: Face, threshold: float, threshold_source: str = "--threshold"
) -> Verification:
    """Compare two embedded faces at ``threshold`` (squared L2)."""
    assert a.embedding is not None and b.embedding is not None
    dist = squared_distance(a.embedding, b.embedding)
    return Verification(
        str(a.path),
        str(b.path),
        dist,
        float(threshold),
        threshold_source,
        dist <= threshold,
        a.box,
        b.box,
    )


def verify_files(
    embedder: Embedder,
    path_a: str | os.PathLike,
    path_b: str | os.PathLike,
    threshold: float | None = None,
    far: float | None = None,
) -> Verification:
    """Verify the main faces of two photos.

    Args:
        threshold: squared-L2 threshold; default the model's calibrated one.
        far: use the model's threshold calibrated for this false-accept rate instead.

    Raises:
        ImageError / NoFaceError: a photo is unreadable or has no face (the message names it).
        ValueError: no threshold is available.
    """
    t, source = resolve_threshold(embedder.thresholds, threshold, far)
    face_a = embedder.subject_of_file(path_a)
    face_b = embedder.subject_of_file(path_b)
    return verify_faces(face_a, face_b, t, source)
