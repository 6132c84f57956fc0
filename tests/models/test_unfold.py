"""Unfolding a frozen graph's batch norms (``facenet.models.unfold``): eval unchanged, train mode
back to what the original network computed (the converted model could not be fine-tuned)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from facenet.models.unfold import is_identity_batchnorm, unfold_identity_batchnorm


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.BatchNorm2d(8, eps=1e-3),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, bias=False),
        nn.BatchNorm2d(6, eps=1e-3),
        nn.Flatten(),
        nn.Linear(6 * 12 * 12, 5, bias=False),
        nn.BatchNorm1d(5, eps=1e-3),
    )


def _data(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, 3, 16, 16, generator=g) * 2 + 0.5 for _ in range(n)]


def _as_converted(net: nn.Module) -> nn.Module:
    """What a frozen-graph converter loads: each batch norm folded into the layer before it, left
    behind as an identity batch norm (mean 0, variance 1 - eps, unit scale) carrying the offset."""
    out = copy.deepcopy(net).eval()
    mods = list(out)
    for layer, bn in zip(mods, mods[1:], strict=False):
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        with torch.no_grad():
            layer.weight.mul_(scale.view(-1, *([1] * (layer.weight.ndim - 1))))
            bn.bias.copy_(bn.bias - bn.running_mean * scale)
            bn.weight.fill_(1.0)
            bn.running_mean.zero_()
            bn.running_var.fill_(1 - bn.eps)
    return out


@pytest.fixture(scope="module")
def trained():
    """A network whose running statistics are its data's (cumulative average over 40 batches),
    with non-trivial scales and shifts."""
    net = _net()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    net.train()
    with torch.no_grad():
        for x in _data(40, 1):
            net(x)
    return net.eval()


def test_unfolding_keeps_eval_and_restores_train_mode(trained):
    converted = _as_converted(trained)
    x = _data(1, 2)[0]
    torch.testing.assert_close(converted(x), trained(x), rtol=1e-4, atol=1e-4)  # folding is exact
    assert sum(is_identity_batchnorm(m) for m in converted.modules()) == 3
    # the bug: in train mode the converted network adds each moving mean a second time
    wrong = copy.deepcopy(converted).train()(x)
    right = copy.deepcopy(trained).train()(x)
    assert (wrong - right).abs().max() > 0.5
    # unfolded on the data the statistics came from: eval unchanged, train mode the original's
    unfolded = copy.deepcopy(converted)
    assert unfold_identity_batchnorm(unfolded, _data(40, 1)) == 3
    torch.testing.assert_close(unfolded.eval()(x), trained(x), rtol=1e-4, atol=1e-4)
    # (up to eps placement and PyTorch's unbiased running variance: < 1% here, against > 0.5)
    torch.testing.assert_close(unfolded.train()(x), right, rtol=2e-2, atol=2e-2)
    assert not any(is_identity_batchnorm(m) for m in unfolded.modules())
    # a network with real statistics is left alone
    assert unfold_identity_batchnorm(copy.deepcopy(trained), _data(2, 3)) == 0


def test_no_images_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        unfold_identity_batchnorm(_as_converted(_net().eval()), [])
