"""Every backend speaks the same interface: boxes, 5 landmarks in MTCNN order, scores."""

from __future__ import annotations

import numpy as np
import pytest

from facenet.data.images import load_image
from facenet.detect.base import (
    Detection,
    FaceDetector,
    box_iou,
    create_detector,
    list_detectors,
)


def _make(name: str) -> FaceDetector:
    try:
        return create_detector(name)
    except ImportError as e:
        pytest.skip(f"{name} not installed: {e}")


@pytest.mark.parametrize("name", list_detectors())
def test_blank_image_has_no_face(name):
    det = _make(name)
    assert isinstance(det, FaceDetector)
    assert det.detect_batch([np.full((120, 100, 3), 90, np.uint8)] * 2) == [[], []]


@pytest.mark.data
@pytest.mark.parametrize("name", list_detectors())
def test_backends_find_the_same_face_with_landmarks_in_mtcnn_order(name, lfw_dir):
    image = load_image(lfw_dir / "lfw-deepfunneled/Aaron_Eckhart/Aaron_Eckhart_0001.jpg")
    dets = _make(name).detect(image)
    assert len(dets) == 1
    d = dets[0]
    assert isinstance(d, Detection) and d.landmarks.shape == (5, 2) and 0 <= d.score <= 1
    x1, y1, x2, y2 = d.box
    assert 60 < x1 < x2 < 190 and 50 < y1 < y2 < 200  # the central face (MTCNN: 80,70,164,179)
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = d.landmarks
    assert lex < nx < rex and lmx < rmx  # left eye / mouth corner has the smaller x
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes above the nose above the mouth
    assert x1 <= lex and rex <= x2 and y1 <= ley


def test_box_iou_against_pixel_counting():
    """Oracle: boxes on a 1/4-pixel grid rasterised and their cells counted."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = np.sort(rng.integers(0, 40, (2, 2)), axis=0).T.ravel()[[0, 2, 1, 3]]
        b = np.sort(rng.integers(0, 40, (2, 2)), axis=0).T.ravel()[[0, 2, 1, 3]]
        grid = np.zeros((2, 40, 40), bool)
        for k, (x1, y1, x2, y2) in enumerate((a, b)):
            grid[k, y1:y2, x1:x2] = True
        union = (grid[0] | grid[1]).sum()
        expected = (grid[0] & grid[1]).sum() / union if union else 0.0
        assert box_iou(a / 4, b / 4) == pytest.approx(expected)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((1, 1, 1, 1), (1, 1, 1, 1)) == 0.0  # empty union
