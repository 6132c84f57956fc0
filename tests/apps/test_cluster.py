"""Clustering: exactness against scikit-learn, the k-NN graph against brute force, outputs."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from facenet.apps.cluster import (
    average_linkage,
    chinese_whispers,
    cluster_embeddings,
    hdbscan_graph,
    knn_graph,
)
from facenet.apps.cluster_folder import write_clusters


def blobs(n_ids: int, per: int, dim: int = 16, noise: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    x = np.repeat(centres, per, 0) + noise * rng.normal(size=(n_ids * per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(n_ids), per)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.9, 1.3, 1.8])
@pytest.mark.parametrize("seed", [0, 1])
def test_average_linkage_equals_sklearn_on_the_complete_graph(threshold, seed):
    x, _ = blobs(25, 6, seed=seed)
    ours = average_linkage(x, threshold, knn_graph(x, k=len(x) - 1))
    # average of cosine distances = average of squared L2 / 2 for unit vectors
    ref = AgglomerativeClustering(
        n_clusters=None, distance_threshold=threshold / 2, metric="cosine", linkage="average"
    ).fit_predict(x)
    assert adjusted_rand_score(ours, ref) == 1.0
    assert len(set(ours)) == len(set(ref))


def test_average_linkage_on_sparse_graph_recovers_identities():
    x, y = blobs(60, 10, dim=32, noise=0.35, seed=3)
    labels = average_linkage(x, 1.0, knn_graph(x, k=10))
    assert adjusted_rand_score(labels, y) > 0.98


def test_knn_graph_matches_brute_force_and_excludes_self():
    x, _ = blobs(10, 20, seed=4)
    g = knn_graph(x, k=7)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    brute = np.sort(d, axis=1)[:, :7]
    np.testing.assert_allclose(np.sort(g.distances, axis=1), brute, atol=1e-5)
    assert not (g.neighbors == np.arange(len(x))[:, None]).any()


def test_approximate_knn_graph_has_high_recall():
    x, _ = blobs(200, 10, dim=32, noise=0.4, seed=5)
    exact = knn_graph(x, k=10)
    approx = knn_graph(x, k=10, exact_below=100)  # forces the IVF path
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(exact.neighbors, approx.neighbors, strict=True)]
    )
    assert recall > 0.9


def test_chinese_whispers_and_hdbscan_find_separated_groups():
    x, y = blobs(20, 8, dim=32, noise=0.3, seed=6)
    g = knn_graph(x, k=10)
    assert adjusted_rand_score(chinese_whispers(g, 1.0), y) > 0.95
    assert adjusted_rand_score(hdbscan_graph(g, min_cluster_size=4), y) > 0.9


def test_labels_are_ordered_by_size_and_cover_every_face():
    x, _ = blobs(5, 4, seed=7)
    x = np.concatenate([x, x[:1].repeat(6, 0)])  # make cluster of face 0 the largest
    # min_cluster_size=1: every face labelled (the default leaves faces alone unclustered, -1)
    labels = cluster_embeddings(x, "agglomerative", threshold=0.5, min_cluster_size=1)
    assert labels.shape == (len(x),)
    counts = np.bincount(labels)
    assert (np.diff(counts) <= 0).all() and labels[0] == 0


def test_unknown_method_and_missing_threshold_are_errors():
    x, _ = blobs(3, 3)
    with pytest.raises(ValueError, match="unknown clustering method"):
        cluster_embeddings(x, "kmeans", threshold=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a distance threshold"):
        cluster_embeddings(x, "agglomerative")


def test_write_clusters_makes_folders_csv_and_contact_sheet(tmp_path):
    photos = []
    for i in range(5):
        p = tmp_path / "in" / f"sub{i % 2}" / "same_name.png"  # name clash across folders
        p = p.with_name(f"img{i // 2}.png") if i < 4 else p
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(p)
        photos.append(str(p))
    labels = np.array([0, 0, 1, 1, 2])
    boxes = np.array([[5, 5, 30, 30]] * 5, np.float32)
    out = write_clusters(tmp_path / "out", photos, boxes, [0] * 5, labels)
    assert out.n_clusters == 2 and out.n_singletons == 1
    # two photos called img0.png from different folders: both kept, the second renamed
    assert len(os.listdir(tmp_path / "out" / "cluster_0000")) == 2
    for f in (tmp_path / "out" / "cluster_0000").iterdir():
        assert f.is_symlink() and f.resolve().is_file()
    with open(out.csv) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["cluster"]) for r in rows] == labels.tolist()
    assert rows[4]["folder"] == "unclustered"
    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count("<img") == 5 and "cluster_0001" in page
