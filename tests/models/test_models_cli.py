"""``facenet models`` and ``facenet export`` through the real CLI."""

import json

import numpy as np
import onnxruntime as ort
import torch

from facenet.cli import main
from facenet.models import create_model
from facenet.models.card import card_of
from facenet.models.flops import model_cost
from facenet.models.loading import save_weights


def test_models_table_has_counts_and_paper_figures(capsys):
    assert main(["models", "nns2", "tiny"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| nns2")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    # model, input, dim, params, paper params, delta, flops, paper flops, delta, buffers
    assert cells[:3] == ["nns2", "140x116", "128"]
    assert cells[3] == "4.33M" and cells[4] == "4.3M" and cells[7] == "20M"
    assert "| tiny | 32x32 |" in out


def test_models_json_one_object_per_model(tmp_path, capsys):
    path = tmp_path / "models.json"
    assert main(["models", "nn4", "tiny", "--norm", "batchnorm", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert [r["name"] for r in rows] == ["nn4", "tiny"]
    for key in ("name", "input_size", "embedding_dim", "params", "flops"):
        assert key in rows[0]
    expected = model_cost(create_model("nn4", norm="batchnorm"))
    assert rows[0]["params"] == expected.params and rows[0]["flops"] == expected.flops
    assert rows[0]["norm"] == "batchnorm" and rows[0]["buffers"] > 0
    assert rows[0]["input_size"] == [96, 96] and rows[0]["paper_flops"] == 285e6
    assert main(["models", "tiny", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after the "wrote" line
    assert printed[0]["name"] == "tiny"


def test_models_unknown_name_fails_listing_the_valid_ones(capsys):
    assert main(["models", "nn9"]) == 2
    assert "nn4" in capsys.readouterr().err


def test_export_a_weights_file_to_onnx_runs_in_onnxruntime(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("tiny", embedding_dim=32).eval()
    weights = save_weights(model, tmp_path / "w.safetensors")
    out = tmp_path / "sub" / "tiny.onnx"
    assert main(["export", str(weights), str(out)]) == 0  # format from the suffix
    assert "max |diff|" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)


def test_export_torchscript_by_name(tmp_path):
    out = tmp_path / "tiny.bin"
    assert main(["export", "tiny", "--format", "torchscript", str(out)]) == 0
    module = torch.jit.load(str(out))
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 128)


def test_export_errors_are_clear(tmp_path, capsys):
    assert main(["export", "no_such_model", str(tmp_path / "x.onnx")]) == 2
    assert "available" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.safetensors"), str(tmp_path / "x.onnx")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    assert main(["export", "tiny", str(tmp_path / "x.bin")]) == 2
    assert "--format" in capsys.readouterr().err


def test_export_a_checkpoint_as_half_safetensors_keeps_its_training_record(tmp_path, capsys):
    from facenet.models.loading import load_model, read_metadata
    from facenet.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("tiny", embedding_dim=32).eval()
    card_of(model).set_thresholds({"accuracy": 1.1})
    ckpt = save_checkpoint(
        tmp_path / "best.pt",
        model,
        config={"max_steps": 7},
        step=7,
        metrics={"accuracy": 0.9},
        best={"accuracy": 0.91},
    )
    out = tmp_path / "w.safetensors"
    terms = "LFW, CelebA: research use only"
    assert main(["export", str(ckpt), str(out), "--half", "--data-terms", terms]) == 0
    assert "max |diff|" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["data_terms"] == terms
    assert meta["training"] == {
        "config": {"max_steps": 7},
        "step": 7,
        "metrics": {"accuracy": 0.9},
        "best": {"accuracy": 0.91},
    }
    assert meta["thresholds"] == {"accuracy": 1.1}
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        names = [k for k in f.keys() if "num_batches" not in k]  # noqa: SIM118 (not a dict)
        assert {f.get_tensor(k).dtype for k in names} == {torch.float16}
    # fp16 halves the file; the rebuilt model is fp32 and embeds within fp16 rounding
    full = save_weights(model, tmp_path / "full.safetensors")
    assert out.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(str(out))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        got, ref = loaded(x), model(x)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() < 1e-2


def test_half_needs_the_safetensors_format(tmp_path, capsys):
    assert main(["export", "tiny", str(tmp_path / "x.onnx"), "--half"]) == 2
    assert "safetensors" in capsys.readouterr().err
