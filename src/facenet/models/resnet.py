"""``resnet_cpu``: a small BatchNorm ResNet sized for training from scratch on a CPU.

Not a paper model. FaceNet's own networks (nn1–nn4, SPEC §3) cost 0.3–1.6 GFLOPs per face and
train at a few images per second on two CPU cores; this one keeps the residual recipe of He et
al. (basic blocks, BatchNorm, identity shortcuts, a 1x1 projection where the shape changes)
at ~1.7M parameters and ~60M multiply-adds per 96x96 face, so that a laptop-class CPU trains it
with triplets at a few hundred images per second. The head is the usual FaceNet one: global
average pooling, a linear layer, L2 normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from facenet.models.head import EmbeddingHead, EmbeddingNet
from facenet.models.registry import register_model
from facenet.preprocess import ModelSpec

HEADS = ("gap", "gdc")


def _final_map_side(input_size: tuple[int, int], strides: Sequence[int]) -> tuple[int, int]:
    """Spatial size after 3x3 convs (padding 1) with these strides (each halving rounds up)."""
    h, w = input_size
    for s in strides:
        h, w = (h + s - 1) // s, (w + s - 1) // s
    return h, w


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 strided projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), *_conv_bn(cout, cout, 3, 1)
        )
        if stride != 1 or cin != cout:
            self.shortcut: nn.Module = nn.Sequential(*_conv_bn(cin, cout, 1, stride))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        # why: zero-init the last BN scale so every block starts as the identity (Goyal et al.
        # 2017); from-scratch triplet training then starts from a well-conditioned network.
        nn.init.zeros_(self.body[-1].weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNetCPU(EmbeddingNet):
    def __init__(
        self,
        spec: ModelSpec,
        widths: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (1, 2, 2, 1),
        stem_width: int = 24,
        dropout: float = 0.0,
        head: str = "gap",
        strides: Sequence[int] = (2, 2, 2, 2),
        embedding_bn: bool = False,
    ) -> None:
        super().__init__(spec)
        if len(widths) != len(depths) or not widths:
            raise ValueError(f"widths {tuple(widths)} and depths {tuple(depths)} must pair up")
        if len(strides) != len(widths) or any(s not in (1, 2) for s in strides):
            raise ValueError(
                f"strides {tuple(strides)} must give 1 or 2 for each of the {len(widths)} stages"
            )
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
        self.stem = nn.Sequential(*_conv_bn(3, stem_width, 3, 2), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        cin = stem_width
        for width, depth, stride in zip(widths, depths, strides, strict=True):
            blocks = [BasicBlock(cin, width, stride=stride)]
            blocks += [BasicBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.Sequential(*stages)
        if head == "gap":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        else:
            # why: an aligned face's features are not translation invariant (eyes above mouth);
            # a global depthwise conv (MobileFaceNet, Chen et al. 2018) learns one weight per
            # channel and position of the last map instead of averaging the positions away.
            side = _final_map_side(spec.input_size, (2, *strides))
            self.pool = nn.Sequential(
                nn.Conv2d(cin, cin, side, groups=cin, bias=False), nn.BatchNorm2d(cin)
            )
        self.head = EmbeddingHead(cin, spec.embedding_dim, dropout=dropout, batch_norm=embedding_bn)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, D)
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))


@register_model
def resnet_cpu(
    embedding_dim: int = 128,
    input_size: int = 96,
    widths: Sequence[int] = (32, 64, 128, 256),
    depths: Sequence[int] = (1, 2, 2, 1),
    stem_width: int = 24,
    dropout: float = 0.0,
    head: str = "gap",
    strides: Sequence[int] | None = None,
    embedding_bn: bool = False,
) -> ResNetCPU:
    """A ~1.7M-parameter BatchNorm ResNet at 96x96 for from-scratch CPU training (~60M MACs).

    ``head``: ``gap`` (global average pooling, FaceNet's) or ``gdc`` (global depthwise conv).
    ``strides``: each stage's first-block stride (default 2 everywhere, after a stride-2 stem); a
    stage of stride 1 works at its input's resolution, e.g. widths ``(32, 32, 64, 128, 256)``
    with strides ``(1, 2, 2, 2, 2)`` adds a 48x48 stage at 96 px.
    ``embedding_bn``: BatchNorm1d on the embedding before the L2 normalisation
    (:class:`~facenet.models.head.EmbeddingHead`).
    """
    strides = [2] * len(widths) if strides is None else list(strides)
    spec = ModelSpec(
        "resnet_cpu",
        (input_size, input_size),
        embedding_dim,
        extra={
            "widths": list(widths),
            "depths": list(depths),
            "stem_width": stem_width,
            "head": head,
            "strides": strides,
            "embedding_bn": embedding_bn,
        },
    )
    return ResNetCPU(
        spec,
        widths=widths,
        depths=depths,
        stem_width=stem_width,
        dropout=dropout,
        head=head,
        strides=strides,
        embedding_bn=embedding_bn,
    )
