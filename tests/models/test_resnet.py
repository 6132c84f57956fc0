"""``resnet_cpu``: size, shape bookkeeping, identity-initialised blocks, and bad arguments."""

from __future__ import annotations

import pytest
import torch

from facenet.models import create_model
from facenet.models.flops import count_multiply_adds
from facenet.models.resnet import BasicBlock


def test_default_size_and_cost_are_what_the_docs_say():
    model = create_model("resnet_cpu")
    params = sum(p.numel() for p in model.parameters())
    assert model.spec.input_size == (96, 96)
    assert 1.55e6 < params < 1.75e6  # docstring and README: ~1.6-1.7M
    assert 50e6 < count_multiply_adds(model) < 70e6  # docstring: ~60M MACs at 96 px


def test_blocks_start_as_the_identity_map_on_their_shortcut():
    # zero-initialised last BN scale: the residual branch adds nothing before training
    block = BasicBlock(8, 8).eval()
    x = torch.randn(2, 8, 6, 6).relu()
    assert torch.equal(block(x), x)
    down = BasicBlock(8, 16, stride=2).eval()
    assert torch.allclose(down(x), down.act(down.shortcut(x)))


@pytest.mark.parametrize("size", [64, 80, 112])
def test_other_input_sizes_and_widths(size):
    model = create_model("resnet_cpu", input_size=size, widths=[8, 16], depths=[1, 1]).eval()
    out = model(torch.randn(3, 3, size, size))
    assert out.shape == (3, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_mismatched_widths_and_depths_are_refused():
    with pytest.raises(ValueError, match="must pair up"):
        create_model("resnet_cpu", widths=[8, 16], depths=[1])
