"""``facenet eval`` end to end on a tiny LFW-shaped folder; report, sweeps, identification."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facenet.cli import main
from facenet.data.lfw import read_pairs
from facenet.eval.protocol import evaluate_pairs
from facenet.eval.report import write_report
from facenet.eval.robustness import PAPER_JPEG, run_sweep


def test_eval_command_writes_json_and_report(mini_lfw, tiny_model, tmp_path, capsys):
    from facenet.models.loading import save_weights

    root, pairs = mini_lfw
    weights = save_weights(tiny_model, tmp_path / "tiny.safetensors")
    out_json, out_dir = tmp_path / "r.json", tmp_path / "report"
    argv = ["eval", "--model", str(weights), "--data", str(root), "--pairs", str(pairs)]
    argv += ["--cache", str(tmp_path / "cache"), "--json", str(out_json)]
    argv += ["--report", str(out_dir), "--quiet", "--identification", "--sweep", "size"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "Robustness, face size" in out and "rank-1" in out
    data = json.loads(out_json.read_text())
    v = data["verification"]
    for key in ("accuracy", "accuracy_std", "val", "far", "auc", "eer", "thresholds"):
        assert key in v
    assert v["n_pairs"] == 12 and v["n_folds"] == 2 and len(v["fold_accuracies"]) == 2
    assert data["meta"]["person_disjoint_folds"] is True
    assert [r["value"] for r in data["sweeps"]["size"]["rows"]] == [40, 80, 120, 160, 256]
    ident = data["identification"]
    assert ident["n_gallery_identities"] == 8 and ident["n_probes"] == 16
    for name in ("index.html", "report.json", "report.md", "roc.png", "distances.png"):
        assert (out_dir / name).stat().st_size > 0
    html = (out_dir / "index.html").read_text()
    assert "data:image/png;base64," in html and "99.63" in html and "98.87" in html

    # same result straight from the library, from the cache
    model_json = json.loads(out_json.read_text())["verification"]
    ev = evaluate_pairs(tiny_model, read_pairs(pairs), root, cache_dir=tmp_path / "cache")
    assert ev.stats.n_computed == 0
    assert ev.report.accuracy == pytest.approx(model_json["accuracy"])


def test_eval_command_errors_name_the_problem(mini_lfw, tmp_path, capsys):
    root, _ = mini_lfw
    bad = tmp_path / "bad_pairs.txt"
    bad.write_text("1\t1\nPerson_A\t1\nPerson_A\t1\tPerson_B\t1\n")
    argv = ["eval", "--model", "tiny", "--data", str(root), "--pairs", str(bad), "--no-cache"]
    assert main(argv) == 1
    assert f"{bad}:2:" in capsys.readouterr().err
    missing = tmp_path / "missing_pairs.txt"
    missing.write_text(
        "2\t1\nPerson_A\t1\t9\nPerson_A\t1\tPerson_B\t1\nPerson_C\t1\t2\nPerson_C\t1\tPerson_D\t1\n"
    )
    argv = ["eval", "--model", "tiny", "--data", str(root), "--pairs", str(missing), "--no-cache"]
    assert main(argv) == 1
    assert "Person_A_0009" in capsys.readouterr().err
    argv = ["eval", "--model", "no_such_model", "--data", str(root), "--pairs", str(bad)]
    assert main(argv) != 0


def test_sweep_and_report_library(mini_lfw, tiny_model, tmp_path):
    root, pairs_file = mini_lfw
    pairs = read_pairs(pairs_file)
    base = evaluate_pairs(tiny_model, pairs, root)
    sweep = run_sweep(tiny_model, pairs, root, "jpeg", values=[10, 90], baseline=base.report)
    assert sweep.values == [10, 90] and len(sweep.reports) == 2
    md = sweep.markdown()
    assert f"{PAPER_JPEG[10]:.1f}%" in md and "undegraded" in md
    with pytest.raises(ValueError, match="sweep must be"):
        run_sweep(tiny_model, pairs, root, "blur")  # type: ignore[arg-type]
    files = write_report(
        tmp_path / "rep",
        base.report,
        base.distances,
        base.issame,
        {"model": "tiny"},
        sections={"Robustness": md},
    )
    from PIL import Image

    assert Image.open(files["roc"]).size[0] > 500
    assert "Robustness" in files["markdown"].read_text()
    assert np.isfinite(json.loads(files["json"].read_text())["verification"]["auc"])


def test_align_modes_use_the_aligned_folder_or_align_on_the_fly(mini_lfw, tmp_path, capsys):
    import shutil

    root, pairs = mini_lfw
    aligned = tmp_path / "aligned"
    shutil.copytree(root, aligned)
    (aligned / "align_config.json").write_text('{"mode": "similarity", "size": 160}')
    base = ["eval", "--model", "tiny", "--pairs", str(pairs), "--no-cache", "--quiet"]
    assert main([*base, "--data", str(aligned), "--align", "box"]) == 2
    assert "aligned with mode 'similarity'" in capsys.readouterr().err
    out_json = tmp_path / "sim.json"
    assert (
        main([*base, "--data", str(aligned), "--align", "similarity", "--json", str(out_json)]) == 0
    )
    meta = json.loads(out_json.read_text())["meta"]
    assert meta["aligned_folder_config"]["mode"] == "similarity"
    # a folder without align_config.json is aligned on the fly (mtcnn; synthetic faces fall
    # back to the detector pipeline's flagged centre crop)
    assert main([*base, "--data", str(root), "--align", "box"]) == 0
    assert "aligning on the fly with detector mtcnn" in capsys.readouterr().err


def test_align_defaults_to_the_mode_the_folder_was_aligned_with(
    mini_lfw, tiny_model, tmp_path, capsys
):
    import shutil

    from facenet.models.loading import save_weights

    root, pairs = mini_lfw
    aligned = tmp_path / "aligned"
    shutil.copytree(root, aligned)
    (aligned / "align_config.json").write_text('{"mode": "box", "size": 160}')
    weights = str(save_weights(tiny_model, tmp_path / "tiny.safetensors"))
    base = ["eval", "--model", weights, "--pairs", str(pairs), "--no-cache", "--quiet"]
    out_json = tmp_path / "default.json"
    assert main([*base, "--data", str(aligned), "--json", str(out_json)]) == 0
    assert "(mode box): --align box" in capsys.readouterr().err
    meta = json.loads(out_json.read_text())["meta"]
    assert meta["align"] == "box" and meta["aligned_folder_config"]["mode"] == "box"
    # same embeddings as asking for it
    explicit = tmp_path / "explicit.json"
    assert main([*base, "--data", str(aligned), "--align", "box", "--json", str(explicit)]) == 0
    acc = [json.loads(f.read_text())["verification"]["accuracy"] for f in (out_json, explicit)]
    assert acc[0] == acc[1]
    # a plain photo folder (no align_config.json) keeps the centre crop
    plain = tmp_path / "plain.json"
    assert main([*base, "--data", str(root), "--json", str(plain)]) == 0
    assert json.loads(plain.read_text())["meta"]["align"] == "center"


def test_a_library_call_reads_the_folder_config_as_facenet_eval_does(
    mini_lfw, tiny_model, tmp_path
):
    """``evaluate_pairs`` without ``align`` crops an aligned folder as it was aligned (the same
    distances as asking for it) and a plain folder by centre crops."""
    import shutil

    root, pairs_path = mini_lfw
    pairs = read_pairs(pairs_path)
    aligned = tmp_path / "aligned"
    shutil.copytree(root, aligned)
    (aligned / "align_config.json").write_text('{"mode": "box", "size": 160}')
    default = evaluate_pairs(tiny_model, pairs, aligned).distances
    np.testing.assert_array_equal(
        default, evaluate_pairs(tiny_model, pairs, aligned, align="box").distances
    )
    assert not np.allclose(
        default, evaluate_pairs(tiny_model, pairs, aligned, align="center").distances
    )
    np.testing.assert_array_equal(
        evaluate_pairs(tiny_model, pairs, root).distances,
        evaluate_pairs(tiny_model, pairs, root, align="center").distances,
    )


def test_the_embedding_cache_lives_in_facenets_cache_folder(monkeypatch, tmp_path):
    from facenet.eval.suite import EvalSettings

    monkeypatch.setenv("FACENET_CACHE", str(tmp_path / "fc"))
    assert EvalSettings("m", "d", "p").cache_dir == tmp_path / "fc" / "embeddings"
    assert EvalSettings("m", "d", "p", cache_dir=None).cache_dir is None
