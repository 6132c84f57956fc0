"""``Embedder``: photos -> detected faces -> crops the model expects -> unit embeddings.

Every application (embed, verify, gallery, identify, cluster, demo) goes through this one class,
so a face is cropped and normalised the same way everywhere:

1. load the photo (``facenet.data.images.load_image``: EXIF, greyscale, 16-bit, ... handled);
2. detect faces (``facenet.detect``; MTCNN by default), or take the whole image as the face for
   pre-cropped inputs (``crop="none"``);
3. crop each face at the model's input size and framing (``facenet.preprocess``): a box crop
   with margin (the paper's "scaled and translated" thumbnail) or a 5-point similarity
   alignment; a photo that already is a standard face crop is framed like ``facenet eval``'s;
4. embed the crops in batches (``facenet.models.inference.embed_faces``), giving (N, D) unit
   vectors, with an inference-ready copy of the model (``inference_network``: batch norm folded
   into the convolutions, channels-last; or ONNX Runtime with ``backend="onnxruntime"``).

The embedder also carries what the applications need from the model: its calibrated distance
thresholds (``model.card``) and a fingerprint of its weights, recorded with every gallery
embedding so that two embedding spaces are never mixed.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from facenet.apps.thresholds import DEFAULT_MODEL
from facenet.data.images import ImageError, is_image_file, load_image
from facenet.data.transforms import resize
from facenet.detect.align import choose_subject, crop_box, crop_similarity, detect_resized
from facenet.detect.base import Detection, create_detector, list_detectors
from facenet.fingerprint import ModelFingerprint, weights_sha256
from facenet.models.card import card_of
from facenet.models.inference import Backend, embed_faces, inference_network
from facenet.models.loading import load_model
from facenet.preprocess import frame, model_margin_fraction
from facenet.utils import prefetched

CropMode = Literal["box", "similarity", "none"]
MAX_DETECT_WORKERS = 8  # why: each holds a chunk of decoded photos
CROP_MODES: tuple[str, ...] = ("box", "similarity", "none")


class NoFaceError(ValueError):
    """A photo in which the detector finds no face; ``str(e)`` names the file."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(
            f"{self.path or 'image'}: no face found (if the photos are already tight face crops, "
            "use --crop none)"
        )


NO_CROP = np.zeros((0, 0, 3), np.uint8)  # a Face's crop once it is no longer needed


@dataclass
class Face:
    """One face of one photo."""

    path: str | None  # the photo (None for an in-memory image)
    face_index: int  # 0.. in detector order (highest score first)
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2) in photo pixels
    score: float  # detector confidence (1.0 for crop="none")
    crop: np.ndarray = field(repr=False)  # uint8 RGB (H, W, 3) at the model's input size
    embedding: np.ndarray | None = field(default=None, repr=False)  # (D,) float32 unit vector


@dataclass(frozen=True)
class Pick:
    """The face of a photo an answer uses, and how it was chosen."""

    face: Face
    faces_found: int  # faces the detector found in the photo
    chosen_by: str  # "main face" (largest, most central) or "chosen" (the caller's face index)
    faces: tuple[Face, ...] = ()  # every face found (only ``face`` is embedded)


@dataclass
class PhotoResult:
    """The faces of one photo, or why there are none."""

    path: str
    faces: list[Face]
    error: str | None = None  # set when the photo could not be read


def expand_paths(paths: Sequence[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Files as given plus every image file inside given folders (sorted), duplicates removed.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f for f in (p.rglob("*") if recursive else p.iterdir()) if is_image_file(f)
            )
        elif p.exists() or p.is_symlink():
            found = [p]
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
        for f in found:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out


class Embedder:
    """Photos -> faces -> embeddings with one model.

    Args:
        model: an ``EmbeddingNet`` (carries ``spec``; optional ``thresholds``).
        detector: a detector name (``facenet.detect.list_detectors()``), a detector object, or
            None (only valid with ``crop="none"``). A named detector is built once per thread
            that uses it (OpenCV's and dlib's detectors fail or crash when two threads share
            one); an object is shared by every thread, so it must be safe to share.
        crop: ``box`` (detector box + margin), ``similarity`` (5-point alignment) or ``none``
            (each photo already is one face crop; no detection).
        margin_fraction: margin as a fraction of the crop side (box and similarity modes);
            default: Sandberg's 32/160, narrowed to the model's framing
            (``ModelSpec.crop_fraction``, see ``model_margin_fraction``).
        batch_size: crops per forward pass.
        device: torch device for the model.
        ref: how the model was named by the user (kept in gallery provenance).
        max_side: photos are shrunk to at most this side for detection (boxes mapped back).
        backend: what runs the network: ``"torch"`` (a copy with batch norm folded, channels
            last) or ``"onnxruntime"`` (the model's ONNX export, CPU; the ``export`` extra).
        quantize: ``"int8"`` (onnxruntime only): static int8, calibrated on ``calibration``
            (framed face crops at the model's input size, e.g. ``Face.crop`` of ~64 faces).
    """

    def __init__(
        self,
        model: nn.Module,
        detector: str | Any | None = "mtcnn",
        crop: CropMode = "box",
        margin_fraction: float | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        ref: str = "",
        max_side: int | None = 1280,
        backend: Backend = "torch",
        quantize: str | None = None,
        calibration: Sequence[np.ndarray] | None = None,
    ) -> None:
        if crop not in CROP_MODES:
            raise ValueError(f"unknown crop mode {crop!r}; choose one of {', '.join(CROP_MODES)}")
        if crop != "none" and detector is None:
            raise ValueError(f"crop={crop!r} needs a face detector")
        self.model = model.eval().to(device)
        self.spec = model.spec
        self.backend = backend
        self.quantize = quantize
        # why: the model stays as loaded (its weights are what the fingerprint hashes); the
        # network that runs is an inference-only copy of it
        self.network = inference_network(
            self.model,
            backend,
            quantize=quantize,
            calibration=calibration,  # type: ignore[arg-type]
        )
        self.crop_mode = crop
        self.margin_fraction = (
            model_margin_fraction(model.spec) if margin_fraction is None else margin_fraction
        )
        self.batch_size = max(1, int(batch_size))
        self.device = _pinned(device)
        self.max_side = max_side
        self.card = card_of(model)
        self.ref = ref or self.card.version or self.card.name
        if isinstance(detector, str) and detector not in list_detectors():
            # why: said now, not at the first photo (the detector itself is built lazily)
            raise ValueError(f"unknown detector {detector!r}; available: {list_detectors()}")
        self._detector_arg = detector if crop != "none" else None
        self._local = threading.local()  # this thread's instance of a named detector
        self._pools: dict[int, ThreadPoolExecutor] = {}  # detection threads, by count
        self._pools_lock = threading.Lock()
        self._fingerprint: ModelFingerprint | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_ref(cls, ref: str = DEFAULT_MODEL, **kwargs: Any) -> Embedder:
        """Build from what a user typed: a weights/checkpoint path, ``NAME:PRETRAINED`` or
        ``NAME`` (randomly initialised; only useful for tests)."""
        device = kwargs.get("device", "cpu")
        model = load_model(ref, map_location=device)
        return cls(model, ref=ref, **kwargs)

    # ------------------------------------------------------------------ model facts

    @property
    def embedding_dim(self) -> int:
        return int(self.spec.embedding_dim)

    @property
    def thresholds(self) -> dict[str, float]:
        """Calibrated squared-L2 thresholds shipped with the model (may be empty)."""
        return dict(self.card.thresholds)

    @property
    def fingerprint(self) -> ModelFingerprint:
        """Which embedding space this embedder produces (cached; hashing weights takes ~0.1 s)."""
        if self._fingerprint is None:
            name = self.card.name
            version = self.card.version or (
                Path(self.ref).name if self.ref and os.path.exists(self.ref) else "random-init"
            )
            self._fingerprint = ModelFingerprint(
                name=name,
                version=str(version),
                weights_hash=weights_sha256(self.model),
                embedding_dim=self.embedding_dim,
                ref=self.ref,
                compatible_with=self.card.compatible_with,
            )
        return self._fingerprint

    @property
    def detector(self) -> Any:
        """The face detector: a named one is this thread's own instance (built on first use),
        an object is the one given."""
        if not isinstance(self._detector_arg, str):
            return self._detector_arg
        detector = getattr(self._local, "detector", None)
        if detector is None:
            name = self._detector_arg
            kwargs = {"device": self.device} if name == "mtcnn" else {}
            detector = self._local.detector = create_detector(name, **kwargs)
        return detector

    def detect_workers(self) -> int:
        """Threads ``embed_images`` decodes and detects in by default: one per torch thread on
        CPU with a named detector (each thread its own instance, one torch thread each: MTCNN
        gains only ~1.1x from a second intra-op thread, while two photos at once keep two cores
        busy), else 1 (a GPU, or a detector object that may not be safe to share)."""
        if self.device != "cpu" or not isinstance(self._detector_arg, str):
            return 1
        return min(MAX_DETECT_WORKERS, max(1, torch.get_num_threads()))

    def _detect_pool(self, workers: int) -> ThreadPoolExecutor:
        """This embedder's ``workers`` detection threads, kept between calls so that each keeps
        its detector; with several, each runs one torch thread (set once, as it starts)."""
        with self._pools_lock:
            pool = self._pools.get(workers)
            if pool is None:
                pool = ThreadPoolExecutor(workers, thread_name_prefix="facenet-embed-detect")
                if workers > 1:
                    threads = torch.get_num_threads()
                    ready = threading.Barrier(workers + 1)
                    for _ in range(workers):  # each waits for the others: one per thread
                        pool.submit(_one_torch_thread, ready)
                    ready.wait(60)
                    # why: at::set_num_threads also moved the default that new threads read
                    torch.set_num_threads(threads)
                self._pools[workers] = pool
            return pool

    def describe(self) -> str:
        return json.dumps(
            {
                "model": self.ref,
                "crop": self.crop_mode,
                "dim": self.embedding_dim,
                "backend": self.backend,
                "quantize": self.quantize,
            },
            sort_keys=True,
        )

    # ------------------------------------------------------------------ pixels -> crops

    def _crop(self, image: np.ndarray, box: Sequence[float], landmarks: np.ndarray) -> np.ndarray:
        """A face cut from a photo at the model's margin: framed as the model expects."""
        h, w = self.spec.input_size
        side = max(h, w)
        margin = self.margin_fraction * side
        if self.crop_mode == "similarity":
            crop = crop_similarity(image, landmarks, side, margin)
        else:
            crop = crop_box(image, box, side, margin, margin_unit="output")
        return resize(crop, (h, w))

    def _faces_in(
        self, images: Sequence[np.ndarray], paths: Sequence[str | None]
    ) -> list[list[Face]]:
        """Detected, cropped (not yet embedded) faces of each image."""
        if self.crop_mode == "none":
            # why: each photo is a standard face crop (e.g. 'facenet align' output): framed as
            # facenet eval frames it
            return [
                [
                    Face(
                        p,
                        0,
                        (0.0, 0.0, float(im.shape[1]), float(im.shape[0])),
                        1.0,
                        frame(im, self.spec),
                    )
                ]
                for im, p in zip(images, paths, strict=True)
            ]
        detections = detect_resized(self.detector, images, self.max_side)
        out = []
        for im, p, dets in zip(images, paths, detections, strict=True):
            faces = []
            for i, d in enumerate(dets):
                try:
                    crop = self._crop(im, d.box, np.asarray(d.landmarks))
                except ValueError:  # a box outside the image or degenerate landmarks
                    continue
                box = tuple(float(v) for v in d.box)
                faces.append(Face(p, i, box, float(d.score), crop))  # type: ignore[arg-type]
            out.append(faces)
        return out

    def detect_and_crop(
        self, images: Sequence[np.ndarray], names: Sequence[str | None]
    ) -> list[list[Face]]:
        """Detect and crop the faces of each uint8 RGB (H, W, 3) image, without embedding them.

        The first half of ``faces``: for callers that embed the crops themselves (the HTTP
        service batches the crops of many requests into one forward pass with
        ``embed_crops``). ``names[i]`` becomes each face's ``path``; faces come in detector
        order (``face_index``), and an image without a face gets an empty list.
        """
        return self._faces_in(list(images), list(names))

    # ------------------------------------------------------------------ crops -> embeddings

    @torch.inference_mode()
    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Framed uint8 RGB crops (each (H, W, 3), as ``Face.crop``) -> (N, D) float32 unit
        embeddings, batched."""
        emb = embed_faces(
            self.network,
            list(crops),
            framed=True,
            batch_size=self.batch_size,
            device=self.device if self.backend == "torch" else "cpu",
            channels_last=self.backend == "torch",
        )
        return emb.numpy()

    def _embed_faces(self, faces: Sequence[Face]) -> None:
        if not faces:
            return
        emb = self.embed_crops([f.crop for f in faces])
        for f, e in zip(faces, emb, strict=True):
            f.embedding = e

    # ------------------------------------------------------------------ public entry points

    def faces(self, image: np.ndarray, path: str | None = None) -> list[Face]:
        """Every face of one uint8 RGB (H, W, 3) image, embedded."""
        faces = self._faces_in([np.asarray(image)], [path])[0]
        self._embed_faces(faces)
        return faces

    def subject(self, image: np.ndarray, path: str | None = None) -> Face:
        """The main face of a photo (largest and most central, Sandberg's rule), embedded.

        Raises:
            NoFaceError: no face was found.
        """
        return self.pick(image, path).face

    def pick(self, image: np.ndarray, path: str | None = None, face: int | None = None) -> Pick:
        """One face of a photo, embedded, with how many faces the photo has.

        Args:
            face: ``face_index`` of the face to use (detector order, 0 = most confident);
                None picks the main face (largest and most central, Sandberg's rule).

        Raises:
            NoFaceError: no face was found.
            ValueError: ``face`` is not one of the faces found (the message lists them).
        """
        image = np.asarray(image)
        faces = self._faces_in([image], [path])[0]
        if not faces:
            raise NoFaceError(path)
        if face is None:
            chosen = faces[subject_index(faces, image.shape)]
        else:
            found = {f.face_index: f for f in faces}
            if face not in found:
                raise ValueError(
                    f"{path or 'image'}: no face {face}; {len(faces)} face(s) found, "
                    f"numbered {', '.join(str(i) for i in sorted(found))}"
                )
            chosen = found[face]
        self._embed_faces([chosen])
        return Pick(chosen, len(faces), "main face" if face is None else "chosen", tuple(faces))

    def subject_of_file(self, path: str | os.PathLike) -> Face:
        """``subject(load_image(path))``; raises ``ImageError`` or ``NoFaceError`` naming the file."""
        return self.subject(load_image(path), str(path))

    def pick_of_file(self, path: str | os.PathLike, face: int | None = None) -> Pick:
        """``pick(load_image(path), face=face)``; errors name the file."""
        return self.pick(load_image(path), str(path), face)

    def embed_files(
        self,
        paths: Sequence[str | os.PathLike],
        subject_only: bool = False,
        progress: bool = False,
        chunk: int = 16,
        workers: int | None = None,
    ) -> Iterator[PhotoResult]:
        """Embed the faces of many photo files: ``embed_images`` of the files, each named by its
        path; a file that cannot be read yields a result with ``error`` set."""
        paths = [str(p) for p in paths]
        return self.embed_images(
            paths, lambda i: load_image(paths[i]), subject_only, progress, chunk, workers
        )

    def embed_images(
        self,
        names: Sequence[str],
        decode: Callable[[int], np.ndarray],
        subject_only: bool = False,
        progress: bool = False,
        chunk: int = 16,
        workers: int | None = None,
    ) -> Iterator[PhotoResult]:
        """Embed the faces of many images, batched; yields one ``PhotoResult`` per name, in order.

        Pipelined: the next chunks of images are decoded and detected in worker threads while
        this chunk is embedded. An image that ``decode`` cannot give (``ImageError``) yields a
        result with ``error`` set (the batch continues); an image without a face yields an
        empty ``faces`` list.

        Args:
            names: one per image, what results and messages call it.
            decode: ``decode(i)`` -> image ``i`` as uint8 RGB (H, W, 3); called in a worker
                thread, once per image.
            subject_only: keep only each image's main face.
            progress: show a progress bar.
            chunk: images detected together.
            workers: threads that decode and detect, each with its own detector and one torch
                thread when there are several; default ``detect_workers()``.
        """
        step = max(1, int(chunk))
        chunks = [range(i, min(i + step, len(names))) for i in range(0, len(names), step)]
        workers = self.detect_workers() if workers is None else max(1, int(workers))
        if workers > 1 and not isinstance(self._detector_arg, (str, type(None))):
            workers = 1  # why: a detector object may not be safe to call from two threads
        stop = threading.Event()  # set when the caller stops early: unstarted photos are left

        def found_in(group: range) -> dict[int, PhotoResult]:
            """Decode, detect and crop one chunk (a worker thread's half of the pipeline): each
            image's result, its faces not yet embedded."""
            out: dict[int, PhotoResult] = {}
            images: dict[int, np.ndarray] = {}
            for i in group:
                if stop.is_set():
                    return out
                try:
                    images[i] = decode(i)
                except ImageError as e:
                    out[i] = PhotoResult(names[i], [], str(e))
            found = self._faces_in(list(images.values()), [names[i] for i in images])
            for (i, image), faces in zip(images.items(), found, strict=True):
                if subject_only and faces:
                    faces = [faces[subject_index(faces, image.shape)]]
                out[i] = PhotoResult(names[i], faces)
            return out

        bar = tqdm(total=len(names), desc="embedding", unit=" photos", disable=not progress)
        try:
            # why: the next chunks are decoded and detected in worker threads while the network
            # embeds this one (each worker with its own instance of a named detector)
            pool = self._detect_pool(workers)
            for group, found in zip(
                chunks, prefetched(found_in, chunks, workers=workers, pool=pool), strict=True
            ):
                self._embed_faces([f for r in found.values() for f in r.faces])
                yield from (found[i] for i in group)
                bar.update(len(group))
        finally:
            stop.set()
            bar.close()


def _one_torch_thread(ready: threading.Barrier) -> None:
    """A detection thread's start: one torch thread for itself (OpenMP's setting is per thread;
    its lazy initialisation runs first, or it would later overwrite this)."""
    torch.get_num_threads()
    torch.set_num_threads(1)
    ready.wait(60)


def _pinned(device: str | torch.device) -> str:
    """``device`` as text, a bare ``cuda`` pinned to the caller's current GPU (worker threads
    would otherwise use GPU 0)."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return str(dev)


def subject_index(faces: Sequence[Face], shape: tuple[int, ...]) -> int:
    """Which of a photo's faces is its main one: largest and most central (Sandberg's rule)."""
    dets = [Detection(f.box, np.zeros((5, 2)), f.score) for f in faces]
    return choose_subject(dets, shape)
