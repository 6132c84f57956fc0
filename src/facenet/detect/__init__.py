"""Face detection and alignment: detectors behind one interface, crops, and ``facenet align``.

Import the pieces from their modules (nothing heavy is imported here):
``facenet.detect.base`` (``Detection``, ``FaceDetector``, ``create_detector``, ``box_iou``),
``facenet.detect.mtcnn`` (our batched PyTorch MTCNN cascade; its networks and weight loading in
``facenet.detect.mtcnn_nets``, the converted weights' cache in ``facenet.detect.mtcnn_cache``, its
box operations and crops in ``facenet.detect.boxes``),
``facenet.detect.yunet``, ``facenet.detect.dlib_hog``, ``facenet.detect.align`` (box and 5-point
similarity crops) and ``facenet.detect.pipeline`` (``align_folder``).
"""

from facenet.detect.base import (
    DEFAULT_DETECTOR,
    Detection,
    FaceDetector,
    box_iou,
    create_detector,
    list_detectors,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "Detection",
    "FaceDetector",
    "box_iou",
    "create_detector",
    "list_detectors",
]
