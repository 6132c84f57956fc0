"""Clustering and identification metrics on tiny hand-built examples, plus brute-force oracles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from facenet.eval.clustering import clustering_metrics
from facenet.eval.distances import cosine_distance, pair_distances, squared_l2
from facenet.eval.identification import evaluate_identification, gallery_probe_split

# ---------------------------------------------------------------- clustering


def test_clustering_hand_case():
    # classes: a a a b b ; clusters: 1 1 2 2 2
    true = ["a", "a", "a", "b", "b"]
    pred = [1, 1, 2, 2, 2]
    r = clustering_metrics(true, pred)
    # pairs together in pred: (0,1), (2,3), (2,4), (3,4) -> 4; correct: (0,1), (3,4) -> 2
    # pairs together in truth: (0,1), (0,2), (1,2), (3,4) -> 4
    assert r.pairwise_precision == pytest.approx(2 / 4)
    assert r.pairwise_recall == pytest.approx(2 / 4)
    assert r.pairwise_f1 == pytest.approx(0.5)
    # BCubed precision per item: 1, 1, 1/3, 2/3, 2/3 ; recall: 2/3, 2/3, 1/3, 1, 1
    assert r.bcubed_precision == pytest.approx((3 + 1 / 3 + 4 / 3 - 1) / 5)
    assert r.bcubed_recall == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 2) / 5)
    assert r.n_classes == 2 and r.n_clusters == 2 and r.n_clusters_error == 0
    assert r.nmi == pytest.approx(normalized_mutual_info_score(true, pred))


def test_clustering_perfect_and_singletons():
    true = [0, 0, 1, 1, 2]
    perfect = clustering_metrics(true, [5, 5, 7, 7, 9])
    assert perfect.pairwise_f1 == 1 and perfect.bcubed_f == 1 and perfect.nmi == pytest.approx(1)
    single = clustering_metrics(true, [0, 1, 2, 3, 4])
    assert single.pairwise_precision == 1.0 and single.pairwise_recall == 0.0
    assert single.bcubed_precision == 1.0 and single.bcubed_recall == pytest.approx(
        (0.5 * 4 + 1) / 5
    )
    assert single.n_clusters_error == 2 and single.n_clusters_relative_error == pytest.approx(2 / 3)
    merged = clustering_metrics(true, [0] * 5)
    assert merged.pairwise_recall == 1.0 and merged.pairwise_precision == pytest.approx(2 / 10)


def test_noise_label_counts_as_singletons():
    r = clustering_metrics([0, 0, 1, 1], [-1, -1, 3, 3])
    assert r.n_clusters == 3 and r.pairwise_recall == pytest.approx(0.5)
    r2 = clustering_metrics([0, 0, 1, 1], [-1, -1, 3, 3], noise_as_singletons=False)
    assert r2.pairwise_f1 == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_clustering_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 5, 40)
    pred = rng.integers(0, 7, 40)
    tp = fp = fn = 0
    for i, j in itertools.combinations(range(40), 2):
        st, sp = true[i] == true[j], pred[i] == pred[j]
        tp += st and sp
        fp += sp and not st
        fn += st and not sp
    bp = np.mean(
        [np.sum((pred == pred[i]) & (true == true[i])) / np.sum(pred == pred[i]) for i in range(40)]
    )
    br = np.mean(
        [np.sum((pred == pred[i]) & (true == true[i])) / np.sum(true == true[i]) for i in range(40)]
    )
    r = clustering_metrics(true, pred)
    assert r.pairwise_precision == pytest.approx(tp / (tp + fp))
    assert r.pairwise_recall == pytest.approx(tp / (tp + fn))
    assert r.bcubed_precision == pytest.approx(bp) and r.bcubed_recall == pytest.approx(br)


def test_clustering_bad_input():
    with pytest.raises(ValueError, match="two"):
        clustering_metrics([0, 1], [0, 1, 2])


# ---------------------------------------------------------------- identification


def test_gallery_probe_split_documented_rule():
    labels = ["b", "a", "a", "c", "a", "b"]
    keys = ["b2", "a3", "a1", "c1", "a2", "b1"]
    s = gallery_probe_split(labels, keys)
    assert s.gallery.tolist() == [2, 5]  # a1 and b1: first sorted of each multi-image person
    assert s.probes.tolist() == [0, 1, 4]
    assert s.unknown.tolist() == [3]  # c has one image


def test_identification_hand_case():
    # 1-D embeddings: gallery A at 0, B at 10, C at 20
    gallery = np.array([[0.0], [10.0], [20.0]])
    glabels = ["A", "B", "C"]
    # probes: A at 1 (rank 1), B at 14 (closest C? 16 vs 36 -> B rank 1), C at 14.9... use 16
    probes = np.array([[1.0], [16.0], [9.0]])
    plabels = ["A", "B", "C"]  # B at 16 is nearer C (rank 2); C at 9 is nearer B then A (rank 3)
    unknown = np.array([[5.0], [30.0]])  # nearest squared distances 25 and 100
    r = evaluate_identification(
        gallery, glabels, probes, plabels, unknown, ranks=(1, 2, 3), far_targets=(0.0, 0.5)
    )
    assert r.rank == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(1.0)}
    assert r.cmc[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    # FAR 0: tau just below 25 -> A's probe (d=1, correct) accepted; DIR = 1/3
    op0, op5 = r.open_set
    assert op0["far"] == 0.0 and op0["dir"] == pytest.approx(1 / 3) and op0["threshold"] < 25
    # FAR 0.5: one unknown may pass -> tau below 100; still only A's probe is right at rank 1
    assert op5["far"] == pytest.approx(0.5) and op5["dir"] == pytest.approx(1 / 3)
    assert 25 <= op5["threshold"] < 100
    assert "|" in r.markdown() and r.to_dict()["rank"]["1"] == pytest.approx(1 / 3)


def test_identification_multiple_gallery_images_and_cosine():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    glabels = ["A", "B", "B"]
    probes = np.array([[0.8, 0.6]])
    r = evaluate_identification(gallery, glabels, probes, ["B"], metric="cosine")
    assert r.rank[1] == 1.0  # B's second image (0.7, 0.7) is the closest
    assert r.n_gallery_identities == 2 and r.n_gallery_images == 3 and r.open_set == []


def test_identification_unknown_target_below_resolution_is_flagged():
    gallery = np.eye(3)
    r = evaluate_identification(
        gallery,
        ["a", "b", "c"],
        gallery[:2] + 0.01,
        ["a", "b"],
        np.ones((4, 3)),
        far_targets=(0.1,),
    )
    assert not r.open_set[0]["far_attainable"] and r.open_set[0]["far"] == 0.0
    assert r.notes


def test_identification_rejects_unenrolled_probe_labels():
    with pytest.raises(ValueError, match="not enrolled"):
        evaluate_identification(np.eye(2), ["a", "b"], np.eye(2)[:1], ["z"])


@pytest.mark.parametrize("seed", range(3))
def test_identification_rank_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(12, 4))
    glabels = [f"id{i % 6}" for i in range(12)]  # 2 images per identity
    probes = rng.normal(size=(30, 4))
    plabels = [f"id{i}" for i in rng.integers(0, 6, 30)]
    r = evaluate_identification(gallery, glabels, probes, plabels, ranks=(1, 3))
    ranks = []
    for p, lab in zip(probes, plabels, strict=True):
        per_id = {}
        for g, gl in zip(gallery, glabels, strict=True):
            per_id[gl] = min(per_id.get(gl, np.inf), float(np.sum((p - g) ** 2)))
        ranks.append(sum(v <= per_id[lab] for v in per_id.values()))
    ranks = np.array(ranks)
    assert r.rank[1] == pytest.approx(np.mean(ranks <= 1))
    assert r.rank[3] == pytest.approx(np.mean(ranks <= 3))


# ---------------------------------------------------------------- distances


def test_distances_hand_values_and_centering():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert squared_l2(a, b).tolist() == pytest.approx([2.0, 1.0])
    assert cosine_distance(a, b).tolist() == pytest.approx([1.0, 0.0])
    assert cosine_distance(np.zeros((1, 2)), b[:1]).tolist() == [1.0]
    rng = np.random.default_rng(0)
    left, right = rng.normal(size=(20, 3)) + 5, rng.normal(size=(20, 3)) + 5
    folds = np.repeat([0, 1], 10)
    d = pair_distances(left, right, "cosine-centered", folds)
    mean_other = np.concatenate([left[10:], right[10:]]).mean(0)  # fold 0 uses fold 1's mean
    assert d[:10] == pytest.approx(cosine_distance(left[:10] - mean_other, right[:10] - mean_other))
    with pytest.raises(ValueError, match="unknown distance"):
        pair_distances(left, right, "manhattan")  # type: ignore[arg-type]
