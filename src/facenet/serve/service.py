"""What each endpoint does, as small functions over the embedder and the gallery.

Threads: decoding and detection run in a pool of ``settings.workers`` threads, each with its own
instance of the named detector (``Embedder.detector``); the model runs in
the micro-batcher's thread; the gallery lives in one thread of its own (a SQLite connection
belongs to the thread that opened it, and SQLite takes one writer at a time anyway), so every
gallery call, reads and writes, is serialised there and concurrent enrolments never interleave.
The event loop only waits.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from facenet.apps.embedder import Embedder, Face, NoFaceError, Pick, subject_index
from facenet.apps.gallery import (
    FaceRecord,
    Gallery,
    GalleryError,
    IdentityInfo,
    ImageInfo,
    IncompatibleModelError,
    RemovedImage,
    UnknownIdentityError,
    UnknownImageError,
    check_identity_name,
)
from facenet.apps.identify import answer_faces, gallery_operating_point
from facenet.apps.results import (
    EmbedResult,
    IdentifyResult,
    ImageAnswer,
    VerifyResult,
    faces_of,
)
from facenet.apps.thresholds import OperatingPoint, Words, operating_point
from facenet.apps.verify import verify_faces
from facenet.serve.batcher import BatcherClosed, BatchFailed, MicroBatcher, QueueFull
from facenet.serve.images import decode_upload
from facenet.serve.metrics import Metrics
from facenet.serve.problems import ProblemError
from facenet.serve.settings import ServeSettings

T = TypeVar("T")


@dataclass(frozen=True)
class Upload:
    """One uploaded image: its (client-given, display-only) name and bytes."""

    name: str
    data: bytes


@dataclass
class ImageFaces:
    """The faces of one upload; those a request uses (``used``) are embedded."""

    name: str
    faces: list[Face]  # every face the detector found, in detector order
    used: list[Face]  # the faces the answer rests on: all of them, or the main one
    sha256: str
    shape: tuple[int, ...] = field(default=(0, 0, 3))


@dataclass(frozen=True)
class Choice:
    """A request's decision settings: its own ``threshold``, a false-accept rate ``far`` or a
    named ``operating_point`` (at most one is used, in that order; none: the default)."""

    threshold: float | None = None
    far: float | None = None
    operating_point: str | None = None


class GalleryThread:
    """The gallery, opened and used in one thread of its own."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="facenet-gallery")
        self._gallery: Gallery | None = None

    async def call(self, fn: Callable[[Gallery], T]) -> T:
        def work() -> T:
            if self._gallery is None:
                self._gallery = Gallery(self.directory)
            return fn(self._gallery)

        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def close(self) -> None:
        def work() -> None:
            if self._gallery is not None:
                self._gallery.close()
                self._gallery = None

        await asyncio.get_running_loop().run_in_executor(self._executor, work)
        self._executor.shutdown(wait=False)


class Service:
    """The state of a running server: settings, embedder, batcher, gallery, metrics."""

    def __init__(self, settings: ServeSettings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self.fingerprint = embedder.fingerprint  # why: hashes the weights once, at start-up
        self.metrics = Metrics()
        self.batcher = MicroBatcher(
            embedder.embed_crops,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue=settings.max_queue,
            on_batch=self.metrics.batch_size.observe,
        )
        self.metrics.watch_queue(lambda: self.batcher.queue_depth)
        self.gallery = GalleryThread(settings.gallery)
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="facenet-detect")
        await self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()
        await self.gallery.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @property
    def ready(self) -> bool:
        return self._pool is not None and self.batcher.running

    async def within_timeout(self, work: Awaitable[T]) -> T:
        """``work``, or 504 ``timeout`` after ``request_timeout_s``."""
        try:
            return await asyncio.wait_for(work, self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ProblemError(
                "timeout", f"the request took over {self.settings.request_timeout_s:g} s"
            ) from None

    # ------------------------------------------------------------------ faces

    def _find(self, upload: Upload, main_only: bool, face: int | None = None) -> ImageFaces:
        """Decode, detect and crop one upload (in a pool thread); nothing embedded yet. With
        ``face``, that face (detector order) is the one used."""
        image = decode_upload(upload.data, upload.name, self.settings.max_image_pixels)
        # why: the embedder's detect-and-crop step without its forward pass, so that the batcher
        # embeds the faces of many requests in one
        faces = self.embedder.detect_and_crop([image], [upload.name])[0]
        used = faces
        if face is not None:
            by_index = {f.face_index: f for f in faces}
            if face not in by_index:
                raise ProblemError(
                    "no_such_face",
                    f"{upload.name}: no face {face}; {len(faces)} face(s) found"
                    + (f", numbered {', '.join(map(str, sorted(by_index)))}" if faces else ""),
                )
            used = [by_index[face]]
        elif main_only and faces:
            used = [faces[subject_index(faces, image.shape)]]
        elif len(faces) > self.settings.max_faces:
            raise ProblemError(
                "too_many_faces",
                f"{upload.name}: {len(faces)} faces found; "
                f"at most {self.settings.max_faces} per image",
            )
        digest = hashlib.sha256(upload.data).hexdigest()
        return ImageFaces(upload.name, faces, used, digest, image.shape)

    async def detect(
        self, upload: Upload, main_only: bool = False, face: int | None = None
    ) -> ImageFaces:
        """The faces of one upload (all, its main one, or ``face``), found and cropped, not
        embedded."""
        if self._pool is None:
            raise ProblemError("not_ready", "the server is not running")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._find, upload, main_only, face)

    async def faces(
        self, upload: Upload, main_only: bool = False, face: int | None = None
    ) -> ImageFaces:
        """The faces of one upload (all, its main one, or ``face``), embedded."""
        found = await self.detect(upload, main_only, face)
        if found.used:
            embeddings = await self.embed([f.crop for f in found.used])
            for face, e in zip(found.used, embeddings, strict=True):
                face.embedding = e
        return found

    async def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Crops -> (N, D) embeddings through the micro-batcher; its failures as problems."""
        try:
            return await self.batcher.embed(crops)
        except QueueFull:
            raise ProblemError(
                "overloaded", "too many faces are waiting for the model", {"Retry-After": "1"}
            ) from None
        except BatcherClosed:
            raise ProblemError("not_ready", "the server is shutting down") from None
        except BatchFailed:
            raise ProblemError("internal", "embedding failed; the error has been logged") from None


# --------------------------------------------------------------------------- the endpoints' work


def _main_face(found: ImageFaces, chosen: bool = False) -> Pick:
    """The used (main, or ``chosen``) face of an upload as the library's ``Pick`` (422
    ``no_face`` if none)."""
    if not found.used:
        raise ProblemError("no_face", f"{found.name}: no face found")
    how = "chosen" if chosen else "main face"
    return Pick(found.used[0], len(found.faces), how, tuple(found.faces))


async def embed_images(svc: Service, uploads: Sequence[Upload]) -> EmbedResult:
    """Every face of every upload, embedded: ``facenet.load(...).embed`` over HTTP (an upload
    without a face has no faces and an ``error``, as there)."""
    found = await svc.within_timeout(_all([svc.faces(u) for u in uploads]))
    return EmbedResult(all_faces_answers(svc, found))


def all_faces_answers(svc: Service, found: Sequence[ImageFaces]) -> tuple[ImageAnswer, ...]:
    """Each upload with every face found in it (the answer of embed and cluster); an upload
    without a face carries the library's no-face error."""
    crop = svc.embedder.crop_mode
    return tuple(
        ImageAnswer(
            im.name,
            faces_of(im.faces, crop),
            None if im.faces else str(NoFaceError(im.name)),
            "all",
        )  # fmt: skip
        for im in found
    )


async def verify_images(
    svc: Service,
    a: Upload,
    b: Upload,
    choice: Choice = Choice(),  # noqa: B008 - frozen
    face_a: int | None = None,
    face_b: int | None = None,
) -> VerifyResult:
    """Are the main faces (or ``face_a``/``face_b``) of two uploads the same person?
    (``facenet.load(...).verify``: every face of each image is listed, the compared one
    ``used``.)"""
    op = model_point(svc, choice)
    found_a, found_b = await svc.within_timeout(
        _all([svc.faces(a, True, face_a), svc.faces(b, True, face_b)])
    )
    pick_a = _main_face(found_a, face_a is not None)
    pick_b = _main_face(found_b, face_b is not None)
    return verify_faces(pick_a, pick_b, op, svc.embedder.crop_mode)


async def identify_image(
    svc: Service,
    upload: Upload,
    choice: Choice = Choice(),  # noqa: B008 - frozen
    k: int = 5,
) -> IdentifyResult:
    """Who is each face of an upload: its nearest identities, or unknown
    (``facenet.load(...).identify(..., all_faces=True)``)."""
    found = await svc.within_timeout(svc.faces(upload))
    if not found.faces:
        raise ProblemError("no_face", f"{upload.name}: no face found")

    def work(g: Gallery) -> IdentifyResult:
        op = _operating_point(
            lambda: gallery_operating_point(
                svc.embedder, g, choice.threshold, choice.far, choice.operating_point, FORM_WORDS
            )
        )
        return answer_faces(svc.embedder, g, found.name, found.faces, found.used, op, k)

    return await _gallery_call(svc, work)


@dataclass(frozen=True)
class Enrolled:
    name: str
    added: int
    duplicates: list[tuple[str, str]]  # (upload, identity it is enrolled as)
    image_ids: list[int]  # the images stored


async def enrol(svc: Service, names: Sequence[str], uploads: Sequence[Upload]) -> list[Enrolled]:
    """Enrol the main face of each upload as the name beside it (``names[i]`` for
    ``uploads[i]``). Every image is read and its face found before anything is written: one bad
    image (unreadable, too large, faceless) refuses the request and the gallery is unchanged.
    Each identity is then one gallery transaction."""
    if len(names) != len(uploads):
        raise ProblemError(
            "validation_error",
            f"{len(names)} names for {len(uploads)} images; give one name per image",
        )
    checked = []
    for i, name in enumerate(names):
        try:
            checked.append(check_identity_name(name))
        except GalleryError as e:
            raise ProblemError("validation_error", f"names[{i}]: {e}") from None
    found = await svc.within_timeout(_all([svc.faces(u, main_only=True) for u in uploads]))
    people: dict[str, list[FaceRecord]] = {}
    for name, image in zip(checked, found, strict=True):
        face = _main_face(image).face
        record = FaceRecord(face.embedding, image.name, face.face_index, face.box, image.sha256)
        people.setdefault(name, []).append(record)

    def work(g: Gallery) -> list[Enrolled]:
        g.check_model(svc.fingerprint, enrolling=True)
        out = []
        for name, records in people.items():
            result = g.enroll(name, records, svc.fingerprint, svc.embedder.thresholds)
            dups = [(d.path, d.identity) for d in result.duplicates]
            out.append(Enrolled(name, result.added, dups, result.image_ids))
        return out

    # why: not under the request timeout: a write that started finishes and is answered
    return await _gallery_call(svc, work)


async def remove_identity(svc: Service, name: str) -> int:
    """Remove an identity; returns its embeddings removed (404 ``not_found`` if absent)."""
    return await _gallery_call(svc, lambda g: g.remove(name))


async def remove_image(svc: Service, image_id: int) -> RemovedImage:
    """Remove one enrolled image (404 ``not_found`` if absent)."""
    return await _gallery_call(svc, lambda g: g.remove_image(image_id))


async def list_identities(svc: Service, offset: int, limit: int) -> tuple[int, list[IdentityInfo]]:
    """(total, the page ``offset:offset+limit``) of the identities, by name."""
    return await _gallery_call(
        svc, lambda g: (g.identity_count(), g.identities(offset=offset, limit=limit))
    )


async def list_images(
    svc: Service, name: str | None, offset: int, limit: int
) -> tuple[int, list[ImageInfo]]:
    """(total, the page ``offset:offset+limit``) of the images (of identity ``name``), by id."""
    return await _gallery_call(
        svc, lambda g: (g.image_count(name), g.images(name, offset=offset, limit=limit))
    )


async def gallery_size(svc: Service) -> int:
    return await _gallery_call(svc, lambda g: g.identity_count())


# --------------------------------------------------------------------------- helpers


def model_point(svc: Service, choice: Choice = Choice()) -> OperatingPoint:  # noqa: B008
    """The model's operating point for a request's ``choice``."""
    c = choice
    return _operating_point(
        lambda: operating_point(
            svc.embedder.thresholds, c.threshold, c.far, c.operating_point, words=FORM_WORDS
        ),
    )


# operating_point's messages and answers in a request's words
FORM_WORDS = Words(
    "the form field threshold",
    "the form field far",
    "the form field operating_point",
    "request",
    "the form field threshold={}",
)


def _operating_point(choose: Callable[[], OperatingPoint]) -> OperatingPoint:
    """``choose()``, with a missing threshold as a problem."""
    try:
        return choose()
    except ValueError as e:
        raise ProblemError("no_threshold", str(e)) from None


async def _gallery_call(svc: Service, fn: Callable[[Gallery], T]) -> T:
    try:
        return await svc.gallery.call(fn)
    except (UnknownIdentityError, UnknownImageError) as e:
        raise ProblemError("not_found", str(e).split(" in gallery ")[0]) from None
    except IncompatibleModelError as e:
        raise ProblemError("conflict", str(e)) from None


async def _all(work: Sequence[Awaitable[T]]) -> list[T]:
    """``asyncio.gather``, cancelling the rest when one fails (their work is wasted)."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def describe_model(svc: Service) -> dict[str, Any]:
    fp = svc.fingerprint
    return {
        "name": fp.name,
        "version": fp.version,
        "weights_hash": fp.weights_hash,
        "embedding_dim": fp.embedding_dim,
    }
