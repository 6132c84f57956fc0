"""``inception_resnet_v1``: Inception-ResNet-v1 (Szegedy et al., 2016) as a FaceNet embedding net.

This is the architecture of David Sandberg's widely used FaceNet models (e.g. 20180408-102900,
trained on CASIA-WebFace), at 160x160 input. Module names mirror that project's TensorFlow
variable scopes so published weights map one to one::

    InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7/weights
    -> Repeat_1.block17_3.Branch_1.Conv2d_0b_1x7.conv.weight

Every convolution except the residual up-projections is conv (no bias) + BatchNorm + ReLU; the
up-projection (``Conv2d_1x1`` inside each block) is a plain conv with bias, scaled and added to
the block input. The head is global average pooling, dropout, a bias-free linear ``Bottleneck``
with BatchNorm, then L2 normalisation.

Shapes at 160x160 (B, C, H, W)::

    input (B, 3, 160, 160) -> stem (B, 256, 17, 17) -> 5 x block35 -> Mixed_6a (B, 896, 8, 8)
    -> 10 x block17 -> Mixed_7a (B, 1792, 3, 3) -> 5 x block8 + Block8 -> pool (B, 1792)
    -> Bottleneck (B, D) -> L2-normalised (B, D)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facenet.models.head import EmbeddingNet
from facenet.models.registry import register_model
from facenet.preprocess import ModelSpec

# why: Sandberg's batch_norm_params use epsilon 0.001; matching it keeps converted weights exact.
BN_EPS = 1e-3
# why: PyTorch's default running-average momentum. Sandberg used decay 0.995 (momentum 0.005),
# which makes the running statistics lag far behind during short from-scratch runs.
BN_MOMENTUM = 0.1


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU; TF-slim ``conv2d`` with ``normalizer_fn=batch_norm``.

    ``padding`` is symmetric: TF "SAME" at stride 1 with odd kernels pads ``k // 2`` on each side,
    and every stride-2 convolution of the network is "VALID", so this is exact, not approximate.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.BatchNorm = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.BatchNorm(self.conv(x)), inplace=True)


def _seq(*named: tuple[str, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(named))


class Block35(nn.Module):
    """Residual Inception block on the 17x17 grid (Inception-ResNet-A): (B, 256, H, W) -> same."""

    def __init__(self, scale: float = 0.17) -> None:
        super().__init__()
        self.scale = scale
        self.Branch_0 = _seq(("Conv2d_1x1", BasicConv2d(256, 32, 1)))
        self.Branch_1 = _seq(
            ("Conv2d_0a_1x1", BasicConv2d(256, 32, 1)),
            ("Conv2d_0b_3x3", BasicConv2d(32, 32, 3, padding=1)),
        )
        self.Branch_2 = _seq(
            ("Conv2d_0a_1x1", BasicConv2d(256, 32, 1)),
            ("Conv2d_0b_3x3", BasicConv2d(32, 32, 3, padding=1)),
            ("Conv2d_0c_3x3", BasicConv2d(32, 32, 3, padding=1)),
        )
        self.Conv2d_1x1 = nn.Conv2d(96, 256, 1)

    def forward(self, x: Tensor) -> Tensor:
        mixed = torch.cat([self.Branch_0(x), self.Branch_1(x), self.Branch_2(x)], 1)  # (B, 96, .)
        return F.relu(x + self.scale * self.Conv2d_1x1(mixed))


class Block17(nn.Module):
    """Residual Inception block on the 8x8 grid (Inception-ResNet-B): (B, 896, H, W) -> same."""

    def __init__(self, scale: float = 0.10) -> None:
        super().__init__()
        self.scale = scale
        self.Branch_0 = _seq(("Conv2d_1x1", BasicConv2d(896, 128, 1)))
        self.Branch_1 = _seq(
            ("Conv2d_0a_1x1", BasicConv2d(896, 128, 1)),
            ("Conv2d_0b_1x7", BasicConv2d(128, 128, (1, 7), padding=(0, 3))),
            ("Conv2d_0c_7x1", BasicConv2d(128, 128, (7, 1), padding=(3, 0))),
        )
        self.Conv2d_1x1 = nn.Conv2d(256, 896, 1)

    def forward(self, x: Tensor) -> Tensor:
        mixed = torch.cat([self.Branch_0(x), self.Branch_1(x)], 1)  # (B, 256, H, W)
        return F.relu(x + self.scale * self.Conv2d_1x1(mixed))


class Block8(nn.Module):
    """Residual Inception block on the 3x3 grid (Inception-ResNet-C): (B, 1792, H, W) -> same.

    The network's last block has ``scale=1`` and no ReLU (``activation_fn=None`` in Sandberg's code).
    """

    def __init__(self, scale: float = 0.20, activation: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.activation = activation
        self.Branch_0 = _seq(("Conv2d_1x1", BasicConv2d(1792, 192, 1)))
        self.Branch_1 = _seq(
            ("Conv2d_0a_1x1", BasicConv2d(1792, 192, 1)),
            ("Conv2d_0b_1x3", BasicConv2d(192, 192, (1, 3), padding=(0, 1))),
            ("Conv2d_0c_3x1", BasicConv2d(192, 192, (3, 1), padding=(1, 0))),
        )
        self.Conv2d_1x1 = nn.Conv2d(384, 1792, 1)

    def forward(self, x: Tensor) -> Tensor:
        mixed = torch.cat([self.Branch_0(x), self.Branch_1(x)], 1)  # (B, 384, H, W)
        out = x + self.scale * self.Conv2d_1x1(mixed)
        return F.relu(out) if self.activation else out


class Mixed6a(nn.Module):
    """Reduction-A (k=192, l=192, m=256, n=384): (B, 256, 17, 17) -> (B, 896, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.Branch_0 = _seq(("Conv2d_1a_3x3", BasicConv2d(256, 384, 3, stride=2)))
        self.Branch_1 = _seq(
            ("Conv2d_0a_1x1", BasicConv2d(256, 192, 1)),
            ("Conv2d_0b_3x3", BasicConv2d(192, 192, 3, padding=1)),
            ("Conv2d_1a_3x3", BasicConv2d(192, 256, 3, stride=2)),
        )
        self.Branch_2 = nn.MaxPool2d(3, stride=2)  # TF: Branch_2/MaxPool_1a_3x3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.Branch_0(x), self.Branch_1(x), self.Branch_2(x)], 1)


class Mixed7a(nn.Module):
    """Reduction-B: (B, 896, 8, 8) -> (B, 1792, 3, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.Branch_0 = _seq(
            ("Conv2d_0a_1x1", BasicConv2d(896, 256, 1)),
            ("Conv2d_1a_3x3", BasicConv2d(256, 384, 3, stride=2)),
        )
        self.Branch_1 = _seq(
            ("Conv2d_0a_1x1", BasicConv2d(896, 256, 1)),
            ("Conv2d_1a_3x3", BasicConv2d(256, 256, 3, stride=2)),
        )
        self.Branch_2 = _seq(
            ("Conv2d_0a_1x1", BasicConv2d(896, 256, 1)),
            ("Conv2d_0b_3x3", BasicConv2d(256, 256, 3, padding=1)),
            ("Conv2d_1a_3x3", BasicConv2d(256, 256, 3, stride=2)),
        )
        self.Branch_3 = nn.MaxPool2d(3, stride=2)  # TF: Branch_3/MaxPool_1a_3x3

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.Branch_0(x), self.Branch_1(x), self.Branch_2(x), self.Branch_3(x)]
        return torch.cat(branches, 1)


class Bottleneck(nn.Module):
    """(B, 1792) -> (B, D): bias-free linear + BatchNorm (TF-slim ``fully_connected`` with
    ``normalizer_fn=batch_norm``); TF's BatchNorm has no learned scale, so ``BatchNorm.weight``
    holds ones in converted weights."""

    def __init__(self, in_features: int, embedding_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, embedding_dim, bias=False)
        self.BatchNorm = nn.BatchNorm1d(embedding_dim, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:
        return self.BatchNorm(self.fc(x))


class InceptionResnetV1(EmbeddingNet):
    """Inception-ResNet-v1 embedding network; ``forward`` returns L2-normalised (B, D)."""

    def __init__(self, spec: ModelSpec, dropout: float = 0.2) -> None:
        super().__init__(spec)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)  # 160 -> 79
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)  # -> 77
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)  # -> 77
        self.MaxPool_3a_3x3 = nn.MaxPool2d(3, stride=2)  # -> 38
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)  # -> 38
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)  # -> 36
        self.Conv2d_4b_3x3 = BasicConv2d(192, 256, 3, stride=2)  # -> 17
        # why: 5 / 10 / 5 repeats and residual scales 0.17 / 0.10 / 0.20 as in Sandberg's
        # inception_resnet_v1.py (Szegedy et al. 2016 scale residuals by 0.1-0.3 for stability).
        self.Repeat = _seq(*[(f"block35_{i}", Block35(0.17)) for i in range(1, 6)])
        self.Mixed_6a = Mixed6a()
        self.Repeat_1 = _seq(*[(f"block17_{i}", Block17(0.10)) for i in range(1, 11)])
        self.Mixed_7a = Mixed7a()
        self.Repeat_2 = _seq(*[(f"block8_{i}", Block8(0.20)) for i in range(1, 6)])
        self.Block8 = Block8(scale=1.0, activation=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.Bottleneck = Bottleneck(1792, spec.embedding_dim)

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, 160, 160) normalised images -> (B, 1792) pooled features."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4b_3x3(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.MaxPool_3a_3x3(x))))
        x = self.Mixed_6a(self.Repeat(x))
        x = self.Mixed_7a(self.Repeat_1(x))
        x = self.Block8(self.Repeat_2(x))  # (B, 1792, 3, 3)
        # why: TF's AvgPool_1a_8x8 uses the whole remaining grid (3x3 at 160 input), "VALID".
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, D)
        return F.normalize(self.Bottleneck(self.dropout(self.features(x))), p=2, dim=1)


@register_model
def inception_resnet_v1(
    embedding_dim: int = 512, input_size: int = 160, dropout: float = 0.2
) -> InceptionResnetV1:
    """Inception-ResNet-v1 at 160x160 with a ``embedding_dim``-d L2-normalised output.

    Defaults follow Sandberg's published 2018 models: 512-d embeddings (the paper's NN models
    use 128; pass ``embedding_dim=128`` for that), dropout 0.2 before the bottleneck (keep
    probability 0.8), fixed standardisation ``(x - 127.5) / 128``. ~23.5M parameters at 512-d.
    ``input_size`` other than 160 works (global pooling) but leaves the published setting.
    """
    spec = ModelSpec(
        "inception_resnet_v1",
        (input_size, input_size),
        embedding_dim,
        normalization="fixed",
        mean=(127.5, 127.5, 127.5),
        std=(128.0, 128.0, 128.0),
    )
    return InceptionResnetV1(spec, dropout=dropout)
