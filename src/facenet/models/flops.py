"""Parameter and multiply-add counts, the way the paper's tables count them.

The paper's "FLOPS" column counts multiply-adds of convolutions and fully connected layers.
``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-add for those ops (and
nothing for pooling, LRN, ReLU or normalisation, as the paper), so ``multiply_adds`` is its total
divided by 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from facenet.models.card import card_of

# why: the paper's figures (Tables 1-3, §4; SPEC §5): (params, multiply-adds); None = not given.
# NN3 has no figure of its own in the paper (same architecture as NN2 at 160x160).
PAPER_COSTS: dict[str, tuple[float | None, float | None]] = {
    "nn1": (140e6, 1.6e9),
    "nn2": (7.5e6, 1.6e9),
    "nn3": (None, None),
    "nn4": (None, 285e6),
    "nns1": (26e6, 220e6),
    "nns2": (4.3e6, 20e6),
}


@dataclass(frozen=True)
class ModelCost:
    """Size and cost of one model for one image at its ``spec.input_size``."""

    name: str  # registry name
    input_size: tuple[int, int]  # (height, width)
    embedding_dim: int  # output length
    params: int  # learned parameters (``model.parameters()``)
    buffers: int  # non-learned state (e.g. BatchNorm running statistics)
    flops: int  # multiply-adds per image (the paper's "FLOPS")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def count_params(model: nn.Module) -> int:
    """Number of learned parameters (elements of ``model.parameters()``)."""
    return sum(p.numel() for p in model.parameters())


def count_buffers(model: nn.Module) -> int:
    """Number of floating-point buffer elements (BatchNorm running mean/var; not batch counters)."""
    return sum(b.numel() for b in model.buffers() if b.is_floating_point())


@torch.no_grad()
def count_multiply_adds(model: nn.Module, input_size: tuple[int, int] | None = None) -> int:
    """Multiply-adds of one forward pass on one (1, 3, H, W) image (the paper's "FLOPS").

    Args:
        model: any module; ``input_size`` defaults to ``model.spec.input_size``.
        input_size: (H, W) to count at instead.
    """
    h, w = input_size or model.spec.input_size
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, h, w)
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    # why: FlopCounterMode counts a multiply-add as 2 FLOPs; the paper counts it as 1.
    return counter.get_total_flops() // 2


def model_cost(model: nn.Module) -> ModelCost:
    """Params, buffers and multiply-adds of ``model`` at its own input size."""
    spec = model.spec
    return ModelCost(
        name=card_of(model).name,
        input_size=tuple(spec.input_size),
        embedding_dim=spec.embedding_dim,
        params=count_params(model),
        buffers=count_buffers(model),
        flops=count_multiply_adds(model),
    )


def per_module_cost(model: nn.Module, depth: int = 2) -> dict[str, tuple[int, int]]:
    """{module path: (params, multiply-adds)} for modules up to ``depth`` levels below the root.

    The per-row figures to compare with a paper table (e.g. ``blocks.inception_3a``).
    """
    h, w = model.spec.input_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, depth=depth) as counter:
            model(torch.zeros(1, 3, h, w))
    finally:
        model.train(was_training)
    flops = counter.get_flop_counts()
    out: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if not name or name.count(".") >= depth:
            continue
        key = (
            f"{type(model).__name__}.{name}" if f"{type(model).__name__}.{name}" in flops else name
        )
        macs = sum(flops.get(key, {}).values()) // 2
        out[name] = (count_params(module), macs)
    return out
