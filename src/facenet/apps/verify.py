"""Face verification: are the main faces of two photos the same person?

The squared L2 distance of the two unit embeddings is compared with the threshold of one
operating point (``facenet.apps.thresholds.operating_point``: the model's ``far_1e-3`` by
default, or a named one, a false-accept rate, or a threshold the caller passes).
"""

from __future__ import annotations

import os

import numpy as np

from facenet.apps.embedder import Embedder, Face, Pick
from facenet.apps.results import ImageAnswer, VerifyResult, face_answer
from facenet.apps.thresholds import OperatingPoint, operating_point


def squared_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Squared L2 distance of two (D,) vectors."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d @ d)


def _image(pick: Pick, used: Face, crop: str, **decision: object) -> ImageAnswer:
    faces = pick.faces or (used,)
    answers = tuple(
        face_answer(f, crop, **decision) if f is used else face_answer(f, crop, used=False)
        for f in faces
    )
    return ImageAnswer(str(used.path), answers, chosen_by=pick.chosen_by)


def verify_faces(
    a: Face | Pick, b: Face | Pick, op: OperatingPoint, crop: str = "box"
) -> VerifyResult:
    """Compare two embedded faces at ``op``'s threshold (squared L2)."""
    pa = a if isinstance(a, Pick) else Pick(a, 1, "main face", (a,))
    pb = b if isinstance(b, Pick) else Pick(b, 1, "main face", (b,))
    fa, fb = pa.face, pb.face
    if fa.embedding is None or fb.embedding is None:
        raise ValueError("verify_faces needs embedded faces")
    dist = squared_distance(fa.embedding, fb.embedding)
    same = dist <= op.threshold
    decision = {"distance": dist, "operating_point": op, "same": same}
    images = (_image(pa, fa, crop, **decision), _image(pb, fb, crop, **decision))
    return VerifyResult(images, dist, same, op)


def verify_files(
    embedder: Embedder,
    path_a: str | os.PathLike,
    path_b: str | os.PathLike,
    threshold: float | None = None,
    far: float | None = None,
    face_a: int | None = None,
    face_b: int | None = None,
    operating_point_name: str | None = None,
) -> VerifyResult:
    """Verify one face of each of two photos (by default each photo's main face).

    Args:
        threshold: squared-L2 threshold; default the model's operating point.
        far: use the model's threshold calibrated for this false-accept rate instead.
        face_a, face_b: ``face_index`` of the face to compare in each photo (detector order);
            None picks the main face. The result lists every face of each photo.
        operating_point_name: the model's named operating point (default ``far_1e-3``).

    Raises:
        ImageError / NoFaceError: a photo is unreadable or has no face (the message names it).
        ValueError: no threshold is available, or no such face.
    """
    op = operating_point(embedder.thresholds, threshold, far, operating_point_name)
    pick_a = embedder.pick_of_file(path_a, face_a)
    pick_b = embedder.pick_of_file(path_b, face_b)
    return verify_faces(pick_a, pick_b, op, embedder.crop_mode)
