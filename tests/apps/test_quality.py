"""``scripts/quality.py``: identification and clustering summaries on embeddings whose right
answers are known by construction, checked against brute-force references; and the whole script
on ORL (identity folders of tight crops)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "quality.py"
METHODS = ("agglomerative", "hdbscan", "chinese-whispers")


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def people(sizes: dict[str, int], dim: int = 16, noise: float = 0.01, seed: int = 0):
    """(paths, labels, (N, D) unit embeddings): person i's faces near basis vector e_i, so two
    people are at squared distance ~2 and one person's faces at ~0."""
    rng = np.random.default_rng(seed)
    paths, labels, rows = [], [], []
    for i, (name, n) in enumerate(sizes.items()):
        for k in range(1, n + 1):
            paths.append(f"/faces/{name}/{name}_{k:04d}.png")
            labels.append(name)
            v = np.eye(dim)[i] + noise * rng.normal(size=dim)
            rows.append(v / np.linalg.norm(v))
    return paths, np.array(labels), np.array(rows, np.float32)


def brute_rank1(paths: list[str], labels: np.ndarray, emb: np.ndarray) -> float:
    """Share of known probes whose nearest enrolled face (each person's first photo by path,
    people with 2+ photos) is their own: one probe at a time, every enrolled face compared."""
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for i in sorted(range(len(paths)), key=lambda i: paths[i]):
        first.setdefault(labels[i], i)
        count[labels[i]] = count.get(labels[i], 0) + 1
    enrolled = [first[name] for name in first if count[name] >= 2]
    right = total = 0
    for i in range(len(paths)):
        if count[labels[i]] < 2 or i in enrolled:
            continue
        dist = [float(((emb[i] - emb[g]) ** 2).sum()) for g in enrolled]
        total += 1
        right += labels[enrolled[int(np.argmin(dist))]] == labels[i]
    return right / total


def brute_bcubed_f(truth, pred) -> float:
    """BCubed F from its definition, an unclustered face (-1) being alone in its cluster."""
    n = len(truth)
    cluster = [p if p >= 0 else f"alone{i}" for i, p in enumerate(pred)]
    precision = recall = 0.0
    for i in range(n):
        same_cluster = [j for j in range(n) if cluster[j] == cluster[i]]
        same_person = [j for j in range(n) if truth[j] == truth[i]]
        precision += sum(truth[j] == truth[i] for j in same_cluster) / len(same_cluster) / n
        recall += sum(cluster[j] == cluster[i] for j in same_person) / len(same_person) / n
    return 2 * precision * recall / (precision + recall)


def brute_pairwise_f1(truth, pred) -> float:
    cluster = [p if p >= 0 else f"alone{i}" for i, p in enumerate(pred)]
    pairs = list(itertools.combinations(range(len(truth)), 2))
    together = {(i, j) for i, j in pairs if cluster[i] == cluster[j]}
    same = {(i, j) for i, j in pairs if truth[i] == truth[j]}
    precision, recall = len(together & same) / len(together), len(together & same) / len(same)
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------ identification


def test_identification_of_separated_people_is_exact(quality):
    paths, labels, emb = people({"ann": 3, "bob": 3, "cid": 3, "dan": 3, "eve": 1, "fay": 1})
    out = quality.identification_summary(paths, labels, emb)
    assert (out["gallery_people"], out["probes"], out["unknown"]) == (4, 8, 2)
    assert out["rank1"] == 1.0
    # every known probe (distance ~0) is nearer than every stranger (distance ~2)
    for op in out["open_set"]:
        assert op["dir"] == 1.0


def test_a_probe_on_another_persons_face_is_the_one_rank1_miss(quality):
    paths, labels, emb = people({"ann": 3, "bob": 3, "cid": 3, "dan": 3})
    emb[paths.index("/faces/ann/ann_0003.png")] = emb[paths.index("/faces/bob/bob_0001.png")]
    out = quality.identification_summary(paths, labels, emb)
    assert out["probes"] == 8 and out["unknown"] == 0
    assert out["rank1"] == pytest.approx(7 / 8)
    assert out["rank1"] == pytest.approx(brute_rank1(paths, labels, emb))


def test_rank1_of_overlapping_people_matches_brute_force(quality):
    paths, labels, emb = people({f"p{i}": 2 + i % 4 for i in range(12)}, dim=12, noise=0.35)
    out = quality.identification_summary(paths, labels, emb)
    expected = brute_rank1(paths, labels, emb)
    assert 0.0 < expected < 1.0  # a case with both hits and misses
    assert out["rank1"] == pytest.approx(expected)


# ------------------------------------------------------------------ clustering


def test_every_method_finds_separated_people_and_leaves_out_the_few_seen(quality):
    paths, labels, emb = people({"ann": 4, "bob": 3, "cid": 3, "dan": 5, "eve": 2, "fay": 1})
    out = quality.clustering_summary(labels, emb, threshold=1.0, min_images=3)
    assert (out["faces"], out["people"]) == (15, 4)  # eve and fay have fewer than 3 faces
    for method in METHODS:
        r = out[method]
        assert r["clusters"] == 4, method
        assert r["pairwise_f1"] == 1.0 and r["bcubed_f"] == 1.0 and r["nmi"] == 1.0, method


def test_a_cut_above_every_distance_merges_everyone(quality):
    paths, labels, emb = people({"ann": 3, "bob": 3, "cid": 3, "dan": 3})
    out = quality.clustering_summary(labels, emb, threshold=4.0, min_images=1)
    one_cluster = np.zeros(len(labels), np.int64)
    for method in ("agglomerative", "chinese-whispers"):
        r = out[method]
        assert r["clusters"] == 1
        # 12 faces, 4 people of 3: BCubed precision 3/12, recall 1 -> F = 0.4
        assert r["bcubed_f"] == pytest.approx(0.4)
        assert r["bcubed_f"] == pytest.approx(brute_bcubed_f(labels, one_cluster))
        assert r["pairwise_f1"] == pytest.approx(brute_pairwise_f1(labels, one_cluster))


# ------------------------------------------------------------------ the whole script


def test_quality_script_on_orl(quality, orl_dir, trained_tiny, tmp_path, capsys):
    out = tmp_path / "q.json"
    argv = [str(orl_dir), "--model", str(trained_tiny), "--cache", str(tmp_path / "cache")]
    assert quality.main([*argv, "--max-people", "12", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["faces"] == 120 and result["people"] == 12
    ident = result["identification"]
    assert ident["gallery_people"] == 12 and ident["probes"] == 108 and ident["unknown"] == 0
    # rank-1 against brute force on the embeddings the script cached
    (cache,) = (tmp_path / "cache").glob("*.npz")
    with np.load(cache) as z:
        paths, emb = z["paths"].tolist(), z["embeddings"]
    labels = np.array([Path(p).parent.name for p in paths])
    assert len(set(labels)) == 12 and all(Path(p).parent.parent == orl_dir for p in paths)
    assert ident["rank1"] == pytest.approx(brute_rank1(paths, labels, emb))
    assert result["clustering"]["faces"] == 120  # ORL: 10 faces each, all >= --min-images 5
    capsys.readouterr()
    # second run reads the embedding cache
    assert quality.main([*argv, "--max-people", "12"]) == 0
    assert "embedding" not in capsys.readouterr().err
