"""Crop geometry: Sandberg's box crop, the 5-point similarity transform, subject choice, fallback."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from facenet.detect.align import (
    AlignConfig,
    align_detections,
    choose_subject,
    crop_box,
    crop_similarity,
    detect_resized,
    template_points,
    umeyama_similarity,
)
from facenet.detect.base import Detection, create_detector, list_detectors


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_umeyama_recovers_an_exact_similarity():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = _similarity(rng.uniform(-170, 170), rng.uniform(0.2, 5), *rng.uniform(-100, 100, 2))
        src = rng.uniform(0, 200, (5, 2))
        np.testing.assert_allclose(umeyama_similarity(src, _apply(m, src)), m, atol=1e-9)


def test_umeyama_agrees_with_opencv_on_noisy_points():
    rng = np.random.default_rng(1)
    src = template_points(160, 32) + rng.normal(0, 3, (5, 2))
    dst = _apply(_similarity(12, 1.3, 5, -7), src) + rng.normal(0, 2, (5, 2))
    ours = umeyama_similarity(src, dst)
    # why: LMEDS with 5 points and no outliers is plain least squares in OpenCV's refinement
    ref, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    np.testing.assert_allclose(_apply(ours, src), _apply(ref, src), atol=0.5)
    residual = np.linalg.norm(_apply(ours, src) - dst, axis=1).mean()
    assert residual <= np.linalg.norm(_apply(ref, src) - dst, axis=1).mean() + 1e-9


def test_umeyama_never_mirrors():
    src = template_points(112, 0)
    mirrored = src * [-1, 1]
    m = umeyama_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_umeyama_rejects_degenerate_points():
    with pytest.raises(ValueError, match="degenerate"):
        umeyama_similarity(np.ones((5, 2)), np.zeros((5, 2)))


def _dots_image(points: np.ndarray, shape=(300, 400)) -> np.ndarray:
    """Black image with a distinct colour dot at each landmark."""
    img = np.zeros((*shape, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for (x, y), c in zip(points, colours, strict=True):
        cv2.circle(img, (round(x), round(y)), 4, c, -1, lineType=cv2.LINE_AA)
    return img, colours


def _centroid(img: np.ndarray, colour) -> np.ndarray:
    mask = np.all(np.abs(img.astype(int) - colour) < 90, axis=2) & (img.max(2) > 120)
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("angle", [-35.0, 0.0, 20.0])
def test_similarity_crop_puts_landmarks_on_the_template(angle):
    """A rotated, scaled, shifted face's landmarks land on the canonical template after warping."""
    size, margin = 160, 32
    m = _similarity(angle, 1.6, 120, 60)
    landmarks = _apply(m, template_points(112, 0))  # a "face" in the photo
    image, colours = _dots_image(landmarks)
    crop = crop_similarity(image, landmarks, size, margin)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    target = template_points(size, margin)
    for k, colour in enumerate(colours):
        np.testing.assert_allclose(_centroid(crop, colour), target[k], atol=1.0)
    # the eyes are level in the crop whatever the head roll was
    left, right = _centroid(crop, colours[0]), _centroid(crop, colours[1])
    assert abs(left[1] - right[1]) < 1.0


def test_template_fills_the_inner_square():
    pts = template_points(160, 32)
    np.testing.assert_allclose(pts, template_points(112, 0) / 112 * 128 + 16)
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # left before right, as MTCNN


def test_box_crop_is_sandbergs_margin_in_photo_pixels():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)
    box = (80.7, 70.2, 164.9, 178.4)
    crop = crop_box(image, box, 160, 32, "source")
    # align_dataset_mtcnn: bb = int(det -/+ margin/2), clipped; imresize(bilinear)
    x1, y1, x2, y2 = int(80.7 - 16), int(70.2 - 16), int(164.9 + 16), int(178.4 + 16)
    expected = np.asarray(Image.fromarray(image[y1:y2, x1:x2]).resize((160, 160), Image.BILINEAR))
    np.testing.assert_array_equal(crop, expected)


def test_box_crop_clips_at_the_image_edge():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50] = 255
    crop = crop_box(image, (-20, -20, 40, 60), 64, 10)  # region x 0..45 clipped: left part white
    assert crop.shape == (64, 64, 3)
    assert crop[:, :56].min() == 255  # 45 px of which 0..49 white -> all white


def test_box_crop_output_margin_is_in_crop_pixels():
    """margin_unit="output": the box occupies size - margin pixels of the crop."""
    image = np.zeros((400, 400, 3), np.uint8)
    image[100:300, 120:320] = 255  # a white 200x200 "face box"
    crop = crop_box(image, (120, 100, 320, 300), 160, 32, "output")
    cols = np.nonzero(crop[80, :, 0] > 127)[0]
    rows = np.nonzero(crop[:, 80, 0] > 127)[0]
    assert abs(len(cols) - 128) <= 1 and abs(len(rows) - 128) <= 1
    assert abs(cols[0] - 16) <= 1 and abs(rows[0] - 16) <= 1


def test_box_crop_outside_the_image_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        crop_box(np.zeros((50, 50, 3), np.uint8), (100, 100, 120, 120), 32, 0)


def _det(box, score=0.99):
    x1, y1, x2, y2 = box
    lm = np.array(
        [[x1 + 0.3 * (x2 - x1), y1 + 0.4 * (y2 - y1)], [x1 + 0.7 * (x2 - x1), y1 + 0.4 * (y2 - y1)]]
        + [[(x1 + x2) / 2, y1 + 0.6 * (y2 - y1)]]
        + [
            [x1 + 0.35 * (x2 - x1), y1 + 0.8 * (y2 - y1)],
            [x1 + 0.65 * (x2 - x1), y1 + 0.8 * (y2 - y1)],
        ]
    )
    return Detection(tuple(map(float, box)), lm, score)


def test_choose_subject_prefers_a_central_face_to_a_bigger_one_at_the_edge():
    shape = (250, 250, 3)
    central = _det((95, 95, 155, 155))  # 60x60 at the centre
    edge = _det((0, 0, 80, 80))  # 80x80, centre 85 px away on each axis
    assert choose_subject([edge, central], shape) == 1
    big_central = _det((60, 60, 190, 190))
    assert choose_subject([central, big_central, edge], shape) == 1


def test_choose_subject_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(50):
        dets = []
        for _ in range(rng.integers(1, 6)):
            x, y = rng.uniform(0, 300, 2)
            s = rng.uniform(10, 120)
            dets.append(_det((x, y, x + s, y + s)))

        def value(d, h=320, w=400):
            cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
            return d.width * d.height - 2 * ((cx - w / 2) ** 2 + (cy - h / 2) ** 2)

        assert choose_subject(dets, (320, 400)) == max(
            range(len(dets)), key=lambda i: value(dets[i])
        )


def test_no_face_gives_a_flagged_centre_crop_or_nothing():
    image = np.zeros((100, 80, 3), np.uint8)
    image[40:60, 30:50] = 200
    r = align_detections(image, [], AlignConfig(size=32))
    assert r.status == "fallback" and r.crop.shape == (32, 32, 3) and "no face" in r.reason
    assert r.crop[16, 16, 0] == 200  # the centre survived
    r = align_detections(image, [], AlignConfig(size=32, fallback_fraction=None))
    assert r.status == "no_face" and r.crop is None


def test_align_detections_modes():
    image = np.random.default_rng(4).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    det = _det((50, 50, 150, 150))
    for mode in ("box", "similarity"):
        r = align_detections(image, [det], AlignConfig(size=96, margin=16, mode=mode))
        assert r.status == "ok" and r.crop.shape == (96, 96, 3) and r.detection is det
    with pytest.raises(ValueError, match="crop mode"):
        align_detections(image, [det], AlignConfig(mode="nope"))  # type: ignore[arg-type]


class _RecordingDetector:
    name = "recording"

    def __init__(self):
        self.seen = []

    def detect(self, image):
        return self.detect_batch([image])[0]

    def detect_batch(self, images):
        self.seen += [im.shape for im in images]
        return [[_det((10, 20, 50, 60))] for _ in images]


def test_detect_resized_maps_coordinates_back():
    det = _RecordingDetector()
    big = np.zeros((1000, 2000, 3), np.uint8)
    small = np.zeros((100, 120, 3), np.uint8)
    out = detect_resized(det, [big, small], max_side=500)
    assert det.seen == [(250, 500, 3), (100, 120, 3)]
    np.testing.assert_allclose(out[0][0].box, (40, 80, 200, 240))
    np.testing.assert_allclose(out[0][0].landmarks, _det((10, 20, 50, 60)).landmarks * 4)
    np.testing.assert_allclose(out[1][0].box, (10, 20, 50, 60))


def test_create_detector_lists_valid_names_on_a_typo():
    with pytest.raises(ValueError) as e:
        create_detector("mtcn")
    for name in list_detectors():
        assert name in str(e.value)
