"""Clustering quality against identity labels: pairwise P/R/F1, BCubed P/R/F, NMI, cluster count.

All counts come from the contingency table ``n[i, j]`` = items of class i put in cluster j
(N items, ``a_j`` = cluster sizes, ``b_i`` = class sizes):

- **pairwise**: a pair of items is a true positive when both share a cluster and a class.
  ``TP = sum C(n_ij, 2)``, precision = TP / sum C(a_j, 2), recall = TP / sum C(b_i, 2).
  When no pair is predicted together (all singletons) precision is defined as 1; when no two
  items share a class recall is 1 (nothing to find).
- **BCubed** (Bagga & Baldwin 1998; Amigo et al. 2009): per item, precision = share of its
  cluster that has its class, recall = share of its class that is in its cluster; averaged over
  items: P = sum n_ij^2 / a_j / N, R = sum n_ij^2 / b_i / N.
- **NMI**: scikit-learn's ``normalized_mutual_info_score`` (arithmetic mean normalisation).
- **cluster count error**: predicted clusters minus true identities (signed), and relative.
- **unclustered**: items labelled -1 (noise, or left out of clusters too small to keep) or alone
  in their predicted cluster; ``n_groups`` counts the predicted clusters of 2+ items (what a
  user sees as a group of photos).

Labels may be any hashable values; a predicted label of ``-1`` (noise, as DBSCAN/HDBSCAN write
it) is treated as a singleton cluster per item when ``noise_as_singletons`` is True.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClusteringReport:
    """Quality of a clustering of N labelled items (fractions in [0, 1])."""

    n_items: int
    n_classes: int  # true identities
    n_clusters: int  # predicted clusters
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    nmi: float
    n_clusters_error: int  # n_clusters - n_classes
    n_clusters_relative_error: float  # (n_clusters - n_classes) / n_classes
    n_groups: int = 0  # predicted clusters of 2+ items (label -1 is no cluster)
    n_unclustered: int = 0  # items labelled -1 or alone in their predicted cluster
    unclustered_fraction: float = 0.0  # n_unclustered / n_items

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def contingency(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> np.ndarray:
    """(classes, clusters) int64 count table."""
    _, ti = np.unique(np.asarray(labels_true), return_inverse=True)
    _, pi = np.unique(np.asarray(labels_pred), return_inverse=True)
    table = np.zeros((ti.max() + 1, pi.max() + 1), dtype=np.int64)
    np.add.at(table, (ti.ravel(), pi.ravel()), 1)
    return table


def clustering_metrics(
    labels_true: Sequence[Any] | np.ndarray,
    labels_pred: Sequence[Any] | np.ndarray,
    noise_as_singletons: bool = True,
) -> ClusteringReport:
    """Score predicted cluster labels against true identity labels.

    Args:
        labels_true: (N,) identity of each item.
        labels_pred: (N,) cluster of each item.
        noise_as_singletons: give every item labelled -1 its own cluster.

    Returns:
        ``ClusteringReport``.
    """
    true = np.asarray(labels_true)
    pred = np.asarray(labels_pred)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"labels must be two (N,) arrays, got {true.shape} and {pred.shape}")
    n = true.size
    if n == 0:
        raise ValueError("no items to score")
    groups, n_unclustered = group_counts(pred)
    if noise_as_singletons and np.issubdtype(pred.dtype, np.integer) and (pred == -1).any():
        pred = pred.copy()
        noise = pred == -1
        pred[noise] = pred.max() + 1 + np.arange(int(noise.sum()))
    table = contingency(true, pred)
    a = table.sum(axis=0)  # cluster sizes
    b = table.sum(axis=1)  # class sizes

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) // 2).sum())

    tp = pairs(table)
    pred_pairs, true_pairs = pairs(a), pairs(b)
    p_pair = tp / pred_pairs if pred_pairs else 1.0
    r_pair = tp / true_pairs if true_pairs else 1.0
    sq = table.astype(np.float64) ** 2
    p_b3 = float((sq / a[None, :]).sum() / n)
    r_b3 = float((sq / b[:, None]).sum() / n)
    from sklearn.metrics import normalized_mutual_info_score

    nmi = float(normalized_mutual_info_score(true, pred))
    n_classes, n_clusters = int(b.size), int(a.size)
    return ClusteringReport(
        n_items=int(n),
        n_classes=n_classes,
        n_clusters=n_clusters,
        pairwise_precision=p_pair,
        pairwise_recall=r_pair,
        pairwise_f1=_f(p_pair, r_pair),
        bcubed_precision=p_b3,
        bcubed_recall=r_b3,
        bcubed_f=_f(p_b3, r_b3),
        nmi=nmi,
        n_clusters_error=n_clusters - n_classes,
        n_clusters_relative_error=(n_clusters - n_classes) / n_classes,
        n_groups=groups,
        n_unclustered=n_unclustered,
        unclustered_fraction=n_unclustered / n,
    )


def group_counts(labels_pred: Sequence[Any] | np.ndarray) -> tuple[int, int]:
    """(clusters of 2+ items, items unclustered) of predicted labels: an item is unclustered
    when it is labelled -1 (integer labels only) or is the only item with its label."""
    pred = np.asarray(labels_pred)
    if pred.size == 0:
        return 0, 0
    noise = (pred == -1) if np.issubdtype(pred.dtype, np.integer) else np.zeros(pred.size, bool)
    _, inverse, counts = np.unique(pred[~noise], return_inverse=True, return_counts=True)
    alone = int((counts[inverse] == 1).sum())
    return int((counts >= 2).sum()), int(noise.sum()) + alone
