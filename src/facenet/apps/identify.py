"""Open-set identification: who is in this photo? A face is "unknown" when even the nearest
enrolled identity is beyond the operating point's threshold (``facenet.apps.thresholds``)."""

from __future__ import annotations

import os

import numpy as np

from facenet.apps.embedder import Embedder, NoFaceError
from facenet.apps.gallery import Gallery
from facenet.apps.results import IdentifyResult, ImageAnswer, face_answer, identification_answer
from facenet.apps.thresholds import operating_point
from facenet.data.images import load_image


def identify_image(
    embedder: Embedder,
    gallery: Gallery,
    image: np.ndarray,
    name: str = "<input 0>",
    k: int = 5,
    face: int | None = None,
    all_faces: bool = False,
    threshold: float | None = None,
    far: float | None = None,
    operating_point_name: str | None = None,
) -> IdentifyResult:
    """Identify the main face of ``image`` (or face ``face``, or every face) in ``gallery``.

    The threshold is the model's operating point (``far_1e-3`` by default; the gallery's
    calibration when the model carries none), or ``threshold`` / ``far`` / a named one.

    Raises:
        NoFaceError: no face in the image.
        GalleryError: the gallery was built with another model.
        ValueError: no such face, or no threshold.
    """
    gallery.check_model(embedder.fingerprint)
    where = "model" if embedder.thresholds else "gallery"
    op = operating_point(
        embedder.thresholds or gallery.thresholds, threshold, far, operating_point_name, where
    )
    crop = embedder.crop_mode
    if all_faces:
        faces = embedder.faces(image, name)
        if not faces:
            raise NoFaceError(name)
        used, found, chosen_by = faces, faces, "all"
    else:
        pick = embedder.pick(image, name, face)
        used, found, chosen_by = [pick.face], list(pick.faces), pick.chosen_by
    answers = gallery.identify([f.embedding for f in used], op.threshold, k, embedder.fingerprint)
    by_face = {id(f): a for f, a in zip(used, answers, strict=True)}
    faces_out = tuple(
        identification_answer(f, crop, by_face[id(f)], op)
        if id(f) in by_face
        else face_answer(f, crop, used=False)
        for f in found
    )
    return IdentifyResult((ImageAnswer(name, faces_out, chosen_by=chosen_by),), op)


def identify_file(
    embedder: Embedder, gallery: Gallery, path: str | os.PathLike, **kwargs: object
) -> IdentifyResult:
    """``identify_image`` of the photo at ``path`` (errors name the file)."""
    return identify_image(embedder, gallery, load_image(path), str(path), **kwargs)  # type: ignore[arg-type]
