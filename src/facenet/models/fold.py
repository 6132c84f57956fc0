"""Inference-ready copies of embedding networks: batch norm folded into the layer before it.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma
+ beta``, so a convolution (or linear layer) followed by one is the same function as a single
convolution with rescaled weights and a bias. TensorFlow's frozen graphs ship folded; folding
ours removes 112 elementwise passes over the activations of Inception-ResNet-v1 (the bias
rides inside the convolution's own kernel).

>>> net = inference_copy(model)            # the model itself is untouched (training keeps BN)
>>> torch.allclose(net(x), model.eval()(x), atol=1e-5)
True

Which layers feed which batch norm is read from the network's traced graph (``torch.fx``), not
from module names, so every family folds the same way: a ``Conv2d`` (or ``Linear``) whose only
consumer is a ``BatchNorm2d`` (or ``BatchNorm1d``) is replaced by its folded version and the
batch norm by ``nn.Identity``. A network that cannot be traced falls back to the pairs that sit
next to each other inside an ``nn.Sequential``. The copy keeps the original module tree (names,
``spec``, ``card``), so everything that reads the model reads the copy the same way; its
``state_dict`` differs (folded weights), so fingerprints are taken from the original.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

_FOLDABLE: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Linear, nn.BatchNorm1d),
)


@dataclass(frozen=True)
class FoldReport:
    """What ``fold_batch_norm`` did."""

    folded: tuple[tuple[str, str], ...]  # (layer, batch norm) qualified names, in graph order
    remaining: tuple[str, ...]  # batch norms left in place (no single producing layer)
    traced: bool  # True: pairs read from the traced graph; False: the Sequential fallback


class _LeafTracer(fx.Tracer):
    """Keeps every layer we may fold (and subclasses such as ``BatchNormShift``) as one node."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            return True
        return super().is_leaf_module(m, qualname)


def _pairs_from_graph(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, batch norm) names where the batch norm's input is the layer's only output use."""
    graph = _LeafTracer().trace(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        layer, bn = modules[src.target], modules[node.target]
        if _kind(layer, bn):
            pairs.append((src.target, node.target))
    return pairs


def _pairs_from_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, batch norm) names of neighbours inside an ``nn.Sequential``."""
    pairs = []
    for prefix, m in model.named_modules():
        if not isinstance(m, nn.Sequential):
            continue
        names = list(m._modules)
        for a, b in zip(names, names[1:], strict=False):
            if _kind(m._modules[a], m._modules[b]):
                pairs.append((f"{prefix}.{a}".lstrip("."), f"{prefix}.{b}".lstrip(".")))
    return pairs


def _kind(layer: nn.Module | None, bn: nn.Module | None) -> bool:
    """Whether ``layer`` then ``bn`` is a foldable pair (tracked statistics, matching widths)."""
    for layer_type, bn_type in _FOLDABLE:
        if isinstance(layer, layer_type) and isinstance(bn, bn_type):
            if bn.running_mean is None or bn.running_var is None:
                return False  # batch statistics at inference too: not an affine map
            width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
            return width == bn.num_features
    return False


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def fold_batch_norm(model: nn.Module) -> FoldReport:
    """Fold every foldable batch norm of an eval-mode ``model`` into the layer before it, in place.

    Raises:
        ValueError: the model is in training mode (its batch norms normalise with batch
            statistics, which no folded weight can reproduce).
    """
    if model.training:
        raise ValueError("fold_batch_norm needs an eval-mode model (call .eval() first)")
    try:
        pairs, traced = _pairs_from_graph(model), True
    except Exception:  # noqa: BLE001 - any untraceable forward takes the structural fallback
        pairs, traced = _pairs_from_sequentials(model), False
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        if bn.weight is None:  # why: BatchNormShift has no learned scale; the fusers want one
            bn = copy.copy(bn)
            bn.weight = nn.Parameter(torch.ones_like(bn.running_mean), requires_grad=False)
        fuse = fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval
        _set(model, layer_name, fuse(layer, bn))
        _set(model, bn_name, nn.Identity())
    folded = {b for _, b in pairs}
    remaining = tuple(
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and n not in folded
    )
    return FoldReport(tuple(pairs), remaining, traced)


def inference_copy(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` for inference only: batch norm folded, no gradients, weights
    optionally in channels-last layout (oneDNN's preferred layout for convolutions on CPU).

    The copy computes the same embeddings as ``model.eval()`` to float rounding (about 1e-6 on
    unit vectors); ``model`` itself is not changed. Feed it channels-last inputs when
    ``channels_last`` (``facenet.models.inference.embed_faces`` does).
    """
    net = copy.deepcopy(model).eval()
    fold_batch_norm(net)
    net.requires_grad_(False)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.folded_from = type(model).__name__  # why: marks a copy that must never be trained or saved
    return net
