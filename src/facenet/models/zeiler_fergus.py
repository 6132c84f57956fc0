"""``nn1``: FaceNet's Zeiler&Fergus-based model with 1x1 convolutions (SPEC §5, paper Table 1).

Layer by layer at 220x220 (output H x W x C; kernel / stride); "rnorm" is LRN::

    conv1   110x110x64   7x7/2        pool1  55x55x64   max 3x3/2     rnorm1
    conv2a   55x55x64    1x1          conv2  55x55x192  3x3           rnorm2
    pool2    28x28x192   max 3x3/2    conv3a 28x28x192  1x1           conv3  28x28x384  3x3
    pool3    14x14x384   max 3x3/2    conv4a 14x14x384  1x1           conv4  14x14x256  3x3
    conv5a   14x14x256   1x1          conv5  14x14x256  3x3
    conv6a   14x14x256   1x1          conv6  14x14x256  3x3
    pool4     7x7x256    max 3x3/2
    fc1     1x32x128 = 4096 units, maxout p=2   (12544 -> 2 x 4096: 103M params, 103M mult-adds)
    fc2     1x32x128 = 4096 units, maxout p=2   (4096 -> 2 x 4096: 34M)
    fc7128  128                                  (4096 -> 128: 524K)
    L2      unit-length 128-d embedding

Counted: 140.0M parameters, 1.606B multiply-adds (paper: 140M, 1.6B). ``fc1``'s "1x32x128"
is the paper's way of writing 4096 output units; with two maxout pieces each, fc1 holds
12544 x 8192 weights, which is what makes the paper's 103M for that row and 140M in total.
The paper's table also has a parameter-free "concat" row after pool4 (left over from a
multi-tower variant); it is the identity here.

The max pools use padding 1, which gives exactly the table's sizes (110 -> 55 -> 28 -> 14 -> 7).
"""

from __future__ import annotations

from torch import Tensor, nn

from facenet.models.head import EmbeddingNet
from facenet.models.layers import (
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


class ZeilerFergusNet(EmbeddingNet):
    """NN1. Shapes: (B, 3, 220, 220) -> (B, embedding_dim), L2-normalised rows."""

    def __init__(
        self, spec: ModelSpec, norm: Norm = "lrn", fc_units: int = 4096, maxout_pieces: int = 2
    ) -> None:
        super().__init__(spec)
        check_norm(norm)
        h, w = spec.input_size
        self.features = nn.Sequential(
            conv_unit(3, 64, 7, stride=2, norm=norm),  # conv1
            max_pool(),  # pool1
            local_response_norm(norm),  # rnorm1
            conv_unit(64, 64, 1, norm=norm),  # conv2a
            conv_unit(64, 192, 3, norm=norm),  # conv2
            local_response_norm(norm),  # rnorm2
            max_pool(),  # pool2
            conv_unit(192, 192, 1, norm=norm),  # conv3a
            conv_unit(192, 384, 3, norm=norm),  # conv3
            max_pool(),  # pool3
            conv_unit(384, 384, 1, norm=norm),  # conv4a
            conv_unit(384, 256, 3, norm=norm),  # conv4
            conv_unit(256, 256, 1, norm=norm),  # conv5a
            conv_unit(256, 256, 3, norm=norm),  # conv5
            conv_unit(256, 256, 1, norm=norm),  # conv6a
            conv_unit(256, 256, 3, norm=norm),  # conv6
            max_pool(),  # pool4
        )
        # why: four stride-2 stages with 'same' padding: 220 -> 110 -> 55 -> 28 -> 14 -> 7.
        fh, fw = h, w
        for _ in range(5):
            fh, fw = (fh + 1) // 2, (fw + 1) // 2
        self.fc1 = Maxout(256 * fh * fw, fc_units, maxout_pieces)
        self.fc2 = Maxout(fc_units, fc_units, maxout_pieces)
        self.fc7128 = nn.Linear(fc_units, spec.embedding_dim)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x).flatten(1)  # (B, 256 * 7 * 7)
        x = self.fc2(self.fc1(x))  # (B, 4096)
        return nn.functional.normalize(self.fc7128(x), p=2, dim=1, eps=1e-12)  # (B, D)


@register_model
def nn1(embedding_dim: int = 128, norm: Norm = "lrn") -> ZeilerFergusNet:
    """FaceNet NN1: Zeiler&Fergus + 1x1 convs, LRN, maxout FC, 220x220 (140M params, 1.6B FLOPS).

    Args:
        embedding_dim: length of the output embedding (paper: 128).
        norm: ``"lrn"`` (paper) or ``"batchnorm"`` (conv + shift-only BatchNorm instead of LRN;
            the same number of learned parameters, see ``facenet.models.layers``).
    """
    # why: the paper's NN1 input is 220x220 (Table 1).
    spec = ModelSpec("nn1", (220, 220), embedding_dim, extra={"norm": norm})
    return ZeilerFergusNet(spec, norm=norm)
