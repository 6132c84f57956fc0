"""``facenet embed --engine ray``: the photos through Ray Data (extra ``ray``).

Ray Data reads the list of photos and hands batches to a pool of actors; each actor builds the
embedder once (model, detector: the same ``Embedder.from_ref`` the single-process run uses, held
to one thread) and returns, per photo, its faces (index, box, score, embedding) or its error.
Results come back to this process in input order (``preserve_order``) and are written by
``embed_stream`` into the same shards a single-process run writes, so the two outputs are the
same rows (embeddings equal up to floating-point summation order) and a rerun of either resumes
the other.

A local Ray is started for the run (``num_cpus``), or ``address`` joins an existing cluster
(``ray://head:10001`` or ``auto``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facenet.apps.embedder import NO_CROP, Embedder, Face, PhotoResult


@dataclass(frozen=True)
class RayEngine:
    """How to run the embedder on Ray.

    Attributes:
        embedder_kwargs: ``Embedder.from_ref`` arguments (``ref``, ``detector``, ``crop``, ...).
        subject_only: keep only each photo's main face.
        workers: actors (each holds the model once and uses one CPU).
        batch_photos: photos per actor call.
        address: an existing Ray cluster; None starts a local one with ``num_cpus``.
    """

    embedder_kwargs: dict[str, Any]
    subject_only: bool = False
    workers: int = 2
    batch_photos: int = 16
    address: str | None = None
    num_cpus: int | None = None

    def results(self, paths: Sequence[str]) -> Iterator[PhotoResult]:
        """One ``PhotoResult`` per path, in order (crops are not carried back)."""
        if not paths:
            return
        ray = _import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(
                address=self.address,
                num_cpus=self.num_cpus if self.address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        try:
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            context.enable_progress_bars = False
            ds = ray.data.from_items([{"path": str(p)} for p in paths])
            ds = ds.map_batches(
                _EmbedPhotos,
                fn_constructor_kwargs={
                    "embedder_kwargs": self.embedder_kwargs,
                    "subject_only": self.subject_only,
                },
                batch_size=self.batch_photos,
                batch_format="numpy",
                concurrency=self.workers,
                num_cpus=1,
            )
            for batch in ds.iter_batches(batch_size=self.batch_photos, batch_format="numpy"):
                yield from _photo_results(batch)
        finally:
            if started:
                ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate import
    except ImportError:
        raise ImportError(
            "--engine ray needs the 'ray' extra: pip install 'facenet-triplet[ray]'"
        ) from None
    return ray


class _EmbedPhotos:
    """A Ray actor: the embedder, built once; a batch of paths -> their faces, one row a photo."""

    def __init__(self, embedder_kwargs: dict[str, Any], subject_only: bool) -> None:
        import torch

        torch.set_num_threads(1)  # why: one CPU per actor, as Ray schedules it
        kwargs = dict(embedder_kwargs)
        self.embedder = Embedder.from_ref(kwargs.pop("ref"), **kwargs)
        self.subject_only = subject_only

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[Any]] = {k: [] for k in ("path", "error", "faces")}
        paths = [str(p) for p in batch["path"]]
        for r in self.embedder.embed_files(paths, subject_only=self.subject_only):
            out["path"].append(r.path)
            out["error"].append(r.error or "")
            out["faces"].append(_pack(r.faces))
        return {k: np.array(v, dtype=object) for k, v in out.items()}


def _pack(faces: Sequence[Face]) -> bytes:
    """Faces as bytes: per face (index, x1, y1, x2, y2, score) as float64, then the embeddings."""
    if not faces:
        return b""
    head = np.array([[f.face_index, *f.box, f.score] for f in faces], np.float64)  # (F, 6)
    vectors = np.stack([np.asarray(f.embedding, np.float32) for f in faces])  # (F, D)
    return np.int64(len(faces)).tobytes() + head.tobytes() + vectors.tobytes()


def _unpack(path: str, blob: bytes) -> list[Face]:
    if not blob:
        return []
    n = int(np.frombuffer(blob[:8], np.int64)[0])
    head = np.frombuffer(blob[8 : 8 + n * 48], np.float64).reshape(n, 6)
    vectors = np.frombuffer(blob[8 + n * 48 :], np.float32).reshape(n, -1)
    return [
        Face(
            path,
            int(h[0]),
            (float(h[1]), float(h[2]), float(h[3]), float(h[4])),
            float(h[5]),
            NO_CROP,
            vectors[i].copy(),
        )  # fmt: skip
        for i, h in enumerate(head)
    ]


def _photo_results(batch: dict[str, np.ndarray]) -> Iterator[PhotoResult]:
    for path, error, blob in zip(batch["path"], batch["error"], batch["faces"], strict=True):
        path = str(path)
        yield PhotoResult(path, _unpack(path, blob), str(error) or None)
