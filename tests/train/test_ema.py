"""The weight EMA against a plain loop written out by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from facenet.train.ema import ema_decay_at, make_ema


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())


def test_decay_warms_up_then_holds():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 8) == pytest.approx(0.5)
    assert ema_decay_at(0.9, 1000) == 0.9
    assert all(ema_decay_at(0.99, n) <= ema_decay_at(0.99, n + 1) for n in range(2000))


def test_average_matches_a_hand_written_loop():
    net = _net()
    ema = make_ema(net, 0.8)
    assert ema.module is not net and not ema.module.training
    # oracle: float64 copies of every floating tensor (weights and BatchNorm statistics)
    ref = None
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for n in range(30):
        x = torch.randn(5, 3, 6, 6, generator=torch.Generator().manual_seed(n))
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        ema.update_parameters(net)
        current = {k: v.detach().double() for k, v in net.state_dict().items()}
        if ref is None:
            ref = copy.deepcopy(current)  # the first update copies
        else:
            d = ema_decay_at(0.8, n)
            ref = {k: d * ref[k] + (1 - d) * current[k] for k in ref}
    got = ema.module.state_dict()
    for k, v in got.items():
        if k.endswith("num_batches_tracked"):
            assert int(v) == 30 == int(net.state_dict()[k])  # counters follow the model
        else:
            torch.testing.assert_close(v.double(), ref[k], rtol=1e-5, atol=1e-6)
    assert int(ema.n_averaged) == 30
    # and the average is not the last weights
    assert not torch.allclose(got["0.weight"], net.state_dict()["0.weight"])


def test_average_does_not_touch_the_trained_model():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ema = make_ema(net, 0.9)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)
        ema.update_parameters(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_decay_outside_the_open_interval_is_refused(decay):
    with pytest.raises(ValueError, match="EMA decay"):
        make_ema(_net(), decay)
