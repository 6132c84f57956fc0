"""Sharpness-aware minimisation: the perturbation, its undoing, BatchNorm statistics, the gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from facenet.train import sam


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _loss(out: torch.Tensor) -> torch.Tensor:
    return (out**2).mean() + out[:, 0].sum() * 0.1


def test_ascend_moves_the_weights_exactly_rho_along_the_gradient_and_restore_undoes_it():
    net = _net()
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    _loss(net(torch.randn(16, 6))).backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    gnorm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads.values()]))
    moved = sam.ascend(net.parameters(), rho=0.05)
    assert len(moved) == len(before)
    for k, p in net.named_parameters():
        torch.testing.assert_close(p - before[k], 0.05 * grads[k] / gnorm)
    step = torch.cat([(p.detach() - before[k]).flatten() for k, p in net.named_parameters()])
    assert float(torch.linalg.vector_norm(step)) == pytest.approx(0.05, rel=1e-5)
    sam.restore(moved)
    for k, p in net.named_parameters():
        torch.testing.assert_close(p, before[k], rtol=0, atol=1e-7)


def test_a_uniform_gradient_scale_cancels():
    # a GradScaler multiplies every gradient by the same factor: the step must not change
    net_a, net_b = _net(), _net()
    x = torch.randn(16, 6)
    _loss(net_a(x)).backward()
    (_loss(net_b(x)) * 65536.0).backward()
    sam.ascend(net_a.parameters(), 0.1)
    sam.ascend(net_b.parameters(), 0.1)
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


@pytest.mark.parametrize("bad", [0.0, float("inf"), float("nan")])
def test_zero_or_overflowed_gradient_moves_nothing(bad):
    net = _net()
    before = [p.clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.full_like(p, bad)
    assert sam.ascend(net.parameters(), 0.05) == []
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert sam.ascend([nn.Parameter(torch.ones(3))], 0.05) == []  # no gradients at all


@pytest.mark.parametrize("momentum", [0.1, None])
def test_frozen_batchnorm_stats_normalise_by_the_batch_but_keep_the_running_stats(momentum):
    net = _net()
    bn = net[1]
    bn.momentum = momentum
    net.train()
    net(torch.randn(16, 6))  # one ordinary pass: the running stats move
    saved = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(16, 6) * 3 + 1
    with sam.frozen_batchnorm_stats(net):
        out = net(x)
    for k, v in bn.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert bn.momentum == momentum
    # the output is the batch-normalised one, as in any training-mode pass
    ref = _net()
    ref.load_state_dict(net.state_dict())
    ref.train()
    torch.testing.assert_close(out, ref(x))


def test_the_sam_gradient_matches_a_functional_reference():
    """ascend → backward → restore leaves, in .grad, the gradient at w + rho g/||g|| (oracle:
    torch.func on a copy of the weights), and the weights where they were."""
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    torch.manual_seed(1)
    x = torch.randn(16, 6)
    w = {k: v.detach().clone() for k, v in net.named_parameters()}

    def f(params):
        return _loss(functional_call(net, params, (x,)))

    g = grad(f)(w)
    norm = torch.linalg.vector_norm(torch.cat([v.flatten() for v in g.values()]))
    expected = grad(f)({k: w[k] + 0.2 * g[k] / norm for k in w})

    _loss(net(x)).backward()
    moved = sam.ascend(net.parameters(), 0.2)
    net.zero_grad(set_to_none=True)
    _loss(net(x)).backward()
    sam.restore(moved)
    for k, p in net.named_parameters():
        torch.testing.assert_close(p.grad, expected[k])
        torch.testing.assert_close(p.detach(), w[k], rtol=0, atol=1e-7)
