"""The per-image work of ``align_folder``: load, detect (batched), align and write one chunk.

Runs in the calling process (``workers=1``) or in each worker of a spawned pool; either way
``init_worker`` sets up this process's state once, then ``process_chunk`` is called per chunk.
Every file of a chunk comes back as one manifest record, whatever went wrong with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from facenet.data.images import ImageError, load_image
from facenet.detect import base
from facenet.detect.align import AlignConfig, align_detections, detect_resized
from facenet.detect.base import Detection
from facenet.detect.manifest import record
from facenet.utils import atomic_write

# This process's detector and settings, set by init_worker (one pool worker = one process).
_WORKER: dict[str, Any] = {}


def init_worker(
    detector: str,
    config: AlignConfig,
    max_side: int | None,
    threads: int,
    known: dict[str, tuple[list[Detection], int]] | None = None,
) -> None:
    """Set this process's thread counts and settings; the detector is made on first need."""
    # why: torch only where a detector runs (importing the pipeline stays light)
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    _WORKER.update(
        detector_name=detector,
        detector=None,  # made on first need: a re-crop from known faces may never need one
        config=config,
        max_side=max_side,
        threads=threads,
        known=known or {},
    )


def _detector() -> Any:
    if _WORKER["detector"] is None:
        # why: looked up on the module at call time, so a registry patched in tests is used
        _WORKER["detector"] = base.create_detector(_WORKER["detector_name"])
    return _WORKER["detector"]


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _detect(images: list[np.ndarray]) -> list[Any]:
    """The worker's detector on ``images``, batched; per image a list of ``Detection`` or the
    exception it raised (one bad image must not sink the chunk: on failure, retry one by one)."""
    try:
        return detect_resized(_detector(), images, _WORKER["max_side"])
    except Exception:
        found: list[Any] = []
        for im in images:
            try:
                found.append(detect_resized(_detector(), [im], _WORKER["max_side"])[0])
            except Exception as e:
                found.append(e)
        return found


def _align_one(
    image: np.ndarray, found: Any, rel: str, dst_abs: str, out_rel: str
) -> dict[str, Any]:
    """Crop one loaded image from its ``found`` faces (``(detections, faces found or None)`` or
    the exception detection raised), write the PNG, and return its manifest record."""
    try:
        if isinstance(found, Exception):
            raise found
        dets, faces = found
        result = align_detections(image, dets, _WORKER["config"])
        rec = record(
            rel,
            result.status,
            num_faces=result.num_faces if faces is None else faces,
            reason=result.reason,
        )
        if result.detection is not None:
            d = result.detection.to_dict()
            rec.update(box=d["box"], landmarks=d["landmarks"], score=d["score"])
        if result.crop is not None:
            with atomic_write(dst_abs, "wb") as f:
                f.write(_encode_png(result.crop))
            rec["output"] = out_rel
        return rec
    except Exception as e:  # keep the batch going; the manifest says what happened
        return record(rel, "error", reason=f"processing failed: {type(e).__name__}: {e}")


def process_chunk(chunk: Sequence[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    """Load, detect (batched), align and write one chunk of (src_abs, dst_abs, rel, out_rel);
    one manifest record per item, in ``chunk`` order."""
    known = _WORKER["known"]
    records: dict[int, dict[str, Any]] = {}
    images, slots = [], []
    for i, (src_abs, _, rel, _) in enumerate(chunk):
        try:
            images.append(load_image(src_abs))
            slots.append(i)
        except ImageError as e:
            records[i] = record(rel, "error", reason=e.reason)
    # per image: (detections, faces found) recorded by an earlier run, else detected now
    faces_of: list[Any] = [known.get(chunk[i][2]) for i in slots]
    unknown = [j for j, f in enumerate(faces_of) if f is None]
    if unknown:
        for j, dets in zip(unknown, _detect([images[j] for j in unknown]), strict=True):
            faces_of[j] = dets if isinstance(dets, Exception) else (dets, None)
    for i, image, found in zip(slots, images, faces_of, strict=True):
        _, dst_abs, rel, out_rel = chunk[i]
        records[i] = _align_one(image, found, rel, dst_abs, out_rel)
    return [records[i] for i in range(len(chunk))]
