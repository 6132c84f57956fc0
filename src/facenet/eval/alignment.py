"""How an evaluation crops faces from an image folder.

One rule for ``facenet eval`` and for library calls (``facenet.eval.protocol.evaluate_pairs``,
``facenet.eval.suite.run_eval``): a folder written by ``facenet align`` (it has
``align_config.json``) is used as it was aligned; any other folder gets centre crops of its
photos, or, with an explicit ``box``/``similarity``, detection and alignment on the fly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facenet.detect.align import AlignConfig, align_detections
from facenet.detect.base import create_detector
from facenet.detect.manifest import CONFIG_FILE


@dataclass(frozen=True)
class Alignment:
    """How an evaluation crops faces from a folder, and why."""

    align: str  # "center", "box" or "similarity" ("dlib-hog-5pt" for a peer)
    detector: str | None  # align on the fly with this detector; None: the folder as it is
    folder_config: dict[str, Any] | None  # what 'facenet align' recorded in the folder
    notes: tuple[str, ...] = ()  # decisions a person should see


def aligned_folder_config(data: str | os.PathLike) -> dict[str, Any] | None:
    """The settings ``facenet align`` left in ``data/align_config.json``, or None."""
    path = Path(data) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    return config if isinstance(config, dict) else {"config": config}


def resolve_alignment(
    data: str | os.PathLike,
    align: str | None = None,
    detector: str | None = None,
    peer: bool = False,
) -> Alignment:
    """The crop mode for ``data``: ``align`` when given, else the folder's own mode when
    ``facenet align`` wrote it, else ``center``.

    why: a centre crop of an already aligned face (the centre 60% of a face box) scores some 8
    points lower on LFW without any error; peers detect and align by themselves.

    Raises:
        ValueError: ``align`` contradicts the mode the folder was aligned with, or a detector
            was asked for with centre crops.
    """
    if peer:
        return Alignment("dlib-hog-5pt", None, None)
    data = Path(data)
    notes: list[str] = []
    # why: an explicit center never reads the folder's config
    config = None if align == "center" else aligned_folder_config(data)
    if align is None:
        mode = (config or {}).get("mode")
        if mode in ("box", "similarity"):
            notes.append(f"{data} was written by 'facenet align' (mode {mode}): --align {mode}")
            align = str(mode)
        else:
            align = "center"
    if align == "center":
        if detector:
            raise ValueError("--detector needs --align box or --align similarity")
        return Alignment(align, None, None, tuple(notes))
    if config is not None and not detector:
        mode = config.get("mode", align)
        if mode != align:
            raise ValueError(
                f"{data} was aligned with mode {mode!r} ({CONFIG_FILE}), not {align!r}"
            )
    elif not detector:
        # why: not written by `facenet align`: detect and crop on the fly instead
        detector = "mtcnn"
        notes.append(
            f"{data} has no {CONFIG_FILE} (not written by 'facenet align'); aligning on the fly "
            f"with detector {detector}"
        )
    return Alignment(align, detector, config, tuple(notes))


def make_aligner(
    detector_name: str, align: str, model: Any
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """An on-the-fly aligner (photo -> standard face crop at the model's size) and its name
    (it keys the embedding cache)."""
    detector = create_detector(detector_name)
    size = int(model.spec.input_size[0])
    config = AlignConfig(size=size, mode=align)

    def aligner(image: np.ndarray) -> np.ndarray:
        return align_detections(image, detector.detect(image), config).crop

    return aligner, f"{detector_name}:{align}:{size}:{config.margin}:{config.margin_unit}"
