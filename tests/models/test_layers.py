"""The paper's layers against slow, obvious reimplementations."""

import pytest
import torch
from torch import nn

from facenet.models.layers import (
    LRN_ALPHA,
    LRN_BETA,
    LRN_K,
    LRN_SIZE,
    BatchNormShift,
    Inception,
    InceptionSpec,
    L2Pool2d,
    LocalResponseNorm,
    Maxout,
    check_norm,
    conv_unit,
    local_response_norm,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_l2_pool_matches_a_loop_over_windows():
    x = torch.rand(2, 3, 7, 6, generator=_gen()) - 0.3  # negatives too: squares, not values
    pool = L2Pool2d(3, stride=2, padding=1)
    got = pool(x)
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    ref = torch.empty_like(got)
    for i in range(got.shape[2]):
        for j in range(got.shape[3]):
            window = padded[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            ref[:, :, i, j] = window.pow(2).sum(dim=(2, 3)).sqrt()
    assert got.shape == (2, 3, 4, 3)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_l2_pool_gradient_is_finite_on_all_zero_windows():
    x = torch.zeros(1, 2, 5, 5, requires_grad=True)
    L2Pool2d()(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_lrn_is_caffes_formula():
    x = torch.rand(2, 9, 4, 4, generator=_gen(1)) * 30  # large enough for the norm to matter
    got = local_response_norm("lrn")(x)
    ref = torch.empty_like(x)
    half = LRN_SIZE // 2
    for c in range(x.shape[1]):
        lo, hi = max(0, c - half), min(x.shape[1], c + half + 1)
        s = x[:, lo:hi].pow(2).sum(1)
        ref[:, c] = x[:, c] / (LRN_K + LRN_ALPHA / LRN_SIZE * s) ** LRN_BETA
    torch.testing.assert_close(got, ref)
    assert not torch.allclose(got, x)  # it did normalise
    assert isinstance(local_response_norm("batchnorm"), nn.Identity)


@pytest.mark.parametrize("beta", [0.75, 0.6])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_lrn_matches_pytorchs_values_and_gradients(beta, channels_last):
    x = (torch.rand(2, 7, 3, 4, generator=_gen(5)) * 40).double()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fast, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = LocalResponseNorm(LRN_SIZE, alpha=0.5, beta=beta, k=2.0)  # big alpha: a real effect
    theirs = nn.LocalResponseNorm(LRN_SIZE, alpha=0.5, beta=beta, k=2.0)
    y_fast, y_ref = ours(fast), theirs(ref)
    torch.testing.assert_close(y_fast, y_ref)
    w = torch.randn(y_ref.shape, generator=_gen(6), dtype=torch.float64)
    (y_fast * w).sum().backward()
    (y_ref * w).sum().backward()
    torch.testing.assert_close(fast.grad, ref.grad)


def test_maxout_takes_the_max_of_its_pieces():
    layer = Maxout(5, 3, pieces=2)
    x = torch.randn(4, 5, generator=_gen(2))
    y = layer.linear(x).view(4, 3, 2)
    torch.testing.assert_close(layer(x), torch.maximum(y[..., 0], y[..., 1]))
    assert sum(p.numel() for p in layer.parameters()) == 5 * 3 * 2 + 3 * 2


def test_batchnorm_shift_has_one_learned_parameter_per_channel_like_a_bias():
    bn = BatchNormShift(8)
    assert [n for n, _ in bn.named_parameters()] == ["bias"]
    assert bn.bias.shape == (8,)
    lrn = conv_unit(4, 8, 3, norm="lrn")
    bnu = conv_unit(4, 8, 3, norm="batchnorm")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(lrn) == count(bnu) == 4 * 8 * 9 + 8
    x = torch.randn(6, 8, 3, 3, generator=_gen(3))
    bn.train()
    out = bn(x)  # per-channel standardisation (no scale) + shift
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)


def test_bad_norm_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="lrn"):
        check_norm("groupnorm")


def test_inception_output_channels_and_sizes():
    spec = InceptionSpec("x", 0, 8, 16, 4, 8, "max", 0, stride=2)
    block = Inception(12, spec)
    y = block(torch.randn(2, 12, 7, 9, generator=_gen(4)))
    assert block.out_channels == 16 + 8 + 12 == y.shape[1]
    assert y.shape[2:] == (4, 5)
    spec = InceptionSpec("y", 4, 8, 16, 0, 0, "l2", 6)
    block = Inception(12, spec)
    assert block.branch5x5 is None
    assert block(torch.randn(1, 12, 5, 5)).shape == (1, 4 + 16 + 6, 5, 5)
    with pytest.raises(ValueError, match="1x1"):
        Inception(12, InceptionSpec("z", 4, 8, 16, 4, 8, "max", 0, stride=2))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_shift_is_batchnorm_with_a_unit_scale(momentum):
    """Oracle: nn.BatchNorm2d with its weight held at 1 (train and eval, running statistics,
    gradients of input and shift)."""
    ours = BatchNormShift(6, momentum=0.1)
    ours.momentum = momentum
    ref = nn.BatchNorm2d(6, eps=ours.eps, momentum=momentum)
    with torch.no_grad():
        ref.bias.copy_(torch.linspace(-1, 1, 6))
        ours.bias.copy_(ref.bias)
    ref.weight.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = (3 * torch.randn(4, 6, 5, 5, generator=g) + 1).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        ours(x).pow(2).sum().backward()
        ref(x2).pow(2).sum().backward()
        torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert int(ours.num_batches_tracked) == 3
    ours.eval(), ref.eval()
    x = torch.randn(2, 6, 5, 5, generator=g)
    torch.testing.assert_close(ours(x), ref(x))
    assert "weight" not in ours.state_dict()  # still no learned (or stored) scale


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_l2_pool_gradient_stays_finite_in_half_precision(dtype):
    """An all-zero window (common after ReLU) must not give NaN gradients in fp16, where the
    1e-12 floor underflows; the values match the float32 pooling."""
    x = torch.zeros(2, 3, 6, 6)
    x[0, 0, 0, 0] = 1.5
    x[1, 2, 3:, 3:] = torch.rand(3, 3)
    pool = L2Pool2d(3, 1, 1)
    xh = x.to(dtype).requires_grad_()
    y = pool(xh)
    assert y.dtype == dtype
    y.float().sum().backward()
    assert torch.isfinite(xh.grad).all()
    torch.testing.assert_close(y.float(), pool(x), rtol=1e-2, atol=1e-3)
