"""What every gallery backend is and answers: the ``Gallery`` interface, its records and errors.

A gallery holds identities (printable names), their photos and one embedding per enrolled face,
with the model that made them, and answers "who are these embeddings?" by nearest neighbours.
``Gallery(location)`` opens the backend the location names (``facenet.apps.gallery`` registers
them): a folder is the embedded default (SQLite + FAISS, ``gallery_sqlite``); ``milvus-lite:///
path.db`` and ``milvus://host:port/collection`` are Milvus (``gallery_milvus``, extra
``milvus``). Every backend keeps the same promises, checked by one contract test suite
(``tests/apps/test_gallery_contract.py``): the same answers, the same refusals of another model's
queries, duplicates stored once, names refused alike.

Identification takes the nearest embeddings, keeps each identity's closest one, and calls the
probe **unknown** when even the nearest identity is farther than the open-set threshold.
"""

from __future__ import annotations

import json
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facenet.fingerprint import ModelFingerprint

UNKNOWN = "unknown"
MAX_NAME_LENGTH = 200


class GalleryError(Exception):
    """A gallery operation that cannot be done; ``str(e)`` says why and what to do."""


class IncompatibleModelError(GalleryError):
    """The gallery's embeddings come from a different embedding space than the caller's model."""


class UnknownIdentityError(GalleryError):
    """A name that is not enrolled."""


class UnknownImageError(GalleryError):
    """An image id that is not in the gallery."""


@dataclass(frozen=True)
class FaceRecord:
    """One face to enrol: its embedding and where it came from."""

    embedding: np.ndarray  # (D,) float32 unit vector
    path: str  # source photo
    face_index: int = 0  # which face of the photo
    box: tuple[float, float, float, float] | None = None  # (x1, y1, x2, y2) in the photo
    sha256: str | None = None  # of the photo's bytes, to spot re-enrolments


@dataclass(frozen=True)
class Duplicate:
    """A face not enrolled because the gallery already holds it (same photo bytes, same face)."""

    path: str  # the photo given now
    identity: str  # who it is enrolled as
    enrolled_path: str  # the path it was enrolled from


@dataclass(frozen=True)
class EnrollResult:
    """What ``Gallery.enroll`` stored."""

    added: int  # faces stored
    duplicates: list[Duplicate] = field(default_factory=list)  # faces already in the gallery
    image_ids: list[int] = field(default_factory=list)  # ids of the images stored, in input order


@dataclass(frozen=True)
class IdentityInfo:
    name: str
    images: int
    embeddings: int
    created_at: float


@dataclass(frozen=True)
class ImageInfo:
    """One enrolled photo; ``id`` is what ``Gallery.remove_image`` takes."""

    id: int
    identity: str
    path: str  # where it was enrolled from (a file path, or an upload's name)
    sha256: str | None
    faces: int  # embeddings stored from it
    added_at: float


@dataclass(frozen=True)
class RemovedImage:
    """What ``Gallery.remove_image`` deleted."""

    image: ImageInfo
    identity_removed: bool  # it was the identity's last image, so the identity went too


@dataclass(frozen=True)
class Match:
    """One gallery identity near a probe."""

    name: str
    distance: float  # squared L2 distance of the identity's closest enrolled face to the probe
    path: str  # the photo of that closest face


@dataclass(frozen=True)
class Identification:
    """The answer to "who is this?" for one probe face."""

    name: str  # the nearest identity, or UNKNOWN when it is beyond the threshold
    distance: float  # squared L2 distance to the nearest identity (inf for an empty gallery)
    threshold: float  # the open-set threshold that was applied
    matches: list[Match] = field(default_factory=list)  # nearest identities, closest first

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN


def check_identity_name(name: str) -> str:
    """``name`` stripped, or ``GalleryError`` when it cannot be an identity name.

    Refused: empty names, the reserved ``unknown``, names over ``MAX_NAME_LENGTH`` characters and
    any control or format character (newline, tab, NUL, bidi overrides, zero-width marks): such
    characters would let a name spoof or hide rows in listings and answers.
    """
    if not isinstance(name, str):
        raise GalleryError(f"an identity name must be text, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise GalleryError("an identity needs a non-empty name")
    bad = sorted(
        {
            ch
            for ch in name
            if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")
        }
    )
    if bad:
        shown = ", ".join(f"U+{ord(ch):04X}" for ch in bad)
        raise GalleryError(
            f"identity name {printable(name)!r} contains control or format characters ({shown}); "
            "use printable text"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(
            f"identity name is {len(name)} characters long; at most {MAX_NAME_LENGTH}"
        )
    if name == UNKNOWN:
        raise GalleryError(f"{UNKNOWN!r} is reserved for open-set rejections; pick another name")
    return name


def check_schema_version(where: str, version: str | None, supported: int) -> None:
    """``GalleryError`` unless ``version`` (a gallery's recorded schema) is one this version of
    facenet reads: a gallery from a newer one is never opened and written to."""
    if version is None or not str(version).isdigit():
        raise GalleryError(f"{where}: not a facenet gallery (no readable schema version)")
    if int(version) > supported:
        raise GalleryError(
            f"{where}: made by a newer facenet (gallery schema {version}; this version reads "
            f"{supported}): upgrade facenet to open it"
        )


def printable(text: str) -> str:
    """``text`` with control and format characters shown as escapes (for names stored by older
    versions, before such names were refused)."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")
        else ch
        for ch in text
    )


def unit_rows(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise GalleryError(f"embeddings must be (N, {dim or 'D'}); got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise GalleryError("embeddings contain NaN or infinity")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms < 1e-6).any():
        raise GalleryError("an embedding has zero length")
    return x / norms


# --------------------------------------------------------------------------- the interface

# scheme -> backend class; a location without a known scheme is a folder (the embedded backend)
BACKENDS: dict[str, type[Gallery]] = {}


def register_backend(*schemes: str) -> Callable[[type[Gallery]], type[Gallery]]:
    """Class decorator: ``Gallery(location)`` opens locations ``<scheme>://...`` with it; the
    scheme ``""`` is the default (a folder)."""

    def register(cls: type[Gallery]) -> type[Gallery]:
        for scheme in schemes:
            BACKENDS[scheme] = cls
        return cls

    return register


def backend_for(location: Any) -> type[Gallery]:
    """The backend class of ``location`` (a path, or a URI whose scheme is registered)."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    if sep and scheme in BACKENDS:
        return BACKENDS[scheme]
    if sep and scheme.isalpha() and len(scheme) > 1:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS) if s) or "none"
        raise GalleryError(f"{text}: unknown gallery scheme {scheme!r} (known: {known}; "
                           "or a folder path)")  # fmt: skip
    return BACKENDS[""]


class Gallery(ABC):
    """A face gallery; ``Gallery(location, create=True)`` opens the backend ``location`` names
    (a folder: the embedded SQLite + FAISS backend; ``milvus-lite:///path.db``;
    ``milvus://host:port/collection``), created on first write unless ``create`` is False."""

    location: str  # what the user named it by (a folder or a URI), for messages

    def __new__(cls, *args: Any, **kwargs: Any) -> Gallery:
        if cls is Gallery:
            location = args[0] if args else kwargs.get("location", kwargs.get("directory"))
            cls = backend_for(location)
        return super().__new__(cls)

    # ------------------------------------------------------------------ plumbing

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ provenance

    @abstractmethod
    def _meta(self, key: str) -> str | None:
        """A value of the gallery's own records (``model``, ``thresholds``, ``gallery_id``)."""

    @property
    def gallery_id(self) -> str:
        """Random id made with the gallery."""
        return self._meta("gallery_id") or ""

    @property
    def model(self) -> ModelFingerprint | None:
        """The embedding space of this gallery (set by the first enrolment)."""
        raw = self._meta("model")
        return None if raw is None else ModelFingerprint.from_dict(json.loads(raw))

    @property
    def thresholds(self) -> dict[str, float]:
        """The thresholds of the model that built the gallery, recorded at its first enrolment."""
        raw = self._meta("thresholds")
        return {} if raw is None else {k: float(v) for k, v in json.loads(raw).items()}

    def check_model(self, model: ModelFingerprint, *, enrolling: bool = False) -> None:
        """Raise ``IncompatibleModelError`` unless ``model`` may query (``enrolling``: extend)
        this gallery. A model declared harmonic with the gallery's may query it; only the
        gallery's own model may enrol, so every stored face comes from one model (its
        thresholds, the index and later re-embedding all assume so)."""
        mine = self.model
        if mine is None:
            return
        if model.can_query(mine):
            if not enrolling or model.weights_hash == mine.weights_hash:
                return
            raise IncompatibleModelError(
                f"gallery {self.location} was built with {mine.describe()}; the model in use, "
                f"{model.describe()}, is harmonic with it: it may identify against the gallery "
                f"but not enrol into it (every stored face comes from one model). Enrol with "
                f"--model {mine.ref or mine.name}, or into a new gallery (--gallery DIR)."
            )
        raise IncompatibleModelError(
            f"gallery {self.location} was built with {mine.describe()}; the model in use is "
            f"{model.describe()}. Embeddings of different models are not comparable: use "
            f"--model {mine.ref or mine.name} or enrol into a new gallery (--gallery DIR)."
        )

    # ------------------------------------------------------------------ writes

    @abstractmethod
    def enroll(
        self,
        name: str,
        faces: Sequence[FaceRecord],
        model: ModelFingerprint,
        thresholds: dict[str, float] | None = None,
    ) -> EnrollResult:
        """Add ``faces`` to identity ``name`` (created if new), all or nothing where the backend
        can promise it.

        A face whose photo (``FaceRecord.sha256``) and face index are already in the gallery, or
        appear twice in ``faces``, is not stored again; it is listed in the result.

        Raises:
            GalleryError: a name ``check_identity_name`` refuses, or no faces;
            IncompatibleModelError: another model's gallery.
        """

    @abstractmethod
    def remove(self, name: str) -> int:
        """Delete identity ``name`` with its images and embeddings; returns embeddings removed
        (``UnknownIdentityError`` if it is not enrolled)."""

    @abstractmethod
    def remove_image(self, image_id: int) -> RemovedImage:
        """Delete one enrolled photo with its embeddings (ids from ``images``); an identity left
        without photos is deleted too (``UnknownImageError`` for an unknown id)."""

    def rebuild_index(self) -> None:  # noqa: B027 - a backend without a derived index has none
        """Rebuild the search index from the stored embeddings."""

    # ------------------------------------------------------------------ reads

    @abstractmethod
    def identities(self, offset: int = 0, limit: int | None = None) -> list[IdentityInfo]:
        """Enrolled identities with their counts, by name (``limit`` of them from ``offset``)."""

    @abstractmethod
    def identity_count(self) -> int: ...

    @abstractmethod
    def images(
        self,
        name: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        image_id: int | None = None,
    ) -> list[ImageInfo]:
        """Enrolled photos by id (``limit`` of them from ``offset``): all, those of identity
        ``name`` (``UnknownIdentityError`` if it is not enrolled), or the one ``image_id``."""

    def image_count(self, name: str | None = None) -> int:
        return len(self.images(name))

    @abstractmethod
    def __len__(self) -> int:
        """Embeddings stored."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int = 5, model: ModelFingerprint | None = None
    ) -> list[list[Match]]:
        """The ``k`` nearest identities of each (Q, D) query, closest first; each identity
        appears once, at the distance of its closest enrolled face."""

    def identify(
        self,
        queries: np.ndarray,
        threshold: float,
        k: int = 5,
        model: ModelFingerprint | None = None,
    ) -> list[Identification]:
        """Open-set identification of each (Q, D) query at squared-L2 ``threshold``."""
        out = []
        for matches in self.search(queries, k, model):
            if not matches:
                out.append(Identification(UNKNOWN, float("inf"), threshold, []))
                continue
            top = matches[0]
            name = top.name if top.distance <= threshold else UNKNOWN
            out.append(Identification(name, top.distance, threshold, matches))
        return out

    def _unknown_message(self, name: str) -> str:
        names = [i.name for i in self.identities(limit=21)]
        hint = f" Enrolled: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}."
        return f"no identity {name!r} in gallery {self.location}." + (hint if names else "")
