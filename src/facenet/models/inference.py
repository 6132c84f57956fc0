"""The embedding engine: face crops -> unit embeddings with one model, batched.

Every embedder runs its model here (the applications' ``Embedder``, ``facenet eval``'s
``TorchEmbedder`` and training validation), after the one preprocessing path
(``facenet.preprocess.preprocess``), so the same crop gives the same embedding everywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from facenet.preprocess import preprocess

FlipMode = Literal["mean", "concat"]


@torch.no_grad()
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
    try:
        for start in range(0, len(images), max(1, int(batch_size))):
            x = preprocess(images[start : start + batch_size], spec, framed=framed).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast() if autocast is not None else contextlib.nullcontext():
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
