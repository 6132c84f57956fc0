"""The ONNX Runtime backend (``facenet.models.onnx_runtime``): parity with PyTorch (<= 1e-4), the
on-disk cache keyed by the weights, int8, the embedders and commands, and the error without it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from facenet.apps.embedder import Embedder
from facenet.apps.embedding_table import load_embeddings
from facenet.cli import main
from facenet.eval.embedding import TorchEmbedder
from facenet.fingerprint import weights_sha256
from facenet.models import create_model
from facenet.models import onnx_runtime as ort_backend
from facenet.models.inference import embed_faces, inference_network
from facenet.models.loading import save_weights

pytest.importorskip(
    "onnxruntime", reason="ONNX Runtime not installed (the 'export' extra; CI installs 'dev')"
)
pytest.importorskip("onnxscript", reason="onnxscript not installed (the 'export' extra)")

PARITY = 1e-4  # why: the bound for the backend's embeddings vs PyTorch's


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACENET_CACHE", str(tmp_path / "cache"))


def _model(name: str = "resnet_cpu", **kwargs):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model(name, **kwargs).eval()
        for m in model.modules():  # non-trivial batch norms (see test_fold)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _crops(model, n=5, seed=0) -> np.ndarray:
    h, w = model.spec.input_size
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "name",
    ["tiny", "resnet_cpu", pytest.param("inception_resnet_v1", marks=pytest.mark.slow)],
)
def test_onnxruntime_embeds_like_pytorch(name):
    model = _model(name)
    crops = _crops(model)
    net = inference_network(model, "onnxruntime")
    assert isinstance(net, ort_backend.OnnxRuntimeNet) and net.spec == model.spec
    for batch in (1, 5):  # a batch size unlike the export example: the batch stays dynamic
        ref = embed_faces(model, crops, framed=True, batch_size=batch)
        got = embed_faces(net, crops, framed=True, batch_size=batch)
        assert float((got - ref).abs().max()) <= PARITY


def test_the_export_is_cached_by_weights_hash(monkeypatch, tmp_path):
    model = _model()
    first = ort_backend.onnx_network(model)
    assert first.path.parent == tmp_path / "cache" / "onnx"
    assert weights_sha256(model)[:16] in first.path.name
    monkeypatch.setattr(ort_backend, "export_model", lambda *a, **k: pytest.fail("re-exported"))
    assert ort_backend.onnx_network(model).path == first.path
    # other weights, another file
    with torch.no_grad():
        model.stem[0].weight.mul_(1.5)
    monkeypatch.undo()
    monkeypatch.setenv("FACENET_CACHE", str(tmp_path / "cache"))
    assert ort_backend.onnx_network(model).path != first.path
    assert not list((tmp_path / "cache" / "onnx").glob(".*"))  # no temporary files left


def test_a_damaged_cache_file_is_rebuilt():
    model = _model("tiny")
    path = ort_backend.onnx_network(model).path
    path.write_bytes(b"not an onnx file")
    net = ort_backend.onnx_network(model)
    crops = _crops(model)
    diff = embed_faces(net, crops, framed=True) - embed_faces(model, crops, framed=True)
    assert float(diff.abs().max()) <= PARITY


def test_int8_is_close_cached_per_calibration_and_needs_crops():
    model = _model()
    crops = _crops(model, 8)
    calibration = list(_crops(model, 16, seed=1))
    net = inference_network(model, "onnxruntime", quantize="int8", calibration=calibration)
    ref = embed_faces(model, crops, framed=True)
    got = embed_faces(net, crops, framed=True)
    cosine = (got * ref).sum(1)
    assert got.shape == ref.shape and float(cosine.min()) > 0.95  # int8: close, not equal
    other = ort_backend.onnx_network(model, "int8", list(_crops(model, 16, seed=2)))
    assert "int8" in net.path.name and other.path != net.path
    with pytest.raises(ValueError, match="calibration"):
        ort_backend.onnx_network(model, "int8", [])


def test_the_embedders_take_the_backend():
    model = _model()
    crops = list(_crops(model))
    ref = embed_faces(model, crops, framed=True).numpy()
    app = Embedder(model, detector=None, crop="none", backend="onnxruntime")
    evaluator = TorchEmbedder(model, align="box", backend="onnxruntime")
    for embedder in (app, evaluator):
        assert isinstance(embedder.network, ort_backend.OnnxRuntimeNet)
        assert np.abs(embedder.embed_crops(crops) - ref).max() <= PARITY
    both = evaluator.embed_with_flips(crops, "mean")
    assert both.shape == ref.shape


def test_a_missing_onnxruntime_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"onnxruntime backend needs ONNX Runtime.*\[export\]"):
        Embedder(_model("tiny"), detector=None, crop="none", backend="onnxruntime")


def _faces(folder, n=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_embed_command_with_the_onnxruntime_backend(tmp_path, capsys):
    weights = save_weights(_model("tiny"), tmp_path / "tiny.safetensors")
    photos = _faces(tmp_path / "photos")
    base = ["embed", str(photos), "--model", str(weights), "--crop", "none"]
    assert main([*base, "--out", str(tmp_path / "torch.npz")]) == 0
    assert main([*base, "--out", str(tmp_path / "ort.npz"), "--backend", "onnxruntime"]) == 0
    a, b = (load_embeddings(tmp_path / f"{k}.npz").embeddings for k in ("torch", "ort"))
    assert a.shape == (3, 128) and np.abs(a - b).max() <= PARITY
    capsys.readouterr()


def test_embed_command_without_onnxruntime_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    weights = save_weights(_model("tiny"), tmp_path / "tiny.safetensors")
    photos = _faces(tmp_path / "photos")
    argv = ["embed", str(photos), "--model", str(weights), "--crop", "none"]
    code = main([*argv, "--out", str(tmp_path / "e.npz"), "--backend", "onnxruntime"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "pip install" in err


def _lfw_like(root, people=6, named=4):
    """``people`` identity folders of 3 images; a pairs file naming the first ``named`` only."""
    rng = np.random.default_rng(0)
    names = [f"Person_{c}" for c in "ABCDEFGH"[:people]]
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        base = rng.integers(0, 255, 3)
        for i in range(1, 4):
            img = np.clip(base + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
            img[20:44, 20 + k : 30 + k] = 255 - base
            Image.fromarray(img).save(root / name / f"{name}_{i:04d}.png")
    a, b, c, d = names[:named]
    lines = ["2\t2", f"{a}\t1\t2", f"{b}\t1\t3", f"{a}\t3\t{b}\t1", f"{a}\t2\t{b}\t2"]
    lines += [f"{c}\t2\t3", f"{d}\t1\t2", f"{c}\t1\t{d}\t2", f"{c}\t3\t{d}\t3"]
    pairs = root.parent / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return root, pairs


def test_eval_command_backends_and_int8(tmp_path, capsys):
    import json

    root, pairs = _lfw_like(tmp_path / "lfw")
    weights = save_weights(_model("tiny"), tmp_path / "tiny.safetensors")
    base = ["eval", "--model", str(weights), "--data", str(root), "--pairs", str(pairs)]
    base += ["--no-cache", "--quiet"]
    results = {}
    for name, extra in {
        "torch": [],
        "onnxruntime": ["--backend", "onnxruntime"],
        "int8": ["--backend", "onnxruntime", "--quantize-network", "int8"],
    }.items():
        out = tmp_path / f"{name}.json"
        assert main([*base, *extra, "--json", str(out)]) == 0
        results[name] = json.loads(out.read_text())
    assert results["onnxruntime"]["verification"]["accuracy"] == pytest.approx(
        results["torch"]["verification"]["accuracy"]
    )
    meta = results["int8"]["meta"]
    assert meta["backend"] == "onnxruntime" and meta["quantize_network"] == "int8"
    assert "--backend onnxruntime --quantize-network int8" in meta["command"]
    capsys.readouterr()
    assert main([*base, "--quantize-network", "int8"]) == 2  # int8 runs in ONNX Runtime only
    assert "onnxruntime" in capsys.readouterr().err


def test_int8_calibration_never_uses_the_evaluated_people(tmp_path):
    from facenet.data.lfw import read_pairs
    from facenet.eval.int8 import calibration_images

    root, pairs = _lfw_like(tmp_path / "lfw")
    picked = calibration_images(root, read_pairs(pairs))
    assert picked and {p.parent.name for p in picked} == {"Person_E", "Person_F"}
    root2, pairs2 = _lfw_like(tmp_path / "all_named", people=4)
    with pytest.raises(FileNotFoundError, match="outside"):
        calibration_images(root2, read_pairs(pairs2))
