"""Clustering face embeddings by person, at scale.

Three methods, all on a sparse k-nearest-neighbour graph built with FAISS (never an N x N matrix):

- ``agglomerative`` (the paper's choice, SPEC §1): average-linkage agglomerative clustering on
  squared L2 distance, cut at the model's calibrated threshold. Average linkage over squared L2
  of unit vectors has a closed form from cluster sums, ``2 - 2 * s_A . s_B / (|A| |B|)``, so the
  linkage between two clusters is exact, not estimated from graph edges; the graph only decides
  which cluster pairs are *candidates*. Merging runs in rounds of reciprocal nearest neighbours
  (RAC, Sumengen et al. 2021): for a reducible linkage such as average linkage this gives the
  same tree as the one-merge-at-a-time algorithm, and with a complete graph (``k >= N - 1``) it
  equals scikit-learn's ``AgglomerativeClustering(linkage="average")`` (tested).
- ``hdbscan``: scikit-learn's HDBSCAN on the sparse graph of k-NN distances (faces of no dense
  group get label -1, "noise").
- ``chinese-whispers``: label propagation on the graph of k-NN edges closer than the threshold
  (Biemann 2006; dlib's face clustering).

Every method then leaves the faces of clusters smaller than ``min_cluster_size`` *unclustered*
(label -1): in a real collection most people are strangers seen once, and a small "cluster" is
more often strangers that look alike than one person.

Defaults (``DEFAULT_METHOD``, ``DEFAULT_OPERATING_POINT``, ``DEFAULT_MIN_CLUSTER_SIZE``) were
chosen with ``scripts/cluster_collections.py`` on every LFW face (13,232 faces of 5,749 people,
4,069 of them seen once), LFW people with >= 5 images and CelebA-wild; the README has the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

ClusterMethod = Literal["agglomerative", "hdbscan", "chinese-whispers"]
METHODS: tuple[str, ...] = ("agglomerative", "hdbscan", "chinese-whispers")
# why: exact k-NN search costs O(N^2 D); beyond this many faces an IVF index answers ~50x faster
# at recall@k ~0.98 on face embeddings (benchmarks/gallery.py).
EXACT_KNN_BELOW = 20_000
DEFAULT_K = 20
# Defaults for real photo collections (measured by scripts/cluster_collections.py):
DEFAULT_METHOD: ClusterMethod = "agglomerative"
# The operating point clustering cuts linkage at is the one of every command
# (facenet.apps.thresholds.DEFAULT_OPERATING_POINT, "far_1e-3"). The "accuracy" threshold (best
# accuracy on balanced same/different pairs) over-merges a collection of mostly strangers: each
# face is compared with every other, so a per-pair false-accept rate of ~0.7% gives every
# stranger a look-alike (all of LFW, inception_resnet_v1:casia-webface: BCubed precision 0.64 at
# "accuracy" vs 0.84 at "far_1e-3", every face labelled).
# why: faces in clusters smaller than this are left unclustered (-1). Pairs and triples of
# look-alike strangers are most of what "far_1e-3" still merges in a large collection; 6 is the
# smallest size with BCubed precision >= 0.95 on all of LFW (0.950, F 0.880; 5: 0.939, 3: 0.894)
# and keeps precision >= 0.98 on random 500- and 2,000-photo LFW collections.
DEFAULT_MIN_CLUSTER_SIZE = 6


@dataclass(frozen=True)
class KnnGraph:
    """Each row's ``k`` nearest other rows: (N, k) int64 ``neighbors`` (-1 = none) and (N, k)
    float32 squared L2 ``distances``."""

    neighbors: np.ndarray
    distances: np.ndarray

    def edges(self, max_distance: float = math.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Undirected edge list (i < j, unique) with distance <= ``max_distance``:
        (E,) rows, (E,) cols, (E,) distances."""
        n, k = self.neighbors.shape
        rows = np.repeat(np.arange(n, dtype=np.int64), k)
        cols = self.neighbors.ravel()
        d = self.distances.ravel()
        keep = (cols >= 0) & (cols != rows) & (d <= max_distance)
        rows, cols, d = rows[keep], cols[keep], d[keep]
        lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
        key = lo * n + hi
        key, first = np.unique(key, return_index=True)
        return lo[first], hi[first], d[first]


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    return tqdm(total=total, desc=desc, disable=not enabled, unit=" faces", leave=False)


def knn_graph(
    embeddings: np.ndarray,
    k: int = DEFAULT_K,
    exact_below: int = EXACT_KNN_BELOW,
    progress: bool = False,
    seed: int = 0,
) -> KnnGraph:
    """The ``k`` nearest neighbours of every row of (N, D) unit ``embeddings`` (self excluded).

    Exact (``IndexFlatIP``) below ``exact_below`` rows, else an IVF index with
    ``4 sqrt(N)`` lists probed 24 at a time (approximate).
    """
    import faiss  # why: the optional `gallery` extra; only the k-NN graph needs it

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x.shape
    k = max(1, min(k, n - 1)) if n > 1 else 0
    if k == 0:
        return KnnGraph(np.full((n, 0), -1, np.int64), np.zeros((n, 0), np.float32))
    if n < exact_below:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(4 * math.sqrt(n))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        # why: k-means needs ~40 points per list; more only slows training.
        sample = x[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
        index.cp.seed = seed
        index.train(sample)
        index.nprobe = 24
    index.add(x)
    neighbors = np.empty((n, k), np.int64)
    distances = np.empty((n, k), np.float32)
    chunk = 4096
    with _progress(n, "k-NN graph", progress) as bar:
        for start in range(0, n, chunk):
            sims, ids = index.search(x[start : start + chunk], k + 1)
            rows = np.arange(start, start + len(ids))
            # drop each row's own entry (normally first); keep the k best others
            not_self = ids != rows[:, None]
            order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
            ids = np.take_along_axis(ids, order, 1)
            sims = np.take_along_axis(sims, order, 1)
            neighbors[start : start + len(ids)] = ids
            distances[start : start + len(ids)] = np.clip(2.0 - 2.0 * sims, 0.0, 4.0)
            bar.update(len(ids))
    distances[neighbors < 0] = np.inf
    return KnnGraph(neighbors, distances)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..C-1 by decreasing cluster size (ties: first appearance); -1 kept."""
    out = np.full(len(labels), -1, np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    uniq, first, inverse, counts = np.unique(
        labels[valid], return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -counts))
    rank = np.empty(len(uniq), np.int64)
    rank[order] = np.arange(len(uniq))
    out[valid] = rank[inverse]
    return out


def apply_min_cluster_size(labels: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """``labels`` with the members of every cluster of fewer than ``min_cluster_size`` faces set
    to -1 ("unclustered"); the kept clusters renumbered 0..C-1 in the same order (largest first,
    ties by first appearance). ``min_cluster_size <= 1`` keeps everything."""
    labels = np.asarray(labels, np.int64)
    if min_cluster_size <= 1 or not len(labels):
        return _relabel(labels)
    out = labels.copy()
    valid = out >= 0
    _, inverse, counts = np.unique(out[valid], return_inverse=True, return_counts=True)
    small = np.zeros(len(out), bool)
    small[valid] = counts[inverse] < min_cluster_size
    out[small] = -1
    return _relabel(out)


def _pair_linkage(sums: np.ndarray, sizes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact average squared L2 distance between clusters ``a[i]`` and ``b[i]`` of unit vectors:
    ``2 - 2 s_a . s_b / (|a| |b|)``, in chunks to bound memory."""
    out = np.empty(len(a), np.float64)
    chunk = 1 << 15
    for start in range(0, len(a), chunk):
        i, j = a[start : start + chunk], b[start : start + chunk]
        out[start : start + chunk] = 2.0 - 2.0 * np.einsum("ij,ij->i", sums[i], sums[j]) / (
            sizes[i] * sizes[j]
        )
    return out


def average_linkage(
    embeddings: np.ndarray,
    threshold: float,
    graph: KnnGraph,
    progress: bool = False,
) -> np.ndarray:
    """Average-linkage agglomerative clustering of (N, D) unit vectors, cut at ``threshold``.

    Two clusters merge while their average squared L2 distance is <= ``threshold`` and some
    ``graph`` edge joins them. Returns (N,) labels 0..C-1, largest cluster first.
    """
    sums = np.array(embeddings, dtype=np.float64)  # (N, D) member sums; row = cluster id
    n = len(sums)
    if n == 0:
        return np.zeros(0, np.int64)
    sizes = np.ones(n, np.float64)
    label = np.arange(n, dtype=np.int64)  # point -> cluster (the id of a surviving member)
    ids = np.arange(n, dtype=np.int64)
    rows, cols, _ = graph.edges()  # candidate cluster pairs, rows < cols
    dist = _pair_linkage(sums, sizes, rows, cols)
    with _progress(n - 1, "merging", progress) as bar:
        while len(rows):
            # each cluster's nearest candidate; ties go to the smaller id
            ends = np.concatenate([rows, cols])
            other = np.concatenate([cols, rows])
            both = np.concatenate([dist, dist])
            nearest_d = np.full(n, np.inf)
            np.minimum.at(nearest_d, ends, both)
            best = both == nearest_d[ends]
            nearest = np.full(n, n, np.int64)
            np.minimum.at(nearest, ends[best], other[best])
            # reciprocal nearest pairs within the threshold merge this round; for a reducible
            # linkage this never changes the tree (Sumengen et al. 2021)
            a = ids[(nearest_d <= threshold) & (nearest < n) & (nearest > ids)]
            a = a[nearest[nearest[a]] == a]
            if not len(a):
                break
            b = nearest[a]
            sums[a] += sums[b]
            sizes[a] += sizes[b]
            parent = ids.copy()
            parent[b] = a
            label = parent[label]
            touched = np.zeros(n, bool)
            touched[a] = True
            rows, cols = parent[rows], parent[cols]
            hit = touched[rows] | touched[cols]
            # untouched pairs keep their linkage; pairs of a merged cluster are deduplicated
            # and recomputed exactly from the new sums
            lo = np.minimum(rows[hit], cols[hit])
            hi = np.maximum(rows[hit], cols[hit])
            key = np.unique(lo[lo != hi] * n + hi[lo != hi])
            lo, hi = key // n, key % n
            rows = np.concatenate([rows[~hit], lo])
            cols = np.concatenate([cols[~hit], hi])
            dist = np.concatenate([dist[~hit], _pair_linkage(sums, sizes, lo, hi)])
            bar.update(len(a))
    return _relabel(label)


def chinese_whispers(
    graph: KnnGraph,
    threshold: float,
    iterations: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Chinese-whispers label propagation on k-NN edges with squared distance <= ``threshold``.

    Every node starts in its own class; in each iteration, nodes in a random order take the
    class with the largest total edge weight among their neighbours (weight ``threshold - d``
    plus a small floor, so closer faces pull harder). Stops early when nothing changes.
    Returns (N,) labels, largest cluster first.
    """
    n = len(graph.neighbors)
    rows, cols, d = graph.edges(threshold)
    weight = (threshold - d) + 1e-3 * max(threshold, 1e-6)
    # adjacency lists as Python lists: the algorithm is sequential by definition
    order = np.argsort(np.concatenate([rows, cols]), kind="stable")
    src = np.concatenate([rows, cols])[order]
    dst = np.concatenate([cols, rows])[order].tolist()
    w = np.concatenate([weight, weight])[order].tolist()
    starts = np.searchsorted(src, np.arange(n + 1)).tolist()
    labels = list(range(n))
    rng = np.random.default_rng(seed)
    with _progress(iterations, "chinese whispers", progress) as bar:
        bar.unit = " iterations"
        for _ in range(iterations):
            changed = 0
            for node in rng.permutation(n).tolist():
                lo, hi = starts[node], starts[node + 1]
                if lo == hi:
                    continue
                score: dict[int, float] = {}
                for j in range(lo, hi):
                    lab = labels[dst[j]]
                    score[lab] = score.get(lab, 0.0) + w[j]
                best = max(score.items(), key=lambda kv: (kv[1], -kv[0]))[0]
                if best != labels[node]:
                    labels[node] = best
                    changed += 1
            bar.update(1)
            if changed == 0:
                break
    return _relabel(np.asarray(labels, np.int64))


def hdbscan_graph(
    graph: KnnGraph, min_cluster_size: int = 2, min_samples: int | None = None
) -> np.ndarray:
    """scikit-learn HDBSCAN on the sparse matrix of k-NN squared distances; -1 = noise."""
    # why: scikit-learn takes about a second to import and only this method needs it
    from scipy import sparse
    from sklearn.cluster import HDBSCAN

    n = len(graph.neighbors)
    if n < 2:
        return np.zeros(n, np.int64) if n else np.zeros(0, np.int64)
    rows, cols, d = graph.edges()
    # why: a zero distance is an implicit "no edge" in a sparse matrix; nudge exact duplicates.
    d = np.maximum(d.astype(np.float64), 1e-9)
    m = sparse.coo_matrix(
        (np.concatenate([d, d]), (np.concatenate([rows, cols]), np.concatenate([cols, rows]))),
        shape=(n, n),
    ).tocsr()
    k = graph.neighbors.shape[1]
    min_samples = min(min_samples or min_cluster_size, max(1, k))
    model = HDBSCAN(
        min_cluster_size=max(2, min_cluster_size),
        min_samples=min_samples,
        metric="precomputed",
        copy=False,
    )
    return _relabel(model.fit_predict(m))


def cluster_embeddings(
    embeddings: np.ndarray,
    method: ClusterMethod = DEFAULT_METHOD,
    threshold: float | None = None,
    k: int = DEFAULT_K,
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
    progress: bool = False,
    seed: int = 0,
    graph: KnnGraph | None = None,
) -> np.ndarray:
    """Cluster (N, D) unit embeddings; returns (N,) labels 0..C-1, largest cluster first, and -1
    for unclustered faces (in a cluster smaller than ``min_cluster_size``, or HDBSCAN noise).

    Args:
        method: ``agglomerative`` | ``hdbscan`` | ``chinese-whispers``.
        threshold: squared-L2 cut; required by agglomerative and chinese-whispers (use the
            model's calibrated threshold ``DEFAULT_OPERATING_POINT``).
        k: neighbours per face in the candidate graph.
        min_cluster_size: smallest cluster kept, for every method (HDBSCAN's own parameter
            too); 1 labels every face, a face alone then being a cluster of one.
    """
    if method not in METHODS:
        raise ValueError(
            f"unknown clustering method {method!r}; choose one of {', '.join(METHODS)}"
        )
    if method != "hdbscan" and threshold is None:
        raise ValueError(f"{method} clustering needs a distance threshold")
    x = np.asarray(embeddings, dtype=np.float32)
    if graph is None:
        graph = knn_graph(x, k=k, progress=progress, seed=seed)
    if method == "agglomerative":
        labels = average_linkage(x, float(threshold), graph, progress=progress)
    elif method == "chinese-whispers":
        labels = chinese_whispers(graph, float(threshold), seed=seed, progress=progress)
    else:
        labels = hdbscan_graph(graph, min_cluster_size=min_cluster_size)
    return apply_min_cluster_size(labels, min_cluster_size)
