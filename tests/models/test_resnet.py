"""``resnet_cpu``: size, shape bookkeeping, identity-initialised blocks, and bad arguments."""

from __future__ import annotations

import pytest
import torch

from facenet.models import create_model
from facenet.models.export import export_model
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


@pytest.mark.parametrize("size", [64, 80, 96, 97, 112])
def test_gdc_head_covers_the_whole_last_map_exactly(size):
    # the depthwise kernel must equal the last map, leaving a 1x1 output at any input size
    model = create_model("resnet_cpu", input_size=size, widths=[8, 16], depths=[1, 1], head="gdc")
    feats = model.stages(model.stem(torch.randn(2, 3, size, size)))
    assert model.pool[0].kernel_size == tuple(feats.shape[-2:])
    out = model.eval()(torch.randn(2, 3, size, size))
    assert out.shape == (2, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_gdc_head_sees_where_a_feature_is_and_gap_does_not():
    # moving the last map's activations between positions changes the GDC embedding only
    torch.manual_seed(0)
    gdc = create_model("resnet_cpu", widths=[8, 16], depths=[1, 1], head="gdc").eval()
    gap = create_model("resnet_cpu", widths=[8, 16], depths=[1, 1]).eval()
    with torch.no_grad():
        gdc.pool[0].weight.normal_()
        feats = torch.rand(1, 16, *gdc.pool[0].kernel_size)
        moved = feats.flip(-1, -2)
        assert torch.allclose(
            gap.head(gap.pool(feats).flatten(1)), gap.head(gap.pool(moved).flatten(1))
        )
        assert not torch.allclose(
            gdc.head(gdc.pool(feats).flatten(1)), gdc.head(gdc.pool(moved).flatten(1)), atol=1e-4
        )


@pytest.mark.parametrize("size", [64, 96, 97])
def test_a_stride_one_stage_keeps_its_input_resolution(size):
    # strides (1, 2): the first stage works at the stem's output size, the map ends 2x larger
    model = create_model(
        "resnet_cpu", input_size=size, widths=[8, 16], depths=[1, 1], strides=[1, 2], head="gdc"
    )
    x = torch.randn(2, 3, size, size)
    stem = model.stem(x)
    first = model.stages[0](stem)
    assert first.shape[-2:] == stem.shape[-2:]
    assert model.pool[0].kernel_size == tuple(model.stages[1](first).shape[-2:])
    default = create_model("resnet_cpu", input_size=size, widths=[8, 16], depths=[1, 1])
    assert count_multiply_adds(model) > 2 * count_multiply_adds(default)  # 4x the pixels
    assert model.eval()(x).shape == (2, 128)
    assert model.spec.extra["strides"] == [1, 2]
    assert default.spec.extra["strides"] == [2, 2]


@pytest.mark.parametrize("strides", [[2], [2, 3], [0, 2]])
def test_bad_strides_are_refused(strides):
    with pytest.raises(ValueError, match="strides"):
        create_model("resnet_cpu", widths=[8, 16], depths=[1, 1], strides=strides)


def test_unknown_head_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="gap, gdc"):
        create_model("resnet_cpu", head="flatten")


@pytest.mark.parametrize("embedding_bn", [False, True])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_gdc_head_exports_with_parity(fmt, embedding_bn, tmp_path):
    torch.manual_seed(0)
    model = create_model(
        "resnet_cpu", widths=[8, 16], depths=[1, 1], head="gdc", embedding_bn=embedding_bn
    ).eval()
    report = export_model(model, tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'pt'}", fmt)
    assert report.max_abs_diff <= 1e-4  # export_model raises above 1e-4 too


def test_embedding_bn_centres_each_dimension_before_the_unit_norm():
    torch.manual_seed(0)
    model = create_model("resnet_cpu", widths=[8, 16], depths=[1, 1], embedding_bn=True)
    assert model.spec.extra["embedding_bn"] is True
    assert model.head.fc.bias is None  # the BN's shift replaces it
    seen = {}
    model.head.bn.register_forward_hook(lambda m, i, o: seen.update(pre=i[0], post=o))
    out = model.train()(torch.randn(16, 3, 96, 96) + 3.0)  # off-centre input
    assert torch.allclose(out.norm(dim=1), torch.ones(16), atol=1e-5)
    # before the BN the dimensions sit off the origin; after it each is standardised over the batch
    assert seen["pre"].mean(0).abs().max() > 0.05
    assert seen["post"].mean(0).abs().max() < 1e-5
    pre = seen["pre"]
    expected = (pre - pre.mean(0)) / torch.sqrt(pre.var(0, unbiased=False) + model.head.bn.eps)
    assert torch.allclose(seen["post"], expected, atol=1e-5)


def test_embedding_bn_off_keeps_the_shipped_head():
    # default: the head the shipped weights were trained with (fc with bias, no BN)
    model = create_model("resnet_cpu", widths=[8, 16], depths=[1, 1])
    assert model.spec.extra["embedding_bn"] is False
    assert model.head.fc.bias is not None
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    rebuilt = create_model("resnet_cpu", widths=[8, 16], depths=[1, 1], embedding_bn=True)
    assert set(rebuilt.state_dict()) - set(model.state_dict()) >= {"head.bn.weight", "head.bn.bias"}
