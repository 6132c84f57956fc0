"""Building blocks shared by the paper's models (NN1, NN2, NN3, NN4, NNS1, NNS2).

- :func:`conv_unit`: conv + ReLU (paper) or conv + shift-only BatchNorm + ReLU (``norm="batchnorm"``);
- :func:`local_response_norm`: the paper's "norm"/"rnorm" layer (LRN), or nothing under BatchNorm;
- :class:`L2Pool2d`: the "L2" pooling of the NN2 table, ``sqrt(sum over the window of x^2)``;
- :class:`Maxout`: NN1's "maxout p=2" fully connected layers;
- :class:`Inception`: one row of the NN2 table (1x1 / 3x3 / 5x5 / pool branches, concatenated).

The ``norm`` option and the parameter count
-------------------------------------------
``norm="lrn"`` (default) is the paper: every conv has a bias, LRN sits where the tables say "norm".
``norm="batchnorm"`` makes training from scratch practical: LRN layers are dropped and every conv
becomes conv (no bias) + BatchNorm with a learned shift but no learned scale (``BatchNormShift``,
like TF-slim's default ``scale=False``, which Sandberg's FaceNet also uses). The learned shift
takes the place of the conv bias one for one, so **the number of learned parameters is exactly
the same** in both modes; BatchNorm adds only buffers (running mean and variance, 2 per conv
output channel), which are statistics, not learned weights. ``facenet models`` prints both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Norm = Literal["lrn", "batchnorm"]
NORMS: tuple[str, ...] = ("lrn", "batchnorm")
PoolKind = Literal["max", "l2"]

# why: the paper's "norm" is GoogLeNet's/Caffe's LRN: 5 neighbouring channels, alpha 1e-4,
# beta 0.75, k 1 (PyTorch divides alpha by size exactly as Caffe does).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 1.0
# why: floors the L2-pool sum so sqrt has a finite gradient where a whole window is 0 after ReLU;
# the output changes by at most sqrt(1e-12) = 1e-6.
L2_POOL_EPS = 1e-12


def check_norm(norm: str) -> Norm:
    """Validate the ``norm`` option; raises ``ValueError`` naming the valid choices."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm  # type: ignore[return-value]


class BatchNormShift(nn.BatchNorm2d):
    """BatchNorm2d with a learned shift (beta) but no learned scale (gamma fixed at 1).

    It replaces the bias of the conv before it, so a conv + BatchNormShift has as many learned
    parameters as the paper's conv with bias. Exported as a standard BatchNormalization op.
    """

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)
        self.weight = None  # type: ignore[assignment]

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        momentum = self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative average, as nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked)
        # why: with weight=None, CUDA's batch-norm backward hands autograd an empty bias gradient
        # ("NativeBatchNormBackward0 returned an invalid gradient at index 2", torch 2.11 on an
        # H200); a constant unit scale takes the ordinary path on every device, same values.
        scale = torch.ones_like(self.bias)
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            scale,
            self.bias,
            self.training,
            momentum or 0.0,
            self.eps,
        )


class SyncBatchNormShift(nn.SyncBatchNorm):
    """:class:`BatchNormShift` under DDP: batch statistics synchronised across ranks.

    ``nn.SyncBatchNorm.convert_sync_batchnorm`` would keep ``weight=None``, and PyTorch's
    synchronised backward then drops the bias gradient too (``grad_bias`` is set to ``None``
    whenever ``weight is None``): the shifts would silently never train. Here the unit scale is a
    non-persistent buffer, so the shift gets its gradient and the state dict keeps
    :class:`BatchNormShift`'s keys (``bias``, running statistics).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-3,
        momentum: float | None = 0.1,
        process_group: object | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=eps, momentum=momentum, affine=True, process_group=process_group
        )
        del self._parameters["weight"]
        self.register_buffer("weight", torch.ones(num_features), persistent=False)

    @classmethod
    def from_shift(
        cls, bn: BatchNormShift, process_group: object | None = None
    ) -> SyncBatchNormShift:
        """A synchronised copy of ``bn`` sharing its shift parameter and statistics."""
        out = cls(bn.num_features, bn.eps, bn.momentum, process_group)
        out.bias = bn.bias
        out.running_mean = bn.running_mean
        out.running_var = bn.running_var
        out.num_batches_tracked = bn.num_batches_tracked
        out.weight = out.weight.to(bn.bias.device)
        out.train(bn.training)
        return out


def conv_unit(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | None = None,
    norm: Norm = "lrn",
) -> nn.Sequential:
    """Conv + ReLU ("lrn") or conv + BatchNormShift + ReLU ("batchnorm"); 'same' padding default.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, ceil(H / stride), ceil(W / stride))
    for odd kernels with the default padding ``kernel_size // 2``.
    """
    padding = kernel_size // 2 if padding is None else padding
    batchnorm = check_norm(norm) == "batchnorm"
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not batchnorm)
    ]
    if batchnorm:
        layers.append(BatchNormShift(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class LocalResponseNorm(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` (same formula, attributes and state) computed about 3x faster.

    ``y_c = x_c * (k + alpha / size * sum_{|c' - c| <= size // 2} x_{c'}^2) ^ -beta``
    (Caffe's formula, as PyTorch's). PyTorch's version builds the channel-window sum with a 3-D
    average pool over a padded copy, which took as long as all of NN4's convolutions at batch
    32; here it is ``size`` shifted slice adds, and ``t^-0.75`` is ``rsqrt(t) * sqrt(rsqrt(t))``
    instead of ``exp(-0.75 log t)``. Shapes: (B, C, H, W) -> (B, C, H, W), any memory format.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            return super().forward(x)
        c, size = x.shape[1], self.size
        sq = x * x
        padded = F.pad(sq, (0, 0, 0, 0, size // 2, (size - 1) // 2))  # zero channels around
        window = padded[:, 0:c] + padded[:, 1 : c + 1] if size > 1 else padded[:, 0:c].clone()
        for i in range(2, size):
            window += padded[:, i : i + c]
        t = window.mul_(self.alpha / size).add_(self.k)
        if self.beta == 0.75:
            r = t.rsqrt_()
            return x * r * r.sqrt()
        return x * t.pow_(-self.beta)


def local_response_norm(norm: Norm = "lrn") -> nn.Module:
    """The paper's LRN layer under ``norm="lrn"``; identity under BatchNorm (convs normalise)."""
    if check_norm(norm) == "lrn":
        return LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)
    return nn.Identity()


def max_pool(stride: int = 2) -> nn.MaxPool2d:
    """3x3 max pooling with padding 1: (H, W) -> (ceil(H / stride), ceil(W / stride)) for odd H."""
    return nn.MaxPool2d(3, stride=stride, padding=1)


class L2Pool2d(nn.Module):
    """L2 pooling: ``y = sqrt(sum_{window} x^2)``; zero padding (zeros add nothing to the sum).

    Shapes: (B, C, H, W) -> (B, C, H', W') as ``nn.AvgPool2d`` with the same arguments.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        area = self.kernel_size * self.kernel_size
        # why: pooled in float32 — in fp16 (autocast) the floor 1e-12 underflows to 0, and an
        # all-zero window (common after ReLU) back-propagates 0 * inf = NaN into the network
        xf = x.float()
        mean_sq = F.avg_pool2d(
            xf * xf, self.kernel_size, self.stride, self.padding, count_include_pad=True
        )
        return torch.sqrt((mean_sq * area).clamp_min(L2_POOL_EPS)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Maxout(nn.Module):
    """Maxout fully connected layer (Goodfellow et al., 2013): max over ``pieces`` linear maps.

    Shapes: (B, in_features) -> (B, out_features); parameters ``in * out * pieces`` (+ biases).
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2) -> None:
        super().__init__()
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x)  # (B, out * pieces), unit-major: [u0p0, u0p1, u1p0, ...]
        return y.view(y.shape[0], self.out_features, self.pieces).amax(dim=2)


@dataclass(frozen=True)
class InceptionSpec:
    """One row of the paper's Inception table (NN2), in the table's column order.

    A 0 drops that branch (e.g. ``n1x1=0`` in 3c/4e, ``n5x5=0`` in NN4's top layers);
    ``pool_proj=0`` passes the pooled input through unprojected.
    """

    name: str  # the table's row name, e.g. "3a"
    n1x1: int  # "#1x1"
    n3x3_reduce: int  # "#3x3 reduce"
    n3x3: int  # "#3x3"
    n5x5_reduce: int  # "#5x5 reduce"
    n5x5: int  # "#5x5"
    pool: PoolKind  # "m" (max) or "L2" in the table's "pool proj" column
    pool_proj: int  # the "p" number after the pool kind; 0 = no projection
    stride: int = 1  # 2 where the table says "/2" ("256,2"): the 3x3, 5x5 and pool stride


class Inception(nn.Module):
    """An Inception module: parallel 1x1, 1x1->3x3, 1x1->5x5 and pool(->1x1) branches, concatenated.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, ceil(H / s), ceil(W / s)),
    ``out_channels = n1x1 + n3x3 + n5x5 + (pool_proj or in_channels)``.
    """

    def __init__(self, in_channels: int, spec: InceptionSpec, norm: Norm = "lrn") -> None:
        super().__init__()
        s = spec
        if s.stride != 1 and s.n1x1:
            raise ValueError(f"inception {s.name}: a strided module has no 1x1 branch")
        self.spec = s
        self.branch1x1 = conv_unit(in_channels, s.n1x1, 1, norm=norm) if s.n1x1 else None
        self.branch3x3 = (
            nn.Sequential(
                conv_unit(in_channels, s.n3x3_reduce, 1, norm=norm),
                conv_unit(s.n3x3_reduce, s.n3x3, 3, stride=s.stride, norm=norm),
            )
            if s.n3x3
            else None
        )
        self.branch5x5 = (
            nn.Sequential(
                conv_unit(in_channels, s.n5x5_reduce, 1, norm=norm),
                conv_unit(s.n5x5_reduce, s.n5x5, 5, stride=s.stride, norm=norm),
            )
            if s.n5x5
            else None
        )
        pool: nn.Module = (
            max_pool(s.stride) if s.pool == "max" else L2Pool2d(3, stride=s.stride, padding=1)
        )
        proj = conv_unit(in_channels, s.pool_proj, 1, norm=norm) if s.pool_proj else nn.Identity()
        self.branch_pool = nn.Sequential(pool, proj)
        self.out_channels = s.n1x1 + s.n3x3 + s.n5x5 + (s.pool_proj or in_channels)

    def forward(self, x: Tensor) -> Tensor:
        outs = [
            branch(x)
            for branch in (self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool)
            if branch is not None
        ]
        return torch.cat(outs, dim=1)


def init_weights(module: nn.Module) -> None:
    """He-normal convs and linears (ReLU everywhere, SPEC §4: random initialisation), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
