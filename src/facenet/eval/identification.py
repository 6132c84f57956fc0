"""Closed-set and open-set identification: rank-k (CMC) and DIR at FAR.

**LFW gallery/probe split** (``gallery_probe_split``): items are grouped by identity and sorted
by file name. For every identity with >= 2 images the first image is enrolled in the gallery and
the others are *known probes*; every identity with exactly 1 image becomes an *unknown probe*
(a person not enrolled, who should be rejected). On LFW (13,233 images, 5,749 people) that is
1,680 enrolled people, 7,484 known probes and 4,069 unknown probes.

**Closed set**: for each known probe, the distance to an identity is the smallest distance to
any of its gallery images; the probe's rank is the number of identities at a distance <= its
true identity's (ties counted against the probe). Rank-k = share of known probes with rank <= k.

**Open set** (Phillips/FRVT): a probe's top match is accepted when its distance <= tau.
``FAR(tau)`` = share of unknown probes accepted (false alarms);
``DIR(tau)`` = share of known probes whose top match is the right identity and is accepted.
tau is the largest threshold with FAR <= target, computed exactly as VAL@FAR
(``facenet.eval.verification.threshold_at_far``): a target below 1/n_unknown is reported as not
attainable (DIR at FAR = 0), never extrapolated.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from facenet.eval.verification import threshold_at_far

DEFAULT_RANKS = (1, 5)
DEFAULT_FAR_TARGETS = (1e-3, 1e-2, 1e-1)
CMC_MAX_RANK = 20


@dataclass(frozen=True)
class IdentificationSplit:
    """Indices into the item list: gallery, known probes and unknown probes."""

    gallery: np.ndarray  # (G,) int
    probes: np.ndarray  # (P,) int, identity enrolled
    unknown: np.ndarray  # (U,) int, identity not enrolled


def gallery_probe_split(
    labels: Sequence[Hashable], keys: Sequence[str] | None = None, min_images: int = 2
) -> IdentificationSplit:
    """The documented LFW split (see module docstring).

    Args:
        labels: (N,) identity of each item.
        keys: (N,) sort keys (e.g. file names); the first per identity is enrolled. Defaults to
            the item order.
        min_images: identities with at least this many items are enrolled.
    """
    n = len(labels)
    keys = list(keys) if keys is not None else [f"{i:012d}" for i in range(n)]
    groups: dict[Hashable, list[int]] = {}
    for i in sorted(range(n), key=lambda i: keys[i]):
        groups.setdefault(labels[i], []).append(i)
    gallery, probes, unknown = [], [], []
    for items in groups.values():
        if len(items) >= min_images:
            gallery.append(items[0])
            probes.extend(items[1:])
        else:
            unknown.extend(items)
    return IdentificationSplit(
        np.array(sorted(gallery), dtype=np.int64),
        np.array(sorted(probes), dtype=np.int64),
        np.array(sorted(unknown), dtype=np.int64),
    )


def _distance_matrix(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """(P, D), (G, D) -> (P, G) squared L2 or cosine distances."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return 1.0 - x @ y.T
    if metric != "l2":
        raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.maximum(sq, 0.0)


def _identity_distances(
    probes: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray, n_ids: int, metric: str
) -> np.ndarray:
    """(P, D) probes -> (P, I) smallest distance to each identity's gallery images."""
    order = np.argsort(gallery_ids, kind="stable")
    starts = np.searchsorted(gallery_ids[order], np.arange(n_ids))  # first column of each id
    gallery = gallery[order]
    blocks = []
    for start in range(0, probes.shape[0], 2048):  # bounded memory: 2048 x G at a time
        d = _distance_matrix(probes[start : start + 2048], gallery, metric)
        blocks.append(np.minimum.reduceat(d, starts, axis=1))
    return np.concatenate(blocks, axis=0)


@dataclass(frozen=True)
class IdentificationReport:
    """Closed-set rank-k and open-set DIR@FAR (fractions)."""

    n_gallery_identities: int
    n_gallery_images: int
    n_probes: int
    n_unknown: int
    metric: str
    rank: dict[int, float]  # k -> share of known probes with the right identity in the top k
    cmc: list[float]  # rank-1 .. rank-CMC_MAX_RANK
    open_set: list[dict[str, Any]] = field(default_factory=list)  # one per FAR target
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rank"] = {str(k): v for k, v in self.rank.items()}
        return d

    def markdown(self) -> str:
        """Markdown table: split sizes, rank-k, DIR at each FAR target."""
        head = ["gallery people", "known probes", "unknown probes"]
        row = [str(self.n_gallery_identities), str(self.n_probes), str(self.n_unknown)]
        head += [f"rank-{k}" for k in self.rank]
        row += [f"{100 * v:.2f}%" for v in self.rank.values()]
        for op in self.open_set:
            head.append(f"DIR @ FAR {op['far_target']:g}")
            flag = "" if op["far_attainable"] else " (FAR=0)"
            row.append(f"{100 * op['dir']:.2f}% (FAR {op['far']:.1e}){flag}")
        return (
            "| "
            + " | ".join(head)
            + " |\n|"
            + "---|" * len(head)
            + "\n| "
            + " | ".join(row)
            + " |\n"
        )


def evaluate_identification(
    gallery_embeddings: np.ndarray,
    gallery_labels: Sequence[Hashable],
    probe_embeddings: np.ndarray,
    probe_labels: Sequence[Hashable],
    unknown_embeddings: np.ndarray | None = None,
    ranks: Sequence[int] = DEFAULT_RANKS,
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
    metric: str = "l2",
) -> IdentificationReport:
    """Score identification of known probes against a gallery, and rejection of unknowns.

    Args:
        gallery_embeddings: (G, D) enrolled images.
        gallery_labels: (G,) their identities (an identity may have several images).
        probe_embeddings: (P, D) known probes.
        probe_labels: (P,) their identities; every one must be enrolled.
        unknown_embeddings: (U, D) probes of people not enrolled, or None (closed set only).
        ranks: the k of the rank-k rates to report.
        far_targets: false-alarm rates for DIR@FAR (needs unknown probes).
        metric: ``"l2"`` (squared) or ``"cosine"``.

    Returns:
        ``IdentificationReport``.
    """
    ids, gallery_ids = np.unique(np.asarray(gallery_labels, dtype=object), return_inverse=True)
    index = {label: i for i, label in enumerate(ids.tolist())}
    missing = sorted({str(p) for p in probe_labels if p not in index})
    if missing:
        raise ValueError(
            f"{len(missing)} probe identities are not enrolled (e.g. {', '.join(missing[:3])}); "
            "pass them as unknown probes"
        )
    probe_ids = np.array([index[p] for p in probe_labels], dtype=np.int64)
    probes = np.asarray(probe_embeddings)
    if probes.shape[0] == 0:
        raise ValueError("no known probes")
    dist = _identity_distances(
        probes, np.asarray(gallery_embeddings), gallery_ids, ids.size, metric
    )
    true_d = dist[np.arange(probes.shape[0]), probe_ids]
    rank_of = (dist <= true_d[:, None]).sum(axis=1)  # ties count against the probe
    cmc = [float(np.mean(rank_of <= k)) for k in range(1, CMC_MAX_RANK + 1)]
    rank = {int(k): float(np.mean(rank_of <= k)) for k in ranks}

    open_set: list[dict[str, Any]] = []
    notes: list[str] = []
    n_unknown = 0
    if unknown_embeddings is not None and len(unknown_embeddings):
        unk = _identity_distances(
            np.asarray(unknown_embeddings),
            np.asarray(gallery_embeddings),
            gallery_ids,
            ids.size,
            metric,
        )
        n_unknown = unk.shape[0]
        top_known = dist.min(axis=1)
        correct = dist.argmin(axis=1) == probe_ids
        top_unknown = unk.min(axis=1)
        scores = np.r_[top_known, top_unknown]
        is_known = np.r_[np.ones(top_known.size, bool), np.zeros(top_unknown.size, bool)]
        for target in far_targets:
            op = threshold_at_far(scores, is_known, target)
            dir_ = float(np.mean(correct & (top_known <= op.threshold)))
            open_set.append(
                {
                    "far_target": float(target),
                    "threshold": op.threshold,
                    "dir": dir_,
                    "far": op.far,
                    "far_attainable": op.attainable,
                    "far_resolution": op.far_resolution,
                }
            )
            if not op.attainable:
                notes.append(
                    f"FAR target {target:g} is below 1/{n_unknown} unknown probes: DIR is "
                    f"reported at FAR = 0."
                )
    return IdentificationReport(
        n_gallery_identities=int(ids.size),
        n_gallery_images=int(len(gallery_ids)),
        n_probes=int(probes.shape[0]),
        n_unknown=n_unknown,
        metric=metric,
        rank=rank,
        cmc=cmc,
        open_set=open_set,
        notes=notes,
    )
