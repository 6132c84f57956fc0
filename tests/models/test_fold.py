"""Batch norm folded into the convolutions (``facenet.models.fold``): the inference copy embeds
like the model it came from (<= 1e-4 on unit vectors), over every registry model with batch norm
and the converted Inception-ResNet-v1 structure; the model itself is never changed."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
from torch import nn

from facenet.apps.embedder import Embedder
from facenet.eval.embedding import TorchEmbedder, model_identity
from facenet.fingerprint import weights_sha256
from facenet.models import create_model, list_models
from facenet.models.fold import fold_batch_norm, inference_copy
from facenet.models.inference import check_backend, embed_faces, inference_network
from facenet.models.loading import save_weights
from facenet.models.registry import _REGISTRY

PARITY = 1e-4  # why: the bound for embeddings of the folded copy vs today's
HEAVY = {"nn1"}  # 140M parameters: seconds to build, covered by the other Zeiler-Fergus-free nets


def _bn_variants() -> list:
    """(name, kwargs) of every registry model that has batch norm, as built by default or with
    ``norm="batchnorm"`` (the paper's nets)."""
    out = []
    for name in list_models():
        params = inspect.signature(_REGISTRY[name]).parameters
        kwargs = {"norm": "batchnorm"} if "norm" in params else {}
        marks = [pytest.mark.slow] if name in HEAVY or name == "inception_resnet_v1" else []
        out.append(pytest.param(name, kwargs, marks=marks, id=name))
    out.append(pytest.param("resnet_cpu", {"embedding_bn": True, "head": "gdc"}, id="resnet_gdc"))
    return out


def _randomised(name: str, **kwargs) -> nn.Module:
    """A seeded eval-mode model whose batch norms have non-trivial statistics and affine terms
    (fresh ones are the identity map, which any folding bug would survive)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model(name, **kwargs).eval()
        g = torch.Generator().manual_seed(1)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                if m.bias is not None:
                    m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def _crops(model: nn.Module, n: int = 3, seed: int = 0) -> np.ndarray:
    h, w = model.spec.input_size
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # why: tests run beside others on small machines
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("name", "kwargs"), _bn_variants())
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
def test_folded_copy_embeds_like_the_model(name, kwargs, channels_last):
    model = _randomised(name, **kwargs)
    before = copy.deepcopy(model.state_dict())
    had_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    crops = _crops(model)
    net = inference_copy(model, channels_last=channels_last)
    ref = embed_faces(model, crops, framed=True)
    got = embed_faces(net, crops, framed=True, channels_last=channels_last)
    assert float((got - ref).abs().max()) <= PARITY
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    # the model itself keeps its batch norm and weights (training goes on with them)
    assert had_bn == any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert net.spec == model.spec


def test_converted_inception_resnet_v1_folds_every_batch_norm():
    """Every conv of the converted structure (and the Bottleneck's linear) folds: nothing is left
    for the elementwise passes TensorFlow's frozen graph does not do either."""
    model = _randomised("inception_resnet_v1")
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    report = fold_batch_norm(copy.deepcopy(model))
    assert report.traced and report.remaining == () and len(report.folded) == n_bn
    assert ("Bottleneck.fc", "Bottleneck.BatchNorm") in report.folded
    assert ("Conv2d_1a_3x3.conv", "Conv2d_1a_3x3.BatchNorm") in report.folded


def test_batch_norm_without_running_statistics_is_left_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    report = fold_batch_norm(net)
    assert report.folded == () and report.remaining == ("1",)


def test_a_conv_whose_output_is_also_used_elsewhere_is_not_folded():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding would change the second use of y

    net = Branchy().eval()
    net.bn.running_mean.fill_(0.3)
    x = torch.randn(2, 3, 8, 8)
    ref = net(x)
    report = fold_batch_norm(net)
    assert report.folded == () and report.remaining == ("bn",)
    assert torch.equal(net(x), ref)


def test_folding_a_training_model_is_refused_and_a_folded_copy_is_never_saved(tmp_path):
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batch_norm(create_model("tiny").train())
    with pytest.raises(ValueError, match="inference copy"):
        save_weights(inference_copy(create_model("tiny").eval()), tmp_path / "w.safetensors")


def test_the_embedders_run_the_folded_copy_and_fingerprint_the_original():
    model = _randomised("resnet_cpu")
    crops = _crops(model, 4)
    ref = embed_faces(model, crops, framed=True).numpy()
    app = Embedder(model, detector=None, crop="none")
    evaluator = TorchEmbedder(model, align="box")
    for embedder in (app, evaluator):
        bns = [m for m in embedder.network.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns == [] and embedder.model is model
        assert np.abs(embedder.embed_crops(list(crops)) - ref).max() <= PARITY
    assert app.fingerprint.weights_hash == weights_sha256(model)
    assert evaluator.identity == model_identity(model)  # cached embeddings stay valid


def test_backend_choices_are_checked():
    with pytest.raises(ValueError, match="torch, onnxruntime"):
        check_backend("tensorrt")
    with pytest.raises(ValueError, match="onnxruntime"):
        check_backend("torch", "int8")
    with pytest.raises(ValueError, match="int8"):
        inference_network(create_model("tiny"), "onnxruntime", quantize="int4")
