"""The embedding engine: face crops -> unit embeddings with one model, batched.

Every embedder runs its model here (the applications' ``Embedder``, ``facenet eval``'s
``TorchEmbedder`` and training validation), after the one preprocessing path
(``facenet.preprocess.preprocess``), so the same crop gives the same embedding everywhere.

``inference_network(model, backend)`` is what the embedders run: for ``"torch"`` an
inference-only copy with batch norm folded into the convolutions and channels-last weights
(``facenet.models.fold``), for ``"onnxruntime"`` the model's ONNX export in ONNX Runtime
(``facenet.models.onnx_runtime``), optionally int8. Both match the model's own embeddings to
<= 1e-4 (float32; ``tests/models/test_fold.py``, ``tests/models/test_onnx_runtime.py``).
Training validation runs the model itself (its weights change every step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from facenet.models.fold import inference_copy
from facenet.models.onnx_runtime import Quantize, onnx_network
from facenet.preprocess import preprocess

FlipMode = Literal["mean", "concat"]
Backend = Literal["torch", "onnxruntime"]
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")


def check_backend(backend: str, quantize: str | None = None) -> None:
    """Raise ``ValueError`` naming the valid choices for an unknown backend or quantisation
    (int8 runs in ONNX Runtime only)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if quantize is not None and quantize != "int8":
        raise ValueError(f"unknown quantisation {quantize!r}; the one choice is int8")
    if quantize is not None and backend != "onnxruntime":
        raise ValueError("int8 quantisation runs in ONNX Runtime: use backend 'onnxruntime'")


def inference_network(
    model: nn.Module,
    backend: Backend = "torch",
    *,
    quantize: Quantize | None = None,
    calibration: Sequence[np.ndarray] | None = None,
    channels_last: bool = True,
) -> nn.Module:
    """What an embedder runs for ``model``: an inference-only module (same ``spec``), never
    ``model`` itself, which stays as it is (training keeps its batch norm).

    Args:
        model: an embedding network.
        backend: ``"torch"`` (batch norm folded, channels-last weights when ``channels_last``;
            feed it channels-last batches, ``embed_faces(..., channels_last=True)``) or
            ``"onnxruntime"`` (the cached ONNX export; CPU).
        quantize: ``"int8"`` (onnxruntime only): static int8, calibrated on ``calibration``.
        calibration: framed uint8 RGB crops at the model's input size (``"int8"`` only).
        channels_last: torch backend: weights in channels-last layout.

    Raises:
        ValueError: unknown backend or quantisation; int8 without calibration crops.
        facenet.models.onnx_runtime.BackendUnavailableError: ``"onnxruntime"`` without ONNX
            Runtime installed (an ``ImportError``; the message says what to install).
    """
    check_backend(backend, quantize)
    if backend == "onnxruntime":
        return onnx_network(model.eval(), quantize=quantize, calibration=calibration)
    return inference_copy(model, channels_last=channels_last)


def embed_faces(
    model: nn.Module,
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    framed: bool = False,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    flip: bool = False,
    channels_last: bool = False,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> Tensor:
    """uint8 RGB face crops -> float32 embeddings on the CPU, in eval mode (the model's mode is
    restored afterwards).

    Args:
        model: an embedding network (carries ``spec``).
        images: crops as ``preprocess`` takes them (standard face crops, or ``framed``).
        framed: the crops already frame the face as the model expects (see ``preprocess``).
        batch_size: crops per forward pass.
        device: where the model runs (default: where its parameters are).
        flip: also embed each crop mirrored left-right.
        channels_last: feed the network channels-last tensors.
        autocast: a factory of the autocast context to run the network in (mixed precision).

    Returns:
        (N, D) embeddings; with ``flip``, (N, 2, D): each crop's and its mirror's (combine
        them with ``combine_flips``).
    """
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    spec = model.spec
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    # why: inference_mode skips autograd's version counters as well as the graph; the result is
    # concatenated outside it, so callers get an ordinary tensor
    try:
        for start in range(0, len(images), max(1, int(batch_size))):
            x = preprocess(images[start : start + batch_size], spec, framed=framed).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            amp = autocast() if autocast is not None else contextlib.nullcontext()
            with torch.inference_mode(), amp:
                e = model(x).float()
                if flip:
                    e = torch.stack([e, model(x.flip(3)).float()], dim=1)
            out.append(e.cpu())
    finally:
        model.train(was_training)
    if not out:
        dim = int(spec.embedding_dim)
        return torch.zeros((0, 2, dim) if flip else (0, dim))
    return torch.cat(out)


def combine_flips(pairs: Tensor, mode: FlipMode = "mean") -> Tensor:
    """(N, 2, D) embeddings of crops and their mirrors -> (N, D) unit vectors (``mean``: the
    normalised sum) or (N, 2D) unit vectors (``concat``: both halves, scaled by 1/sqrt(2))."""
    if mode == "concat":
        return pairs.flatten(1) / np.sqrt(2.0)
    if mode == "mean":
        return torch.nn.functional.normalize(pairs[:, 0] + pairs[:, 1], dim=1)
    raise ValueError(f"flip_mode must be 'mean' or 'concat', got {mode!r}")
