"""Photos in, a table of embedded faces out: the loop behind ``facenet embed`` and
``facenet cluster PHOTOS``.

Every face of every photo becomes one row of an ``EmbeddingTable`` (photo, face index, box,
detector score, unit embedding); a photo that cannot be read or has no face becomes a
``PhotoProblem`` instead, so a batch goes on past a bad photo and the caller decides how to
report it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from facenet.apps.embedder import NO_CROP, Embedder
from facenet.apps.embedding_table import EmbeddingTable


@dataclass(frozen=True)
class PhotoProblem:
    """A photo that gave no face."""

    path: str
    message: str  # one line naming the photo: "<path>: <why>"
    unreadable: bool  # True: the photo could not be read; False: it has no face


@dataclass(frozen=True)
class EmbeddedPhotos:
    """The faces of a batch of photos and the photos that gave none."""

    table: EmbeddingTable  # one row per face, photos in the order given
    photos: int  # photos given
    problems: list[PhotoProblem] = field(default_factory=list)  # in the order given

    @property
    def unreadable(self) -> int:
        """Photos that could not be read."""
        return sum(p.unreadable for p in self.problems)

    @property
    def faceless(self) -> int:
        """Photos read but without a face."""
        return len(self.problems) - self.unreadable

    @property
    def with_faces(self) -> int:
        """Photos that gave at least one face."""
        return self.photos - len(self.problems)


def embed_table(
    embedder: Embedder,
    paths: Sequence[str | os.PathLike],
    subject_only: bool = False,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> EmbeddedPhotos:
    """Embed every face of ``paths`` (only each photo's main face with ``subject_only``).

    Args:
        meta: recorded in the table (``EmbeddingTable.meta``), e.g. the model's fingerprint.

    Returns:
        ``EmbeddedPhotos``: the table of faces (possibly empty) and one problem per photo that
        gave none.
    """
    faces = []
    problems: list[PhotoProblem] = []
    for result in embedder.embed_files(paths, subject_only=subject_only, progress=progress):
        if result.error:
            problems.append(PhotoProblem(str(result.path), result.error, unreadable=True))
        elif not result.faces:
            message = f"{result.path}: no face found"
            problems.append(PhotoProblem(str(result.path), message, unreadable=False))
        for face in result.faces:
            # why: a crop is ~75 KB and the table needs none; a million faces would keep 75 GB
            face.crop = NO_CROP
        faces.extend(result.faces)
    table = EmbeddingTable.from_faces(faces, embedder.embedding_dim, dict(meta or {}))
    return EmbeddedPhotos(table, len(paths), problems)
