"""Box operations of the MTCNN cascade, with the reference's 1-based inclusive pixel boxes.

Boxes are (N, 4) float (x1, y1, x2, y2) tensors; the pixels x1..x2 (1-based) are inclusive, as
in the Matlab/Caffe reference and Sandberg's ``detect_face``, so a box's width is
``x2 - x1 + 1``. Here: non-maximum suppression, P-Net cell -> box, box regression, squaring,
and zero-padded crops with two resamplers (OpenCV INTER_AREA, the reference's; supersampled
``grid_sample``, on the device), checked against each other in ``tests/detect/test_mtcnn.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


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
    return torch.as_tensor(_nms_numpy(b, s, threshold, method), device=boxes.device)


def _nms_numpy(b: np.ndarray, s: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """``nms`` on float64 (N, 4) boxes and (N,) scores: int64 indices of the kept."""
    # why: the reference's own tie order (default argsort, highest taken from the end); many
    # P-Net scores saturate to exactly 1.0, so ties are common and change which box survives.
    order = np.argsort(s)[::-1]
    if order.size <= _NMS_MATRIX_MAX:
        return order[_greedy_by_matrix(b[order], threshold, method)]
    x1, y1, x2, y2 = b.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
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
    return np.array(keep, dtype=np.int64)


# why: up to this many boxes the (K, K) overlap matrix (8 MB at most) is computed at once, which
# replaces the reference's one numpy pass per kept box by one boolean row; beyond it, the loop
_NMS_MATRIX_MAX = 1024


def _greedy_by_matrix(b: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """Greedy NMS of (K, 4) float64 boxes already in visiting order: positions of the kept.

    The overlaps are the loop's, element for element (same float64 operations in the same
    order), so the kept set is the loop's exactly."""
    x1, y1, x2, y2 = b.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    w = np.maximum(0.0, np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1) + 1)
    h = np.maximum(0.0, np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1) + 1)
    inter = w * h  # (K, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "min":
            overlap = inter / np.minimum(area[:, None], area)
        else:
            overlap = inter / (area[:, None] + area - inter)
    # why: written as the loop's test negated, so a NaN overlap (an empty box) drops the box
    suppress = ~(overlap <= threshold)  # (K, K): row i drops these if i is kept
    alive = np.ones(len(b), bool)
    keep = []
    i = 0
    while True:
        keep.append(i)
        alive[i] = False
        alive &= ~suppress[i]
        i = int(alive.argmax())
        if not alive[i]:
            return np.array(keep, dtype=np.int64)


def batched_nms(
    boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float, method: str = "union"
) -> Tensor:
    """``nms`` run independently within each group id (e.g. photo, or photo and pyramid level).

    Each group's boxes are visited in the order ``nms`` gives them on their own (the reference
    runs NMS photo by photo, so its score ties are broken within a photo's boxes only).

    Returns:
        (K,) long indices of the kept boxes: group by group in ascending id, highest score first
        within a group.
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    b = boxes.detach().cpu().double().numpy()
    s = scores.detach().cpu().double().numpy()
    g = groups.detach().cpu().numpy()
    rows = np.argsort(g, kind="stable")  # group by group, each in its given order
    starts = np.flatnonzero(np.diff(g[rows])) + 1
    keep = [r[_nms_numpy(b[r], s[r], threshold, method)] for r in np.split(rows, starts)]
    return torch.as_tensor(np.concatenate(keep), device=boxes.device)


def square(boxes: Tensor) -> Tensor:
    """(N, 4) boxes -> squares around the same centre with side max(w, h) (reference ``rerec``)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def regress(boxes: Tensor, reg: Tensor, inclusive: bool = True) -> Tensor:
    """Apply (N, 4) offsets ``reg`` to (N, 4) ``boxes``, scaled by the box size (reference
    ``bbreg``).

    ``inclusive``: the size counts pixels x1..x2 inclusive (``x2 - x1 + 1``), as ``bbreg`` does;
    False: ``x2 - x1``, what the reference uses after its P-Net stage.
    """
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    if inclusive:
        w, h = w + 1, h + 1
    return boxes + reg * torch.stack([w, h, w, h], dim=1)


def cell_boxes(xx: Tensor, yy: Tensor, scale: float) -> Tensor:
    """P-Net cells (column ``xx``, row ``yy``, each (K,) long) at pyramid ``scale`` -> (K, 4)
    1-based (x1, y1, x2, y2) boxes of their windows in the photo (reference
    ``generateBoundingBox``)."""
    # why: P-Net sees 12x12 windows at stride 2; the reference's cell-to-pixel map.
    x1 = torch.trunc((2 * xx + 1).float() / scale)
    y1 = torch.trunc((2 * yy + 1).float() / scale)
    x2 = torch.trunc((2 * xx + 12).float() / scale)
    y2 = torch.trunc((2 * yy + 12).float() / scale)
    return torch.stack([x1, y1, x2, y2], 1)


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
    out = np.empty((len(boxes), size, size, 3), np.float32)
    coords = np.asarray(boxes)[:, :4].astype(np.int64).tolist()  # Python ints: fast to unpack
    owners = np.asarray(groups).tolist()
    for k, ((x1, y1, x2, y2), g) in enumerate(zip(coords, owners, strict=True)):
        image = images[g]
        h, w = image.shape[:2]
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 0 or bh <= 0:
            out[k] = 0
            continue
        if x1 >= 1 and y1 >= 1 and x2 <= w and y2 <= h:
            # why: a box inside the image needs no zero padding; converting the view alone
            # gives the same float32 patch without the zeroed buffer and second copy
            patch = image[y1 - 1 : y2, x1 - 1 : x2].astype(np.float32)
        else:
            patch = np.zeros((bh, bw, 3), np.float32)
            # 0-based source rows/cols covered by the box, clipped to the image
            sx1, sy1, sx2, sy2 = max(x1 - 1, 0), max(y1 - 1, 0), min(x2, w), min(y2, h)
            if sx2 > sx1 and sy2 > sy1:
                patch[sy1 - (y1 - 1) : sy2 - (y1 - 1), sx1 - (x1 - 1) : sx2 - (x1 - 1)] = image[
                    sy1:sy2, sx1:sx2
                ]
        cv2.resize(patch, (size, size), dst=out[k], interpolation=cv2.INTER_AREA)
    return out


def crop_candidates(
    images: Sequence[np.ndarray],
    tensors: Sequence[Tensor],
    boxes: Tensor,
    groups: Tensor,
    size: int,
    resample: Literal["opencv", "torch"] = "opencv",
) -> Tensor:
    """Crops of integer 1-based inclusive ``boxes`` out of their images, resized to ``size``.

    Args:
        images: uint8 (H, W, 3) arrays (read by ``resample="opencv"``).
        tensors: the same images as float (3, H, W) tensors on ``boxes``' device (read by
            ``resample="torch"``; may be empty otherwise).
        boxes: (N, 4+) float, integer-valued (x1, y1, x2, y2).
        groups: (N,) long index into ``images`` of each box.
        size: output side.
        resample: ``crop_resize_cv2`` (the reference's INTER_AREA, on the CPU) or
            ``crop_resize`` (supersampled ``grid_sample`` on the device).

    Returns:
        float (N, 3, size, size) on ``boxes``' device, pixel values 0..255.
    """
    if resample == "opencv":
        # why: on CPU OpenCV's per-box INTER_AREA resize (the reference's) is the fastest
        crops = crop_resize_cv2(images, boxes.cpu().numpy(), groups.cpu().numpy(), size)
        return torch.from_numpy(crops).to(boxes.device).permute(0, 3, 1, 2)
    crops = torch.empty(boxes.shape[0], 3, size, size, device=boxes.device)
    for g in torch.unique(groups).tolist():
        sel = (groups == g).nonzero(as_tuple=True)[0]
        crops[sel] = crop_resize(tensors[g], boxes[sel, :4], size)
    return crops
