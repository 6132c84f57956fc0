"""YuNet (libfacedetection, BSD-3) through the ``yuface`` package: boxes, 5 landmarks, scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facenet.detect.base import Detection


class YuNet:
    """YuNet face detector; the model is compiled into ``yuface`` (nothing downloaded).

    Args:
        threshold: minimum confidence in [0, 1].
    """

    name = "yunet"

    def __init__(self, threshold: float = 0.5) -> None:
        try:
            import yuface
        except ImportError as e:
            raise ImportError(
                "detector 'yunet' needs the yuface package: pip install 'facenet-triplet[detect]'"
            ) from e
        self._yuface = yuface
        self.threshold = threshold

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in one uint8 RGB (H, W, 3) image, highest score first."""
        bgr = np.ascontiguousarray(np.asarray(image)[..., ::-1])
        result = self._yuface.c_detect(bgr)  # (N, 15) int16: conf%, x, y, w, h, 5 x (x, y)
        dets = []
        for row in np.asarray(result, dtype=np.float64):
            score = row[0] / 100.0
            if score < self.threshold:
                continue
            x, y, w, h = row[1:5]
            landmarks = row[5:15].reshape(5, 2)
            # yuface reports the eyes as seen by the camera, the same order as MTCNN's
            dets.append(Detection((x, y, x + w, y + h), landmarks, score))
        dets.sort(key=lambda d: -d.score)
        return dets

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """``detect`` for each image (yuface has no batched call)."""
        return [self.detect(im) for im in images]
