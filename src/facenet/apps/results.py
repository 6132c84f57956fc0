"""One result schema for every interface: the Python API (``facenet.load``), the CLI's ``--json``
and the HTTP service return these dataclasses, or their ``to_dict()``.

Every answer is a list of images, each with the list of faces found in it; a face carries its
box, detector score and crop framing, and, where a decision was made on it, the distance, the
threshold used and the operating point that threshold stands for::

    {"images": [{"image": "a.jpg", "faces": [{"face_index": 0, "box": [...], "score": 0.99,
      "crop": "box", "used": true, "distance": 0.41, "threshold": 0.98,
      "operating_point": "far_1e-3", "threshold_source": "model far_1e-3", "same": true}]}],
     ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facenet.apps.embedder import Face
from facenet.apps.gallery import UNKNOWN, Identification
from facenet.apps.thresholds import OperatingPoint

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class MatchAnswer:
    """One enrolled identity near a face."""

    name: str
    distance: float  # squared L2 to the identity's closest enrolled face
    photo: str  # that face's photo

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distance": round(self.distance, 6), "photo": self.photo}


@dataclass(frozen=True)
class FaceAnswer:
    """One face of one image, and what was decided about it."""

    face_index: int  # detector order (0 = most confident)
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2) in image pixels
    score: float  # detector confidence (1.0 for crop="none")
    crop: str  # the framing the model saw: "box", "similarity" or "none"
    used: bool = True  # whether the answer rests on this face (verify uses one face per image)
    embedding: np.ndarray | None = field(default=None, repr=False)  # (D,) unit vector
    distance: float | None = None  # verify: to the other face; identify: to the nearest identity
    operating_point: OperatingPoint | None = None  # the threshold the decision used
    same: bool | None = None  # verify's verdict
    identity: str | None = None  # identify's answer: a name or "unknown"
    matches: tuple[MatchAnswer, ...] = ()  # identify: nearest identities, closest first

    @property
    def known(self) -> bool:
        return self.identity is not None and self.identity != UNKNOWN

    def to_dict(self, embedding: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "face_index": self.face_index,
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "crop": self.crop,
            "used": self.used,
        }
        if embedding and self.embedding is not None:
            out["embedding"] = [round(float(v), 7) for v in self.embedding]
        if self.distance is not None:
            # why: None (JSON null) when nothing is near, never Infinity
            out["distance"] = round(self.distance, 6) if np.isfinite(self.distance) else None
        if self.operating_point is not None:
            out |= self.operating_point.to_dict()
        if self.same is not None:
            out["same"] = self.same
        if self.identity is not None:
            out["identity"] = self.identity
            out["matches"] = [m.to_dict() for m in self.matches]
        return out


@dataclass(frozen=True)
class ImageAnswer:
    """The faces of one image (a path, or ``<input N>`` for bytes and arrays)."""

    image: str
    faces: tuple[FaceAnswer, ...] = ()
    error: str | None = None  # why the image gave no answer (unreadable, no face)
    chosen_by: str | None = None  # how the used face was chosen: "main face", "chosen", "all"

    @property
    def used(self) -> list[FaceAnswer]:
        return [f for f in self.faces if f.used]

    def to_dict(self, embedding: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "image": self.image,
            "faces": [f.to_dict(embedding) for f in self.faces],
        }
        if self.chosen_by is not None:
            out["face_chosen_by"] = self.chosen_by
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class EmbedResult:
    """Every face of every image, embedded."""

    images: tuple[ImageAnswer, ...]

    def to_dict(self, embedding: bool = True) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "images": [i.to_dict(embedding) for i in self.images]}


@dataclass(frozen=True)
class VerifyResult:
    """Are the used faces of two images the same person?"""

    images: tuple[ImageAnswer, ImageAnswer]
    distance: float
    same: bool
    operating_point: OperatingPoint

    @property
    def faces(self) -> tuple[FaceAnswer, FaceAnswer]:
        """The two faces compared."""
        return self.images[0].used[0], self.images[1].used[0]

    def sentence(self) -> str:
        verdict = "SAME person" if self.same else "DIFFERENT people"
        op = self.operating_point
        return (
            f"{verdict}: distance {self.distance:.3f} "
            f"{'<=' if self.same else '>'} threshold {op.threshold:.3f} ({op.source})"
        )

    def notes(self) -> list[str]:
        """What the verdict rests on that a reader should know: photos with several faces."""
        out = []
        for side, image in zip("ab", self.images, strict=True):
            if len(image.faces) > 1:
                used = image.used[0]
                what = (
                    "the main face (largest, most central)"
                    if image.chosen_by == "main face"
                    else "as asked"
                )
                out.append(
                    f"{image.image}: {len(image.faces)} faces found; compared face "
                    f"{used.face_index}, {what}; choose another with --face-{side} N"
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "same": self.same,
            "distance": round(self.distance, 6),
            **self.operating_point.to_dict(),
            "images": [i.to_dict() for i in self.images],
        }


@dataclass(frozen=True)
class IdentifyResult:
    """Who is each identified face of one image?"""

    images: tuple[ImageAnswer, ...]
    operating_point: OperatingPoint

    @property
    def faces(self) -> list[FaceAnswer]:
        """The identified faces (``identity`` set), image by image."""
        return [f for i in self.images for f in i.faces if f.identity is not None]

    @property
    def all_known(self) -> bool:
        return bool(self.faces) and all(f.known for f in self.faces)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            **self.operating_point.to_dict(),
            "images": [i.to_dict() for i in self.images],
        }


@dataclass(frozen=True)
class ClusterResult:
    """Faces grouped by person: ``labels[i]`` is the cluster of ``faces[i]`` (-1: unclustered)."""

    images: tuple[ImageAnswer, ...]
    labels: tuple[int, ...]  # one per face, in image order
    operating_point: OperatingPoint | None  # None for a method without a threshold (hdbscan)

    @property
    def clusters(self) -> dict[int, list[tuple[str, int]]]:
        """cluster label -> [(image, face_index), ...]; unclustered faces left out."""
        out: dict[int, list[tuple[str, int]]] = {}
        faces = [(i.image, f.face_index) for i in self.images for f in i.faces]
        for face, label in zip(faces, self.labels, strict=True):
            if label >= 0:
                out.setdefault(label, []).append(face)
        return out

    def to_dict(self) -> dict[str, Any]:
        labels = iter(self.labels)
        images = []
        for image in self.images:
            d = image.to_dict()
            for face in d["faces"]:
                face["cluster"] = next(labels)
            images.append(d)
        out: dict[str, Any] = {"schema": SCHEMA_VERSION, "images": images}
        if self.operating_point is not None:
            out |= self.operating_point.to_dict()
        return out


def face_answer(face: Face, crop: str, used: bool = True, **decision: Any) -> FaceAnswer:
    """A detected (and maybe embedded) face as an answer, with ``decision`` fields."""
    return FaceAnswer(
        face_index=face.face_index,
        box=tuple(float(v) for v in face.box),  # type: ignore[arg-type]
        score=float(face.score),
        crop=crop,
        used=used,
        embedding=face.embedding,
        **decision,
    )


def identification_answer(
    face: Face, crop: str, answer: Identification, op: OperatingPoint
) -> FaceAnswer:
    """A face and the gallery's answer about it."""
    return face_answer(
        face,
        crop,
        distance=answer.distance,
        operating_point=op,
        identity=answer.name,
        matches=tuple(MatchAnswer(m.name, m.distance, m.path) for m in answer.matches),
    )


def faces_of(faces: Sequence[Face], crop: str, used: Sequence[Face] = ()) -> tuple[FaceAnswer, ...]:
    """Faces as answers without a decision; ``used`` marks which ones an answer rests on."""
    ids = {id(f) for f in used}
    return tuple(face_answer(f, crop, used=id(f) in ids or not used) for f in faces)
