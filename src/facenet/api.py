"""The Python API: one warm object for embedding, verification, identification and clustering.

    >>> import facenet
    >>> fn = facenet.load()                               # the default published model + MTCNN
    >>> fn.verify("a.jpg", "b.jpg").same                  # one operating point everywhere
    >>> gallery = facenet.Gallery("my-gallery")
    >>> fn.enroll(gallery, "ada", ["ada1.jpg", "ada2.jpg"])
    >>> fn.identify("group.jpg", gallery, all_faces=True).to_dict()
    >>> fn.cluster(["p1.jpg", "p2.jpg", ...]).clusters

Images may be paths, the bytes of an encoded image, PIL images or uint8 NumPy arrays (H, W, 3)
RGB or (H, W) grey. Results are the dataclasses of ``facenet.apps.results`` (``to_dict()`` gives
the JSON the CLI's ``--json`` and the HTTP service return).
"""

from __future__ import annotations

import contextlib
import operator
import os
from collections.abc import Iterator, Sequence
from typing import Any, Union

import numpy as np
from PIL import Image

from facenet.apps.cluster import DEFAULT_METHOD, DEFAULT_MIN_CLUSTER_SIZE, cluster_embeddings
from facenet.apps.embedder import Embedder, Face, NoFaceError, Pick
from facenet.apps.gallery import EnrollReport, FaceRecord, Gallery, enroll_records
from facenet.apps.identify import identify_image
from facenet.apps.results import (
    ClusterResult,
    EmbedResult,
    IdentifyResult,
    ImageAnswer,
    VerifyResult,
    faces_of,
)
from facenet.apps.thresholds import DEFAULT_MODEL, PYTHON_WORDS, OperatingPoint, operating_point
from facenet.apps.verify import verify_faces
from facenet.data.images import ImageError, decode_image, from_pil, load_image
from facenet.fingerprint import array_sha256, file_sha256
from facenet.models.loading import check_trained

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]  # noqa: UP007 - a runtime alias

__all__ = ["FaceNet", "Gallery", "ImageInput", "load"]


def load(
    model: str = DEFAULT_MODEL,
    detector: str | None = "mtcnn",
    device: str = "cpu",
    crop: str = "box",
    batch_size: int = 32,
    allow_untrained: bool = False,
) -> FaceNet:
    """Load a model (and a detector) once; the returned object answers many calls.

    Args:
        model: a weights file, ``NAME:PRETRAINED`` (default: the published
            ``inception_resnet_v1:casia-webface``), or with ``allow_untrained`` a bare
            architecture name (random weights: tests only).
        detector: a detector name (``facenet.detect.list_detectors()``); None with
            ``crop="none"`` for images that already are face crops.
        device: torch device.
        crop: ``box``, ``similarity`` or ``none`` (see ``facenet.apps.embedder.Embedder``).

    Raises:
        TypeError: ``model`` is not text or a path.
        ValueError: an architecture without weights and ``allow_untrained`` is False, a
            ``batch_size`` below 1, or a detector name that does not exist.
        ModelFileError / KeyError: the model cannot be loaded (the message names it).
    """
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be a weights file, NAME:PRETRAINED or a name, got {type(model).__name__}"
        )
    model = os.fspath(model)
    batch_size = _positive_int("batch_size", batch_size)
    check_trained(model, allow_untrained)
    return FaceNet(
        Embedder.from_ref(model, detector=detector, crop=crop, batch_size=batch_size, device=device)
    )


def _positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (numpy integers too); ``ValueError`` naming ``name``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _name_of(image: ImageInput, index: int) -> str:
    """What answers and messages call an input: a file by its path, anything else by position."""
    return str(image) if isinstance(image, (str, os.PathLike)) else f"<input {index}>"


def _as_array(image: ImageInput, index: int) -> tuple[np.ndarray, str]:
    """(uint8 RGB (H, W, 3), a name for messages) of any accepted input."""
    name = _name_of(image, index)
    if isinstance(image, (str, os.PathLike)):
        return load_image(image), name
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), name), name
    if isinstance(image, Image.Image):
        # why: as a file by path is read: EXIF orientation, 16-bit and alpha modes, and a
        # truncated image as this input's error, not an exception that stops the batch
        return from_pil(image, name), name
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ImageError(name, f"arrays must be uint8, got {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ImageError(
                name, f"arrays must be (H, W, 3) RGB or (H, W) grey, got {image.shape}"
            )
        return np.ascontiguousarray(image), name
    raise ImageError(name, f"not an image: {type(image).__name__}")


def _many(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(
        images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)
    ):
        return [images]
    return list(images)


class FaceNet:
    """A loaded model and detector (``facenet.load``); every method takes any ``ImageInput``."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    @property
    def thresholds(self) -> dict[str, float]:
        """The model's calibrated operating points (squared L2)."""
        return self.embedder.thresholds

    def operating_point(
        self, threshold: float | None = None, far: float | None = None, name: str | None = None
    ) -> OperatingPoint:
        """The threshold an answer uses (``facenet.apps.thresholds.operating_point``)."""
        return operating_point(self.thresholds, threshold, far, name, words=PYTHON_WORDS)

    def embed(self, images: ImageInput | Sequence[ImageInput]) -> EmbedResult:
        """Every face of every image, embedded. An unreadable image or one without a face gets
        an ``error`` and no faces; the others are answered.

        Many images go through the batched pipeline (``Embedder.embed_images``): decoded and
        detected in worker threads while the network embeds the ones before.
        """
        items = _many(images)
        # why: a PIL image may load lazily, so the same object twice must not be read by two
        # threads at once; files, bytes and arrays are only read
        shared = any(isinstance(image, Image.Image) for image in items)
        out = []
        for r in self.embedder.embed_images(
            [_name_of(image, i) for i, image in enumerate(items)],
            lambda i: _as_array(items[i], i)[0],
            workers=1 if shared else None,
        ):
            if r.error is not None:
                out.append(ImageAnswer(r.path, (), r.error))
                continue
            error = None if r.faces else str(NoFaceError(r.path))
            out.append(
                ImageAnswer(r.path, faces_of(r.faces, self.embedder.crop_mode), error, "all")
            )
        return EmbedResult(tuple(out))

    def _pick(self, image: ImageInput, index: int, face: int | None) -> Pick:
        array, name = _as_array(image, index)
        return self.embedder.pick(array, name, face)

    def verify(
        self,
        a: ImageInput,
        b: ImageInput,
        threshold: float | None = None,
        far: float | None = None,
        operating_point: str | None = None,
        face_a: int | None = None,
        face_b: int | None = None,
    ) -> VerifyResult:
        """Are the main faces (or ``face_a``/``face_b``) of two images the same person?

        Raises:
            ImageError / NoFaceError: an image is unreadable or has no face (named).
            ValueError: no threshold, or no such face.
        """
        op = self.operating_point(threshold, far, operating_point)
        pick_a, pick_b = self._pick(a, 0, face_a), self._pick(b, 1, face_b)
        return verify_faces(pick_a, pick_b, op, self.embedder.crop_mode)

    def identify(
        self,
        image: ImageInput,
        gallery: Gallery | str | os.PathLike,
        k: int = 5,
        face: int | None = None,
        all_faces: bool = False,
        threshold: float | None = None,
        far: float | None = None,
        operating_point: str | None = None,
    ) -> IdentifyResult:
        """Who is the main face (or ``face``, or every face) of ``image``, in ``gallery``?"""
        k = _positive_int("k", k)
        array, name = _as_array(image, 0)
        with _gallery(gallery, create=False) as g:
            return identify_image(
                self.embedder,
                g,
                array,
                name,
                k,
                face,
                all_faces,
                threshold,
                far,
                operating_point,
                PYTHON_WORDS,
            )

    def enroll(
        self, gallery: Gallery | str | os.PathLike, name: str, images: Sequence[ImageInput]
    ) -> EnrollReport:
        """Enrol the main face of each image as ``name`` (one transaction). Unusable images
        are reported in ``skipped``; an image already enrolled is reported as a duplicate and not
        stored again.

        Raises:
            GalleryError: no image was usable (the gallery is unchanged), a bad name, or a
                gallery built with another model.
        """
        faces: list[FaceRecord] = []
        skipped: list[tuple[str, str]] = []
        for i, image in enumerate(_many(images)):
            try:
                array, label = _as_array(image, i)
                face = self.embedder.pick(array, label).face
            except (ImageError, NoFaceError) as e:
                skipped.append((str(getattr(e, "path", None) or f"<input {i}>"), str(e)))
                continue
            faces.append(_record(face, image, array, label))
        with _gallery(gallery, create=True) as g:
            return enroll_records(g, self.embedder, name, faces, skipped)

    def cluster(
        self,
        images: Sequence[ImageInput],
        method: str = DEFAULT_METHOD,
        threshold: float | None = None,
        operating_point: str | None = None,
        min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
    ) -> ClusterResult:
        """Group every face of ``images`` by person (``labels``: -1 for faces left unclustered)."""
        embedded = self.embed(images)
        vectors = [f.embedding for i in embedded.images for f in i.faces]
        op = None if method == "hdbscan" else self.operating_point(threshold, None, operating_point)
        if not vectors:
            return ClusterResult(embedded.images, (), op)
        labels = cluster_embeddings(
            np.stack(vectors),
            method=method,
            threshold=None if op is None else op.threshold,
            min_cluster_size=min_cluster_size,
        )
        return ClusterResult(embedded.images, tuple(int(v) for v in labels), op)


def _record(face: Face, image: ImageInput, array: np.ndarray, label: str) -> FaceRecord:
    """A face to enrol; its photo's SHA-256 (of the file, or of the pixels) spots re-enrolment."""
    path = isinstance(image, (str, os.PathLike))
    digest = file_sha256(image) if path else array_sha256(array)  # type: ignore[arg-type]
    return FaceRecord(face.embedding, label, face.face_index, face.box, digest)


@contextlib.contextmanager
def _gallery(gallery: Gallery | str | os.PathLike, create: bool) -> Iterator[Gallery]:
    """``gallery`` itself when it is open, else the gallery at that path, closed afterwards."""
    if isinstance(gallery, Gallery):
        yield gallery
        return
    opened = Gallery(os.fspath(gallery), create=create)
    try:
        yield opened
    finally:
        opened.close()
