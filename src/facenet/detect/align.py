"""From a photo and its detections to a model-ready face crop.

Two crop modes:

- ``box`` (the paper's "scaled and translated" thumbnail, Sandberg's protocol): grow the detector
  box by ``margin`` pixels, clip to the image, resize to ``size`` x ``size``.
- ``similarity``: a 5-point similarity transform (rotation, uniform scale, translation; Umeyama's
  least squares) that moves the eyes, nose and mouth corners onto a canonical template.

When several faces are found, ``choose_subject`` picks the labelled subject by size and
centrality; when none is found, ``center_crop_face`` is the flagged fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from facenet.detect.base import Detection, FaceDetector

CropMode = Literal["box", "similarity"]
MarginUnit = Literal["source", "output"]

# why: the widely used 5-point template (ArcFace/InsightFace, 112x112 crop), here divided by 112
# so it maps into any square: left eye, right eye, nose, left and right mouth corner (x, y).
FIVE_POINT_TEMPLATE = (
    np.array(
        [
            [38.2946, 51.6963],
            [73.5318, 51.5014],
            [56.0252, 71.7366],
            [41.5493, 92.3655],
            [70.7299, 92.2041],
        ]
    )
    / 112.0
)


@dataclass(frozen=True)
class AlignConfig:
    """How to turn a detection into a crop."""

    size: int = 160  # output side in pixels (square crops)
    # Box mode: pixels added around the box (half each side). Sandberg's LFW protocol: 32 at 160.
    margin: float = 32.0
    # "source": margin in pixels of the input photo (Sandberg's align_dataset_mtcnn, what his
    # pretrained models expect); "output": in pixels of the crop (facenet-pytorch's convention,
    # independent of photo resolution). Similarity mode always uses output pixels.
    margin_unit: MarginUnit = "source"
    mode: CropMode = "box"
    # No face found: centre square of this fraction of the shorter side (LFW's face fills about
    # 1/2.2 of the frame), flagged as a fallback; None disables the fallback.
    fallback_fraction: float | None = 0.6


@dataclass
class AlignResult:
    """One aligned face (or why there is none)."""

    crop: np.ndarray | None  # uint8 RGB (size, size, 3), None when there is no crop
    status: Literal["ok", "fallback", "no_face"]
    detection: Detection | None  # the chosen face in photo coordinates
    num_faces: int  # faces the detector found
    reason: str = ""  # why the status is not "ok"


def choose_subject(detections: Sequence[Detection], image_shape: tuple[int, ...]) -> int:
    """Index of the face most likely to be the labelled subject of a photo.

    Sandberg's rule: box area minus twice the squared distance of the box centre from the image
    centre, so a large face near the centre wins over a larger one at the edge.

    Args:
        detections: faces found in one image (non-empty).
        image_shape: (H, W, ...) of that image.
    """
    if not detections:
        raise ValueError("choose_subject needs at least one detection")
    h, w = image_shape[:2]
    boxes = np.array([d.box for d in detections], dtype=np.float64)  # (N, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 - w / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - h / 2
    # why: "some extra weight on the centering" (factor 2.0 in align_dataset_mtcnn).
    return int(np.argmax(area - 2.0 * (cx**2 + cy**2)))


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    # why: Sandberg resized with scipy.misc.imresize(interp='bilinear'), i.e. Pillow's bilinear.
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def crop_box(
    image: np.ndarray,
    box: Sequence[float],
    size: int = 160,
    margin: float = 32.0,
    margin_unit: MarginUnit = "source",
) -> np.ndarray:
    """Sandberg's box crop: box grown by ``margin`` (half per side), clipped, resized.

    Args:
        image: uint8 RGB (H, W, 3).
        box: (x1, y1, x2, y2) in pixels.
        size: output side.
        margin: total margin; in photo pixels (``source``) or crop pixels (``output``).
        margin_unit: see ``AlignConfig``.

    Returns:
        uint8 RGB (size, size, 3). Near an image edge the clipped region is stretched to a
        square, exactly as the reference protocol does.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    if margin_unit == "output":
        if not 0 <= margin < size:
            raise ValueError(f"margin {margin} must be in [0, size={size}) output pixels")
        # the face box fills size - margin output pixels, so each photo pixel is that fraction
        mx = margin * (x2 - x1) / (size - margin)
        my = margin * (y2 - y1) / (size - margin)
    else:
        mx = my = margin
    left = int(np.clip(x1 - mx / 2, 0, w))
    top = int(np.clip(y1 - my / 2, 0, h))
    right = int(np.clip(x2 + mx / 2, 0, w))
    bottom = int(np.clip(y2 + my / 2, 0, h))
    if right - left < 1 or bottom - top < 1:
        raise ValueError(f"box {tuple(box)} lies outside the {w}x{h} image")
    return _resize(np.ascontiguousarray(image[top:bottom, left:right]), size)


def template_points(size: int = 160, margin: float = 32.0) -> np.ndarray:
    """The canonical 5 landmarks (5, 2) for a ``size`` crop whose face square is ``size - margin``
    output pixels wide, centred."""
    inner = size - margin
    return FIVE_POINT_TEMPLATE * inner + margin / 2.0


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform taking ``src`` points onto ``dst`` (Umeyama, 1991).

    Args:
        src: (N, 2) points, N >= 2, not all equal.
        dst: (N, 2) points.

    Returns:
        (2, 3) matrix M with dst ~ M @ [x, y, 1]; no reflection.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = d.T @ s / len(src)  # (2, 2)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0  # why: forbid a mirror image; the best proper rotation instead
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def crop_similarity(
    image: np.ndarray, landmarks: np.ndarray, size: int = 160, margin: float = 32.0
) -> np.ndarray:
    """Warp ``image`` so its 5 ``landmarks`` (5, 2) land on ``template_points(size, margin)``.

    Returns:
        uint8 RGB (size, size, 3); pixels from outside the photo are black.
    """
    m = umeyama_similarity(landmarks, template_points(size, margin))
    return cv2.warpAffine(
        image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def center_crop_face(image: np.ndarray, size: int = 160, fraction: float = 0.6) -> np.ndarray:
    """Fallback thumbnail: the centre square with side ``fraction`` x the shorter side."""
    h, w = image.shape[:2]
    side = max(1, round(min(h, w) * fraction))
    top, left = (h - side) // 2, (w - side) // 2
    return _resize(np.ascontiguousarray(image[top : top + side, left : left + side]), size)


def align_detections(
    image: np.ndarray, detections: Sequence[Detection], config: AlignConfig = AlignConfig()
) -> AlignResult:
    """Crop the subject of ``image`` given the detector's faces, per ``config``."""
    if detections:
        det = detections[choose_subject(detections, image.shape)]
        if config.mode == "similarity":
            crop = crop_similarity(image, det.landmarks, config.size, config.margin)
        elif config.mode == "box":
            crop = crop_box(image, det.box, config.size, config.margin, config.margin_unit)
        else:
            raise ValueError(f"unknown crop mode {config.mode!r}; valid: box, similarity")
        return AlignResult(crop, "ok", det, len(detections))
    if config.fallback_fraction is None:
        return AlignResult(None, "no_face", None, 0, "no face detected")
    crop = center_crop_face(image, config.size, config.fallback_fraction)
    return AlignResult(crop, "fallback", None, 0, "no face detected; centre crop used")


def detect_resized(
    detector: FaceDetector, images: Sequence[np.ndarray], max_side: int | None = 1280
) -> list[list[Detection]]:
    """``detector.detect_batch`` on copies shrunk to at most ``max_side`` pixels, with boxes and
    landmarks mapped back to the originals (big photos: faces stay findable, time stays bounded)."""
    small, factors = [], []
    for im in images:
        h, w = im.shape[:2]
        f = 1.0 if max_side is None else min(1.0, max_side / max(h, w))
        if f < 1.0:
            im = cv2.resize(im, (max(1, round(w * f)), max(1, round(h * f))), cv2.INTER_AREA)
        small.append(im)
        factors.append(f)
    results = detector.detect_batch(small)
    out = []
    for dets, f in zip(results, factors, strict=True):
        if f == 1.0:
            out.append(list(dets))
            continue
        out.append(
            [
                Detection(tuple(v / f for v in d.box), d.landmarks / f, d.score)  # type: ignore[arg-type]
                for d in dets
            ]
        )
    return out
