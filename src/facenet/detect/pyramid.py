"""MTCNN's scale pyramid packed into a few canvases, so P-Net runs once per canvas.

The cascade's first stage runs P-Net over every pyramid level of every photo: ~10 levels a
photo, most of them small, so per level one forward pass costs more in per-call overhead than in
arithmetic. Here the levels are laid side by side (shelf packing) on canvases, and P-Net runs
once per canvas. P-Net is fully convolutional (stride 2, 12x12 windows), so a level placed at
even (y, x) offsets gives the same output cells as on its own, except where its max-pooling
window runs past the level's edge: on its own, P-Net pads there with -inf (``SAME_UPPER``); on a
canvas the window would read the neighbour. ``Canvas.invalid`` marks those first-layer cells so
that ``PNet.forward`` fills them with -inf before pooling, which makes every level's cells equal
to its own pass (tested against it in ``tests/detect/test_mtcnn.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Level:
    """One pyramid level: photo ``image`` scaled by ``scale`` to (height, width), placed at
    (y, x) on its canvas (both even)."""

    image: int
    scale: float
    height: int
    width: int
    y: int = 0
    x: int = 0

    @property
    def out_shape(self) -> tuple[int, int]:
        """P-Net's output cells (rows, cols) for this level on its own."""
        return math.ceil((self.height - 2) / 2) - 4, math.ceil((self.width - 2) / 2) - 4


@dataclass
class Canvas:
    """Levels packed on one (height, width) canvas."""

    height: int
    width: int
    levels: list[Level] = field(default_factory=list)

    def invalid(self) -> np.ndarray:
        """bool (height - 2, width - 2): first-layer (3x3 conv) cells outside every level."""
        valid = np.zeros((self.height - 2, self.width - 2), bool)
        for lv in self.levels:
            valid[lv.y : lv.y + lv.height - 2, lv.x : lv.x + lv.width - 2] = True
        return ~valid

    def level_map(self) -> np.ndarray:
        """int64 (rows, cols) of P-Net's output on the canvas: the index in ``levels`` of the
        level each cell belongs to, -1 for cells that straddle levels or the gaps."""
        rows, cols = _pnet_out(self.height), _pnet_out(self.width)
        out = np.full((rows, cols), -1, np.int64)
        for k, lv in enumerate(self.levels):
            h, w = lv.out_shape
            out[lv.y // 2 : lv.y // 2 + h, lv.x // 2 : lv.x // 2 + w] = k
        return out


def _pnet_out(n: int) -> int:
    return max(math.ceil((n - 2) / 2) - 4, 0)


def _even(n: int) -> int:
    return n + (n & 1)


def pack_levels(
    levels: list[Level], max_pixels: int | None = None, min_width: int = 0
) -> list[Canvas]:
    """Shelf-pack ``levels`` (their y, x are set) onto canvases of at most ``max_pixels``
    pixels each (None: one canvas; a level larger than the budget gets a canvas of its own).

    Levels are sorted tallest first and placed left to right on shelves as wide as the widest
    level or ``min_width``, whichever is more; every offset is even, so each level keeps
    P-Net's stride-2 grid.
    """
    if not levels:
        return []
    width = _even(max(max(lv.width for lv in levels), min_width))
    canvases: list[Canvas] = []
    canvas: Canvas | None = None
    shelf_y = shelf_h = x = 0
    for lv in sorted(levels, key=lambda lv: (-lv.height, -lv.width)):
        if canvas is not None and x + lv.width > width:  # next shelf
            shelf_y, shelf_h, x = shelf_y + shelf_h, 0, 0
        h = _even(lv.height)
        too_big = max_pixels is not None and (shelf_y + max(shelf_h, h)) * width > max_pixels
        if canvas is None or (too_big and canvas.levels):
            canvas = Canvas(0, width)
            canvases.append(canvas)
            shelf_y, shelf_h, x = 0, 0, 0
        lv.y, lv.x = shelf_y, x
        canvas.levels.append(lv)
        shelf_h = max(shelf_h, h)
        canvas.height = shelf_y + shelf_h
        x += _even(lv.width)
    return canvases
