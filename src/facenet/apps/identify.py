"""Open-set identification: who is in this photo? A face is "unknown" when even the nearest
enrolled identity is beyond the operating point's threshold (``facenet.apps.thresholds``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from facenet.apps.embedder import Embedder, Face, NoFaceError
from facenet.apps.gallery import Gallery
from facenet.apps.results import IdentifyResult, ImageAnswer, face_answer, identification_answer
from facenet.apps.thresholds import CLI_WORDS, OperatingPoint, Words, operating_point
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
    words: Words = CLI_WORDS,
) -> IdentifyResult:
    """Identify the main face of ``image`` (or face ``face``, or every face) in ``gallery``.

    The threshold is the model's operating point (``far_1e-3`` by default; the gallery's
    calibration when the model carries none), or ``threshold`` / ``far`` / a named one
    (``words``: the caller's names for those, in messages).

    Raises:
        NoFaceError: no face in the image.
        GalleryError: the gallery was built with another model.
        ValueError: no such face, or no threshold.
    """
    gallery.check_model(embedder.fingerprint)
    op = gallery_operating_point(embedder, gallery, threshold, far, operating_point_name, words)
    if all_faces:
        faces = embedder.faces(image, name)
        if not faces:
            raise NoFaceError(name)
        used, found, chosen_by = faces, faces, "all"
    else:
        pick = embedder.pick(image, name, face)
        used, found, chosen_by = [pick.face], list(pick.faces), pick.chosen_by
    return answer_faces(embedder, gallery, name, found, used, op, k, chosen_by)


def gallery_operating_point(
    embedder: Embedder,
    gallery: Gallery,
    threshold: float | None = None,
    far: float | None = None,
    name: str | None = None,
    words: Words = CLI_WORDS,
) -> OperatingPoint:
    """The operating point identification uses: the model's calibration, else the one the
    gallery recorded at its first enrolment. A harmonic model probing a gallery another model
    enrolled (SPEC §6) compares its embeddings with that model's, whose distances neither
    model's own thresholds describe: it uses the thresholds calibrated on such mixed pairs
    (``ModelCard.mixed_thresholds``), else the gallery's."""
    enrolled = gallery.model
    if enrolled is not None and enrolled.weights_hash != embedder.fingerprint.weights_hash:
        mixed = embedder.card.mixed_thresholds.get(enrolled.weights_hash)
        if mixed:
            return operating_point(mixed, threshold, far, name, "model (mixed pairs)", words)
        return operating_point(gallery.thresholds, threshold, far, name, "gallery", words)
    where = "model" if embedder.thresholds else "gallery"
    thresholds = embedder.thresholds or gallery.thresholds
    return operating_point(thresholds, threshold, far, name, where, words)


def answer_faces(
    embedder: Embedder,
    gallery: Gallery,
    name: str,
    found: Sequence[Face],
    used: Sequence[Face],
    op: OperatingPoint,
    k: int = 5,
    chosen_by: str = "all",
) -> IdentifyResult:
    """Search ``gallery`` for the embedded faces ``used`` of one image; every face ``found`` is
    listed, the searched ones with their identity and nearest matches."""
    vectors = np.stack([f.embedding for f in used])
    answers = gallery.identify(vectors, op.threshold, k, embedder.fingerprint)
    by_face = {id(f): a for f, a in zip(used, answers, strict=True)}
    crop = embedder.crop_mode
    faces = tuple(
        identification_answer(f, crop, by_face[id(f)], op)
        if id(f) in by_face
        else face_answer(f, crop, used=False)
        for f in found
    )
    return IdentifyResult((ImageAnswer(name, faces, chosen_by=chosen_by),), op)


def identify_file(
    embedder: Embedder, gallery: Gallery, path: str | os.PathLike, **kwargs: object
) -> IdentifyResult:
    """``identify_image`` of the photo at ``path`` (errors name the file)."""
    return identify_image(embedder, gallery, load_image(path), str(path), **kwargs)  # type: ignore[arg-type]
