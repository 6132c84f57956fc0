"""FaceNet's Inception models: ``nn2``, ``nn3``, ``nn4``, ``nns1``, ``nns2`` (SPEC §5, paper Table 2).

All five are built by one class, :class:`InceptionNet`, from a table that reads like the paper's:
a stem (conv1 7x7/2, max pool + LRN, "inception (2)" = 1x1 reduce + 3x3, LRN + max pool), a list
of :class:`~facenet.models.layers.InceptionSpec` rows, and a head (global average pool + FC, or
for the mobile models a flattened map into a maxout FC, like NN1's).

NN2 at 224x224 (output; #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool + proj)::

    conv1  112x112x64  7x7/2          max pool + LRN  56x56x64
    inception (2)  56x56x192 (3x3 reduce 64, 3x3 192)      LRN + max pool  28x28x192
    3a  28x28x256  (64, 96, 128, 16, 32, max + 32)
    3b  28x28x320  (64, 96, 128, 32, 64, L2 + 64)
    3c  14x14x640  (0, 128, 256/2, 32, 64/2, max 3x3/2)
    4a  14x14x640  (256, 96, 192, 32, 64, L2 + 128)
    4b  14x14x640  (224, 112, 224, 32, 64, L2 + 128)
    4c  14x14x640  (192, 128, 256, 32, 64, L2 + 128)
    4d  14x14x640  (160, 144, 288, 32, 64, L2 + 128)
    4e   7x7x1024  (0, 160, 256/2, 64, 128/2, max 3x3/2)
    5a   7x7x1024  (384, 192, 384, 48, 128, L2 + 128)
    5b   7x7x1024  (384, 192, 384, 48, 128, max + 128)
    avg pool 1x1x1024,  FC 128,  L2 normalisation

Every row's parameter and multiply-add count matches the paper's table (e.g. 3a 164K / 128M,
5a 1.6M / 78M); NN2 totals 7.46M parameters and 1.60B multiply-adds (paper 7.5M, 1.6B).
All pools are 3x3 with padding 1; stride-1 pools keep the size, "/2" rows halve it (rounding up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from facenet.models.head import EmbeddingNet
from facenet.models.layers import (
    Inception,
    InceptionSpec,
    Maxout,
    Norm,
    check_norm,
    conv_unit,
    init_weights,
    local_response_norm,
    max_pool,
)
from facenet.models.registry import register_model
from facenet.preprocess import ModelSpec

I = InceptionSpec  # noqa: E741  -- short alias so the tables below read like the paper's

# fmt: off
# why: the paper's Table 2 (NN2), row by row.
NN2_TABLE: tuple[InceptionSpec, ...] = (
    I("3a", 64,  96, 128, 16,  32, "max", 32),
    I("3b", 64,  96, 128, 32,  64, "l2",  64),
    I("3c", 0,  128, 256, 32,  64, "max", 0, stride=2),
    I("4a", 256, 96, 192, 32,  64, "l2",  128),
    I("4b", 224, 112, 224, 32, 64, "l2",  128),
    I("4c", 192, 128, 256, 32, 64, "l2",  128),
    I("4d", 160, 144, 288, 32, 64, "l2",  128),
    I("4e", 0,  160, 256, 64, 128, "max", 0, stride=2),
    I("5a", 384, 192, 384, 48, 128, "l2", 128),
    I("5b", 384, 192, 384, 48, 128, "max", 128),
)
# fmt: on

# why: NN4 "does not use 5x5 convolutions in the higher layers as the receptive field is already
# too small by then" (paper §4). At 96x96 input the rows whose output is 3x3 (4e, 5a, 5b) are the
# ones where a 5x5 kernel sees mostly padding; dropping their 5x5 branches gives 286M
# multiply-adds (paper: 285M) and 6.6M parameters (SPEC: ~6.6-7.5M).
NN4_NO_5X5 = ("4e", "5a", "5b")
NN4_TABLE: tuple[InceptionSpec, ...] = tuple(
    I(r.name, r.n1x1, r.n3x3_reduce, r.n3x3, 0, 0, r.pool, r.pool_proj, r.stride)
    if r.name in NN4_NO_5X5
    else r
    for r in NN2_TABLE
)


@dataclass(frozen=True)
class StemSpec:
    """The layers before the first Inception row: conv1, pool + LRN, "inception (2)", LRN + pool."""

    conv1: int = 64  # conv1 output channels
    conv1_kernel: int = 7  # conv1 kernel (stride 2)
    reduce: int = 64  # "inception (2)" 1x1 reduce channels
    conv2: int = 192  # "inception (2)" 3x3 output channels


@dataclass(frozen=True)
class HeadSpec:
    """What follows the last Inception row.

    ``"avg"``: global average pool + FC (NN2-NN4). ``"maxout"``: average pool to ``pool_to``
    (H, W), flatten, ``maxout_layers`` maxout FC layers of ``maxout_units`` (2 pieces each), FC.
    """

    kind: str = "avg"  # "avg" or "maxout"
    pool_to: tuple[int, int] | None = None  # maxout head: spatial size after pooling; None = as is
    maxout_units: int = 0  # maxout head: units per maxout layer
    maxout_layers: int = 1  # maxout head: number of maxout layers


class InceptionNet(EmbeddingNet):
    """The FaceNet Inception family. Shapes: (B, 3, H, W) -> (B, embedding_dim), unit rows."""

    def __init__(
        self,
        spec: ModelSpec,
        table: Sequence[InceptionSpec],
        stem: StemSpec = StemSpec(),
        head: HeadSpec = HeadSpec(),
        norm: Norm = "lrn",
    ) -> None:
        super().__init__(spec)
        check_norm(norm)
        self.stem = nn.Sequential(
            conv_unit(3, stem.conv1, stem.conv1_kernel, stride=2, norm=norm),  # conv1
            max_pool(),
            local_response_norm(norm),
            conv_unit(stem.conv1, stem.reduce, 1, norm=norm),  # inception (2): 3x3 reduce
            conv_unit(stem.reduce, stem.conv2, 3, norm=norm),  # inception (2): 3x3
            local_response_norm(norm),
            max_pool(),
        )
        blocks, channels = {}, stem.conv2
        for row in table:
            block = Inception(channels, row, norm=norm)
            blocks[f"inception_{row.name}"] = block
            channels = block.out_channels
        self.blocks = nn.Sequential()
        for name, block in blocks.items():
            self.blocks.add_module(name, block)
        # why: conv1 and two pools halve the input (rounding up), then each "/2" row again.
        fh, fw = spec.input_size
        for _ in range(3 + sum(row.stride == 2 for row in table)):
            fh, fw = (fh + 1) // 2, (fw + 1) // 2
        self.feature_size = (fh, fw)
        self.head_spec = head
        if head.kind == "avg":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
            self.fc_layers = nn.Sequential()
            features = channels
        elif head.kind == "maxout":
            ph, pw = head.pool_to or (fh, fw)
            self.pool = nn.AdaptiveAvgPool2d((ph, pw)) if (ph, pw) != (fh, fw) else nn.Identity()
            layers, features = [], channels * ph * pw
            for _ in range(head.maxout_layers):
                layers.append(Maxout(features, head.maxout_units, pieces=2))
                features = head.maxout_units
            self.fc_layers = nn.Sequential(*layers)
        else:
            raise ValueError(f"unknown head kind {head.kind!r}; use 'avg' or 'maxout'")
        self.fc = nn.Linear(features, spec.embedding_dim)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))  # (B, C, h, w)
        x = self.fc_layers(self.pool(x).flatten(1))  # (B, F)
        return F.normalize(self.fc(x), p=2, dim=1, eps=1e-12)  # (B, D)


def _spec(name: str, size: tuple[int, int], embedding_dim: int, norm: Norm) -> ModelSpec:
    return ModelSpec(name, size, embedding_dim, extra={"norm": norm})


@register_model
def nn2(embedding_dim: int = 128, norm: Norm = "lrn") -> InceptionNet:
    """FaceNet NN2: the paper's Inception table at 224x224 (7.5M params, 1.6B FLOPS).

    Args:
        embedding_dim: length of the output embedding (paper: 128).
        norm: ``"lrn"`` (paper) or ``"batchnorm"`` (same learned-parameter count).
    """
    # why: NN2's input is 224x224 (paper Table 2).
    return InceptionNet(_spec("nn2", (224, 224), embedding_dim, norm), NN2_TABLE, norm=norm)


@register_model
def nn3(embedding_dim: int = 128, norm: Norm = "lrn") -> InceptionNet:
    """FaceNet NN3: NN2's architecture at 160x160 input (7.5M params, 0.82B FLOPS counted)."""
    # why: "NN3 is identical in architecture but has a reduced input size of 160x160".
    return InceptionNet(_spec("nn3", (160, 160), embedding_dim, norm), NN2_TABLE, norm=norm)


@register_model
def nn4(embedding_dim: int = 128, norm: Norm = "lrn") -> InceptionNet:
    """FaceNet NN4: NN2 at 96x96 without 5x5 convolutions in the top layers (285M FLOPS).

    The 5x5 branches of rows 4e, 5a and 5b (the rows whose output is 3x3 at this input size)
    are dropped, so those rows output 896 channels instead of 1024.
    """
    # why: NN4's input is 96x96 (paper §4).
    return InceptionNet(_spec("nn4", (96, 96), embedding_dim, norm), NN4_TABLE, norm=norm)


# The mobile models. The paper gives only their input size and budget (NNS1: 165x165, 26M
# params, 220M FLOPS; NNS2: 140x116, 4.3M params, 20M FLOPS). Both budgets have far more
# parameters than multiply-adds per pixel allow in convolutions, so, as in NN1, most parameters
# sit in a fully connected maxout layer on the flattened last feature map (an FC weight costs one
# multiply-add per image), and the convolutional trunk is NN2's table with narrower rows.

# fmt: off
# why: NN2's table with every width x0.45 (rounded to multiples of 8), for the 220M budget.
NNS1_TABLE: tuple[InceptionSpec, ...] = (
    I("3a", 32,  40,  56,  8, 16, "max", 16),
    I("3b", 32,  40,  56, 16, 32, "l2",  32),
    I("3c", 0,   56, 112, 16, 32, "max", 0, stride=2),
    I("4a", 112, 40,  88, 16, 32, "l2",  56),
    I("4b", 104, 48, 104, 16, 32, "l2",  56),
    I("4c", 88,  56, 112, 16, 32, "l2",  56),
    I("4d", 72,  64, 128, 16, 32, "l2",  56),
    I("4e", 0,   72, 112, 32, 56, "max", 0, stride=2),
    I("5a", 176, 88, 176, 24, 56, "l2",  56),
    I("5b", 176, 88, 176, 24, 56, "max", 56),
)
# why: NN2's table with every width x0.125 (rounded to multiples of 8, at least 8), for 20M.
NNS2_TABLE: tuple[InceptionSpec, ...] = (
    I("3a", 8,  16, 16, 8,  8, "max", 8),
    I("3b", 8,  16, 16, 8,  8, "l2",  8),
    I("3c", 0,  16, 32, 8,  8, "max", 0, stride=2),
    I("4a", 32, 16, 24, 8,  8, "l2",  16),
    I("4b", 32, 16, 32, 8,  8, "l2",  16),
    I("4c", 24, 16, 32, 8,  8, "l2",  16),
    I("4d", 16, 16, 32, 8,  8, "l2",  16),
    I("4e", 0,  16, 32, 8, 16, "max", 0, stride=2),
    I("5a", 48, 24, 48, 8, 16, "l2",  16),
    I("5b", 48, 24, 48, 8, 16, "max", 16),
)
# fmt: on


@register_model
def nns1(embedding_dim: int = 128, norm: Norm = "lrn") -> InceptionNet:
    """FaceNet NNS1 ("mini" Inception, 165x165): our design to the paper's 26M / 220M budget.

    Design (counted: 26.1M params, 215M multiply-adds):

    - stem: conv1 7x7/2 with 24 channels (83x83), max pool + LRN, "inception (2)" 1x1 24 ->
      3x3 64, LRN + max pool (21x21): 50M multiply-adds;
    - NN2's ten Inception rows at 0.45x width (``NNS1_TABLE``; same pools, L2 where NN2 has L2):
      21x21 -> 11x11 -> 6x6x512, 1.5M params, 141M multiply-adds;
    - head: the 6x6x512 map flattened (18,432) into two NN1-style maxout layers of 704 units
      (2 pieces each; 24.5M params and as many multiply-adds), FC 128, L2 normalisation.
    """
    # why: NNS1's input is 165x165 (paper Table 3 / §4).
    return InceptionNet(
        _spec("nns1", (165, 165), embedding_dim, norm),
        NNS1_TABLE,
        stem=StemSpec(conv1=24, conv1_kernel=7, reduce=24, conv2=64),
        head=HeadSpec("maxout", maxout_units=704, maxout_layers=2),
        norm=norm,
    )


@register_model
def nns2(embedding_dim: int = 128, norm: Norm = "lrn") -> InceptionNet:
    """FaceNet NNS2 ("tiny" Inception, 140x116): our design to the paper's 4.3M / 20M budget.

    The input is 140 pixels high and 116 wide (the paper writes "140x116"; face crops are
    taller than wide). Design (counted: 4.33M params, 19.0M multiply-adds):

    - stem: conv1 3x3/2 with 16 channels (70x58; a 7x7 conv1 alone would cost 9.5M), max pool
      + LRN, "inception (2)" 1x1 16 -> 3x3 32, LRN + max pool (18x15): 6.7M multiply-adds;
    - NN2's ten Inception rows at 0.125x width (``NNS2_TABLE``): 18x15 -> 9x8 -> 5x4x128,
      0.13M params, 8.2M multiply-adds;
    - head: the 5x4x128 map flattened (2,560) into one maxout layer of 800 units (2 pieces;
      4.1M params and multiply-adds), FC 128, L2 normalisation.
    """
    # why: NNS2's input is 140x116 (paper §4).
    return InceptionNet(
        _spec("nns2", (140, 116), embedding_dim, norm),
        NNS2_TABLE,
        stem=StemSpec(conv1=16, conv1_kernel=3, reduce=16, conv2=32),
        head=HeadSpec("maxout", maxout_units=800, maxout_layers=1),
        norm=norm,
    )
