"""``facenet eval --quantize int8`` (the pairs scored again with 128-byte embeddings) and
``--gallery-model`` (pairs across two models), each against an independent computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facenet.cli import main
from facenet.data.lfw import read_pairs
from facenet.eval.protocol import embed_pairs, verify_embeddings
from facenet.models import create_model
from facenet.models.card import card_of
from facenet.models.loading import load_weights_file, save_weights
from facenet.quantize import Int8Codec


def _lfw_like(root, people=6):
    """``people`` identity folders of 4 images; a pairs file (2 folds) naming the first 4."""
    rng = np.random.default_rng(0)
    names = [f"Person_{c}" for c in "ABCDEFGH"[:people]]
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        base = rng.integers(0, 255, 3)
        for i in range(1, 5):
            img = np.clip(base + rng.normal(0, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
            img[12:36, 12 + k : 20 + k] = 255 - base
            Image.fromarray(img).save(root / name / f"{name}_{i:04d}.png")
    lines = ["2\t3"]
    for a, b in (names[0:2], names[2:4]):
        lines += [f"{a}\t1\t2", f"{a}\t3\t4", f"{b}\t1\t3"]
        lines += [f"{a}\t1\t{b}\t2", f"{a}\t2\t{b}\t4", f"{a}\t4\t{b}\t1"]
    pairs = root.parent / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return root, pairs


@pytest.fixture
def setup(tmp_path):
    root, pairs = _lfw_like(tmp_path / "lfw")
    torch.manual_seed(0)
    model = create_model("tiny", input_size=32, width=8).eval()
    return root, pairs, model, tmp_path


def _run(tmp_path, weights, root, pairs, capsys) -> dict:
    out = tmp_path / "r.json"
    argv = ["eval", "--model", weights, "--data", root, "--pairs", pairs, "--align", "center"]
    argv += ["--no-cache", "--quiet", "--quantize", "int8", "--json", out]
    code = main([str(a) for a in argv])
    text = capsys.readouterr().out
    assert code == 0
    assert "128-byte embeddings (int8)" in text and "| int8 | 128 |" in text
    return json.loads(out.read_text())


def _expected(weights, root, pairs, codec: Int8Codec) -> dict:
    model = load_weights_file(weights)
    p = read_pairs(pairs)
    left, right = embed_pairs(model, p, root, align="center")
    _, float_report = verify_embeddings(left, right, p.issame, p.folds)
    _, report = verify_embeddings(codec.roundtrip(left), codec.roundtrip(right), p.issame, p.folds)
    return {"float": float_report, "int8": report}


def test_eval_scores_int8_with_the_models_own_codec(setup, capsys):
    root, pairs, model, tmp = setup
    # a deliberately coarse codec (scale 0.05 per step): int8 must then differ from float
    card_of(model).int8 = Int8Codec(np.full(128, 0.05, np.float32)).to_dict()
    weights = save_weights(model, tmp / "tiny.safetensors")
    result = _run(tmp, weights, root, pairs, capsys)
    expected = _expected(weights, root, pairs, Int8Codec(np.full(128, 0.05, np.float32)))
    int8 = result["int8"]
    assert int8["bytes_per_face"] == 128 and int8["float32_bytes_per_face"] == 512
    assert "model's own" in int8["codec"]
    assert result["verification"]["auc"] == pytest.approx(expected["float"].auc)
    assert int8["verification"]["auc"] == pytest.approx(expected["int8"].auc)
    assert int8["verification"]["accuracy"] == pytest.approx(expected["int8"].accuracy)
    assert "--quantize int8" in result["meta"]["command"]


def test_eval_without_a_codec_calibrates_on_people_outside_the_pairs(setup, capsys):
    root, pairs, model, tmp = setup
    weights = save_weights(model, tmp / "tiny.safetensors")
    result = _run(tmp, weights, root, pairs, capsys)
    assert "calibrated on 8 images" in result["int8"]["codec"]  # Person_E and Person_F, 4 each
    # the oracle: the same calibration, computed here from those 8 images
    from facenet.eval.embedding import embed_paths

    others = sorted(p for d in ("Person_E", "Person_F") for p in (root / d).iterdir())
    codec = Int8Codec.calibrate(embed_paths(load_weights_file(weights), others, align="center"))
    expected = _expected(weights, root, pairs, codec)
    assert result["int8"]["verification"]["auc"] == pytest.approx(expected["int8"].auc)


def test_a_weights_file_with_an_unreadable_codec_is_named(setup, capsys):
    root, pairs, model, tmp = setup
    card_of(model).int8 = {"kind": "int8", "scale": [0.0] * 128}  # scales must be positive
    weights = save_weights(model, tmp / "bad.safetensors")
    code = main(["eval", "--model", str(weights), "--data", str(root), "--pairs", str(pairs)])
    err = capsys.readouterr().err
    assert code != 0 and "bad.safetensors" in err and "int8" in err and "Traceback" not in err


# ---------------------------------------------------------------- two models (harmonic)
def _mixed(gallery, probe, root, pairs):
    """The oracle: each pair's left image embedded by ``gallery``, its right one by ``probe``."""
    p = read_pairs(pairs)
    g_left, _ = embed_pairs(load_weights_file(gallery), p, root, align="center")
    _, p_right = embed_pairs(load_weights_file(probe), p, root, align="center")
    return verify_embeddings(g_left, p_right, p.issame, p.folds)[1]


@pytest.fixture
def old_and_new(setup):
    """(v1, v2) weights files of two different tiny models of the same dimension."""
    _, _, model, tmp = setup
    torch.manual_seed(1)
    old = save_weights(create_model("tiny", input_size=32, width=8), tmp / "g.safetensors")
    return old, save_weights(model, tmp / "probe.safetensors")


def test_gallery_model_scores_left_images_with_it_and_right_ones_with_the_probe(
    setup, old_and_new, capsys
):
    root, pairs, _, tmp = setup
    gallery, probe = old_and_new
    out = tmp / "mixed.json"
    argv = ["eval", "--model", probe, "--gallery-model", gallery, "--data", root]
    argv += ["--pairs", pairs, "--align", "center", "--no-cache", "--quiet", "--json", out]
    assert main([str(a) for a in argv]) == 0
    assert "g.safetensors -> " in capsys.readouterr().out
    result = json.loads(out.read_text())
    expected = _mixed(gallery, probe, root, pairs)
    assert result["verification"]["auc"] == pytest.approx(expected.auc)
    assert result["meta"]["gallery_model"] == str(gallery)
    assert f"--gallery-model {gallery}" in result["meta"]["command"]
    # one model on both sides is another figure
    assert expected.auc != pytest.approx(_mixed(probe, probe, root, pairs).auc)
    # what it does not combine with, and models of two dimensions, are one line each
    assert main([str(a) for a in [*argv, "--identification"]]) == 2
    assert "--identification" in capsys.readouterr().err
    torch.manual_seed(1)
    wide = create_model("tiny", input_size=32, width=8, embedding_dim=64)
    argv[argv.index(gallery)] = save_weights(wide, tmp / "wide.safetensors")
    assert main([str(a) for a in argv]) == 2
    assert "64 dimensions" in capsys.readouterr().err


def test_gallery_model_refusals_come_before_any_embedding(setup, old_and_new, capsys, monkeypatch):
    """Found by the audit: a dimension clash was said after the gallery side was embedded,
    --quantize-network quantised only the probe while the report said int8, and an empty
    --gallery-model was silently ignored."""
    from facenet.eval import protocol

    root, pairs, _, tmp = setup
    gallery, probe = old_and_new

    def never(*args, **kwargs):
        raise AssertionError("embedded before refusing")

    monkeypatch.setattr(protocol, "embed_pairs", never)
    base = ["eval", "--model", probe, "--data", root, "--pairs", pairs, "--no-cache", "--quiet"]
    torch.manual_seed(1)
    wide = save_weights(
        create_model("tiny", input_size=32, width=8, embedding_dim=64), tmp / "wide.safetensors"
    )
    assert main([str(a) for a in [*base, "--gallery-model", wide]]) == 2
    assert "64 dimensions" in capsys.readouterr().err
    both = [*base, "--gallery-model", gallery, "--backend", "onnxruntime"]
    assert main([str(a) for a in [*both, "--quantize-network", "int8"]]) == 2
    assert "--quantize-network" in capsys.readouterr().err
    assert main([str(a) for a in [*base, "--gallery-model", ""]]) == 2
    assert "--gallery-model" in capsys.readouterr().err


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_harmonic_table_scores_three_pairings_and_draws_them_in_one_figure(setup, old_and_new):
    root, pairs, _, tmp = setup
    v1, v2 = old_and_new
    out = tmp / "table"
    argv = ["--v1", v1, "--v2", v2, "--data", root, "--pairs", pairs, "--out", out]
    assert _script("harmonic_table").main([str(a) for a in argv]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["v1 / v1", "v2 / v2", "v1 gallery / v2 probe"]
    for name, (g, p) in {"v1 / v1": (v1, v1), "v1 gallery / v2 probe": (v1, v2)}.items():
        assert results[name]["auc"] == pytest.approx(_mixed(g, p, root, pairs).auc)
    assert (out / "roc.png").stat().st_size > 10_000
    assert (out / "table.md").read_text().count("\n") == 5  # head, rule, three rows


def test_celeba_pairs_are_person_disjoint_folds_of_the_asked_size():
    from collections import Counter

    make = _script("held_out_pairs").person_disjoint_pairs
    counts = {f"{k:05d}": 3 + k % 5 for k in range(23)}
    folds = make(counts, folds=5, per_fold=6, seed=0)
    seen: dict[str, int] = {}
    for f, fold in enumerate(folds):
        same = [x for x in fold if len(x) == 3]
        diff = [x for x in fold if len(x) == 4]
        assert len(same) == len(diff) == 6 and len(set(fold)) == 12
        for x in same:
            assert 1 <= x[1] < x[2] <= counts[x[0]]
        for x in diff:
            assert x[0] != x[2] and x[1] <= counts[x[0]] and x[3] <= counts[x[2]]
        for name in {x[0] for x in fold} | {x[2] for x in diff}:
            assert seen.setdefault(name, f) == f  # every person in one fold only
    assert len(Counter(seen.values())) == 5
    assert make(counts, 5, 6, seed=0) == folds and make(counts, 5, 6, seed=1) != folds


def test_a_small_held_out_group_gets_fewer_folds_not_an_error(tmp_path, capsys):
    from facenet.data.lfw import read_pairs

    aligned = tmp_path / "aligned"
    photos = {"ann": 3, "bob": 2, "cy": 4, "dee": 2, "eve": 1}
    for person, n in photos.items():
        (aligned / person).mkdir(parents=True)
        for k in range(n):
            (aligned / person / f"{k:06d}.png").write_bytes(b"")
    people = tmp_path / "people.txt"
    people.write_text(f"{len(photos)}\n" + "".join(f"{p}\t{n}\n" for p, n in photos.items()))
    _script("held_out_pairs").main([str(aligned), str(people), str(tmp_path / "out")])
    pairs = read_pairs(tmp_path / "out" / "pairs.txt")
    # 5 people: 2 folds (2 people at least in each), one pair count for both, half same
    assert ": 5 people, 2 folds x " in capsys.readouterr().out
    assert len(pairs) >= 4 and pairs.issame.sum() * 2 == len(pairs)
    assert np.bincount(pairs.folds).tolist() == [len(pairs) // 2] * 2
    with pytest.raises(SystemExit, match="at least 4"):
        _script("held_out_pairs").main(
            [str(aligned), str(people), str(tmp_path / "o2"), "--folds", "1"]
        )
