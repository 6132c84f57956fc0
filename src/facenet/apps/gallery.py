"""Face galleries: ``Gallery(location)`` opens one, on any registered backend, and the photo-in
helpers enrol photos into it.

``Gallery(folder)`` is the embedded default (SQLite + FAISS: ``facenet.apps.gallery_sqlite``);
``Gallery("milvus-lite:///path.db")`` and ``Gallery("milvus://host:19530/collection")`` are
Milvus (``facenet.apps.gallery_milvus``, extra ``milvus``). The interface, its records and
errors are in ``facenet.apps.gallery_base``; this module re-exports them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from facenet.apps import gallery_milvus, gallery_sqlite
from facenet.apps.gallery_base import (
    BACKENDS,
    MAX_NAME_LENGTH,
    UNKNOWN,
    Duplicate,
    EnrollResult,
    FaceRecord,
    Gallery,
    GalleryError,
    Identification,
    IdentityInfo,
    ImageInfo,
    IncompatibleModelError,
    Match,
    RemovedImage,
    UnknownIdentityError,
    UnknownImageError,
    backend_for,
    check_identity_name,
    printable,
)
from facenet.apps.gallery_milvus import MilvusGallery
from facenet.apps.gallery_sqlite import DB_NAME, SqliteGallery
from facenet.fingerprint import file_sha256

__all__ = [
    "BACKENDS", "DB_NAME", "MAX_NAME_LENGTH", "UNKNOWN", "Duplicate", "EnrollReport",
    "EnrollResult", "FaceRecord", "Gallery", "GalleryError", "IdentityInfo", "Identification",
    "ImageInfo", "IncompatibleModelError", "Match", "MilvusGallery", "RemovedImage",
    "SqliteGallery", "UnknownIdentityError", "UnknownImageError", "backend_for",
    "check_identity_name", "enroll_files", "enroll_records", "gallery_milvus", "gallery_sqlite",
    "printable",
]  # fmt: skip


# --------------------------------------------------------------------------- photos in, answers out


@dataclass
class EnrollReport:
    """What ``enroll_files`` did."""

    name: str
    added: int  # faces enrolled
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason)
    duplicates: list[Duplicate] = field(default_factory=list)  # photos already enrolled


def enroll_files(
    gallery: Gallery, embedder: Any, name: str, paths: Sequence[str | os.PathLike]
) -> EnrollReport:
    """Enrol the main face of each photo as ``name`` (one transaction for all of them).

    Unreadable photos and photos without a face are skipped and reported; photos already in the
    gallery are reported as duplicates and not stored again. When no photo is usable,
    ``GalleryError`` is raised and the gallery is unchanged.
    """
    name = check_identity_name(name)
    gallery.check_model(embedder.fingerprint, enrolling=True)
    faces: list[FaceRecord] = []
    skipped: list[tuple[str, str]] = []
    for result in embedder.embed_files(paths, subject_only=True):
        if result.error:
            skipped.append((result.path, result.error))
        elif not result.faces:
            skipped.append((result.path, f"{result.path}: no face found"))
        else:
            f = result.faces[0]
            try:
                digest = file_sha256(result.path)
            except OSError as e:  # removed or replaced since it was read
                skipped.append((result.path, f"{result.path}: {e.strerror or e}"))
                continue
            faces.append(FaceRecord(f.embedding, result.path, f.face_index, f.box, digest))
    return enroll_records(gallery, embedder, name, faces, skipped)


def enroll_records(
    gallery: Gallery,
    embedder: Any,
    name: str,
    faces: Sequence[FaceRecord],
    skipped: list[tuple[str, str]],
) -> EnrollReport:
    """Enrol ``faces`` as ``name`` in one transaction, reporting ``skipped`` inputs; when no face
    is usable, ``GalleryError`` (naming why) and the gallery is unchanged."""
    if not faces:
        reasons = "; ".join(r for _, r in skipped) or "no photos given"
        raise GalleryError(f"nothing enrolled for {name!r}: {reasons}")
    result = gallery.enroll(name, faces, embedder.fingerprint, embedder.thresholds)
    return EnrollReport(name, result.added, skipped, result.duplicates)
