"""``python -m facenet.apps.quality`` on ORL (identity folders of tight crops)."""

from __future__ import annotations

import json

from facenet.apps.quality import main


def test_quality_script_on_orl(orl_dir, trained_tiny, tmp_path, capsys):
    out = tmp_path / "q.json"
    argv = [str(orl_dir), "--model", str(trained_tiny), "--cache", str(tmp_path / "cache")]
    assert main([*argv, "--max-people", "12", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["faces"] == 120 and result["people"] == 12
    ident = result["identification"]
    assert ident["gallery_people"] == 12 and ident["probes"] == 108
    assert 0.0 <= ident["rank1"] <= 1.0
    for method in ("agglomerative", "hdbscan", "chinese-whispers"):
        assert 0.0 <= result["clustering"][method]["bcubed_f"] <= 1.0
    capsys.readouterr()
    # second run reads the embedding cache
    assert main([*argv, "--max-people", "12"]) == 0
    assert "embedding" not in capsys.readouterr().err
