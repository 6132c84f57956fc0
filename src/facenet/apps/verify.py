"""Face verification: are the main faces of two photos the same person?

The squared L2 distance of the two unit embeddings is compared with a threshold: the model's
calibrated one (best LFW accuracy, or a target false-accept rate), or one the caller passes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from facenet.apps.embedder import Embedder, Face, Pick
from facenet.apps.thresholds import resolve_threshold


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
    face_a: int = 0  # face_index of the face compared in A (detector order)
    face_b: int = 0
    faces_a: int = 1  # faces found in A
    faces_b: int = 1
    chosen_a: str = "main face"  # how the face of A was chosen: "main face" or "chosen"
    chosen_b: str = "main face"

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
            "face_a": self.face_a,
            "face_b": self.face_b,
            "faces_found_a": self.faces_a,
            "faces_found_b": self.faces_b,
            "face_chosen_by_a": self.chosen_a,
            "face_chosen_by_b": self.chosen_b,
        }

    def notes(self) -> list[str]:
        """What the verdict rests on that a reader should know: photos with several faces."""
        out = []
        for side, path, n, i, how in (
            ("a", self.path_a, self.faces_a, self.face_a, self.chosen_a),
            ("b", self.path_b, self.faces_b, self.face_b, self.chosen_b),
        ):
            if n > 1:
                what = "the main face (largest, most central)" if how == "main face" else "as asked"
                out.append(
                    f"{path}: {n} faces found; compared face {i}, {what}; "
                    f"choose another with --face-{side} N"
                )
        return out

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
    a: Face | Pick, b: Face | Pick, threshold: float, threshold_source: str = "--threshold"
) -> Verification:
    """Compare two embedded faces at ``threshold`` (squared L2)."""
    pa = a if isinstance(a, Pick) else Pick(a, 1, "main face")
    pb = b if isinstance(b, Pick) else Pick(b, 1, "main face")
    fa, fb = pa.face, pb.face
    assert fa.embedding is not None and fb.embedding is not None
    dist = squared_distance(fa.embedding, fb.embedding)
    return Verification(
        str(fa.path),
        str(fb.path),
        dist,
        float(threshold),
        threshold_source,
        dist <= threshold,
        fa.box,
        fb.box,
        fa.face_index,
        fb.face_index,
        pa.faces_found,
        pb.faces_found,
        pa.chosen_by,
        pb.chosen_by,
    )


def verify_files(
    embedder: Embedder,
    path_a: str | os.PathLike,
    path_b: str | os.PathLike,
    threshold: float | None = None,
    far: float | None = None,
    face_a: int | None = None,
    face_b: int | None = None,
) -> Verification:
    """Verify one face of each of two photos (by default each photo's main face).

    Args:
        threshold: squared-L2 threshold; default the model's calibrated one.
        far: use the model's threshold calibrated for this false-accept rate instead.
        face_a, face_b: ``face_index`` of the face to compare in each photo (detector order);
            None picks the main face. The result says how many faces each photo has.

    Raises:
        ImageError / NoFaceError: a photo is unreadable or has no face (the message names it).
        ValueError: no threshold is available, or no such face.
    """
    t, source = resolve_threshold(embedder.thresholds, threshold, far)
    pick_a = embedder.pick_of_file(path_a, face_a)
    pick_b = embedder.pick_of_file(path_b, face_b)
    return verify_faces(pick_a, pick_b, t, source)
