"""Face verification metrics: the LFW k-fold protocol, VAL@FAR, ROC, AUC, EER, thresholds.

Convention: a pair is accepted as *same person* when its distance ``D <= threshold`` (smaller =
more alike), for squared-L2 and cosine distances alike.

Definitions (SPEC §6, the paper's):
    VAL(d) = |same pairs with D <= d| / |same pairs|         (true accept rate)
    FAR(d) = |different pairs with D <= d| / |different pairs| (false accept rate)

VAL at a target FAR uses the **largest** threshold d with ``FAR(d) <= target``: with n_diff
different pairs, at most ``k = floor(target * n_diff)`` of them may be accepted, so d lies just
below the (k+1)-th smallest different-pair distance. When ``target < 1 / n_diff`` (k = 0) the data
cannot resolve the target: the only attainable FAR at or below it is 0, VAL is reported at
FAR = 0 and ``far_attainable`` is False with a note -- never interpolated or extrapolated. (The
copied LFW routine of the well-known ports interpolates a FAR->threshold curve and silently
returns threshold 0 in that case.) The FAR actually achieved is always reported beside VAL.

Accuracy-optimal threshold: among the n+1 ways to split the sorted distances, the first that
maximises accuracy; the threshold is placed halfway to the next distinct distance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DEFAULT_FAR = 1e-3  # why: the paper reports VAL at FAR = 1e-3
DEFAULT_FOLDS = 10  # why: LFW's 10-fold protocol
_EPS = 1e-9  # float slack when turning target * n into a count


def far_key(far_target: float) -> str:
    """Threshold-dict key for a FAR target: 1e-3 -> ``"far_1e-3"``, 5e-4 -> ``"far_5e-4"``."""
    mantissa, exponent = f"{far_target:.0e}".split("e")
    if float(f"{mantissa}e{exponent}") != far_target:  # not a one-digit mantissa: keep it exact
        return f"far_{far_target:g}"
    return f"far_{mantissa}e{int(exponent)}"


def _check(distances: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64).ravel()
    y = np.asarray(issame).ravel()
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("issame must be boolean (or 0/1)")
        y = y.astype(bool)
    if d.shape != y.shape:
        raise ValueError(f"distances {d.shape} and issame {y.shape} differ in length")
    if d.size == 0:
        raise ValueError("no pairs")
    if not np.isfinite(d).all():
        raise ValueError(f"{int((~np.isfinite(d)).sum())} distance(s) are NaN or infinite")
    return d, y


def roc_curve(distances: np.ndarray, issame: np.ndarray) -> dict[str, np.ndarray]:
    """The ROC, one point per distinct distance plus the accept-nothing start.

    Args:
        distances: (N,) pair distances.
        issame: (N,) bool.

    Returns:
        ``{"far": (M+1,), "tar": (M+1,), "thresholds": (M+1,)}`` with M distinct distances;
        point i accepts ``D <= thresholds[i]``; ``thresholds[0] = -inf`` (FAR = TAR = 0).
        Equals scikit-learn's ``roc_curve(issame, -distances, drop_intermediate=False)``.
    """
    d, y = _check(distances, issame)
    n_same, n_diff = int(y.sum()), int((~y).sum())
    order = np.argsort(d, kind="stable")
    ds, ys = d[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ds)), ds.size - 1]  # last index of each distinct value
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    tar = np.r_[0.0, tp / n_same] if n_same else np.full(last.size + 1, np.nan)
    far = np.r_[0.0, fp / n_diff] if n_diff else np.full(last.size + 1, np.nan)
    return {"far": far, "tar": tar, "thresholds": np.r_[-np.inf, ds[last]]}


def auc(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under the ROC by the trapezoid rule (ties count as diagonal steps, as sklearn)."""
    far, tar = np.asarray(far, dtype=np.float64), np.asarray(tar, dtype=np.float64)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def equal_error_rate(roc: dict[str, np.ndarray]) -> tuple[float, float]:
    """(EER, threshold) where FAR = FRR = 1 - TAR, linearly interpolated between ROC points.

    The ROC is a step curve on finite data; the EER is the conventional linear interpolation
    between the last point with FAR < FRR and the first with FAR >= FRR.
    """
    far, frr, thr = roc["far"], 1.0 - roc["tar"], roc["thresholds"]
    gap = far - frr  # -1 at the start, +1 at the end, non-decreasing
    i = int(np.argmax(gap >= 0))
    if i == 0 or gap[i] == 0:
        return float(far[i]), float(
            thr[i] if np.isfinite(thr[i]) else thr[min(i + 1, thr.size - 1)]
        )
    w = gap[i - 1] / (gap[i - 1] - gap[i])  # in (0, 1]
    eer = far[i - 1] + w * (far[i] - far[i - 1])
    lo = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    return float(eer), float(lo + w * (thr[i] - lo))


def best_accuracy_threshold(distances: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of ``D <= threshold`` on these pairs.

    All n+1 splits of the sorted distances are scored in O(n log n); the first maximiser wins
    and the threshold sits halfway between its distance and the next distinct one.
    """
    d, y = _check(distances, issame)
    order = np.argsort(d, kind="stable")
    ds, ys = d[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ds)), ds.size - 1]  # last index of each distinct value
    tp = np.r_[0, np.cumsum(ys)[last]]  # integer counts: exact ties between candidates
    fp = np.r_[0, np.cumsum(~ys)[last]]
    correct = tp + (int((~y).sum()) - fp)  # (M+1,) correctly classified pairs
    k = int(np.argmax(correct))
    thr = np.r_[-np.inf, ds[last]]
    if k == 0:
        threshold = float(np.nextafter(thr[1], -np.inf))  # below every distance: accept none
    elif k == thr.size - 1:
        threshold = float(thr[k])
    else:
        threshold = float((thr[k] + thr[k + 1]) / 2)
        if not threshold < thr[k + 1]:  # adjacent floats: the midpoint rounded up
            threshold = float(thr[k])
    return threshold, float(correct[k] / d.size)


@dataclass(frozen=True)
class FarOperatingPoint:
    """The operating point for a FAR target on one set of pairs."""

    far_target: float
    threshold: float  # accept D <= threshold
    val: float  # VAL at threshold (nan without same pairs)
    far: float  # FAR achieved at threshold (<= far_target unless nothing attainable)
    far_resolution: float  # 1 / n_diff: the smallest non-zero FAR these pairs can show
    attainable: bool  # False when far_target < far_resolution (VAL is then VAL at FAR = 0)


def threshold_at_far(
    distances: np.ndarray, issame: np.ndarray, far_target: float = DEFAULT_FAR
) -> FarOperatingPoint:
    """The largest threshold whose FAR is at most ``far_target``, with VAL and FAR there.

    Args:
        distances: (N,) pair distances.
        issame: (N,) bool; needs at least one different pair.
        far_target: in [0, 1].
    """
    d, y = _check(distances, issame)
    if not 0 <= far_target <= 1:
        raise ValueError(f"far_target must be in [0, 1], got {far_target}")
    diff = np.sort(d[~y])
    n_diff = diff.size
    if n_diff == 0:
        raise ValueError("VAL@FAR needs at least one different-person pair")
    k = math.floor(far_target * n_diff + _EPS)  # different pairs we may accept
    if k >= n_diff:
        threshold = float(d.max())
    else:
        s = diff[k]  # the (k+1)-th smallest different distance must stay rejected
        below = d[d < s]
        threshold = float((below.max() + s) / 2) if below.size else float(np.nextafter(s, -np.inf))
        if not threshold < s:  # midpoint rounded up onto s (adjacent floats)
            threshold = float(below.max())
    same = d[y]
    return FarOperatingPoint(
        far_target=float(far_target),
        threshold=threshold,
        val=float(np.mean(same <= threshold)) if same.size else float("nan"),
        far=float(np.mean(diff <= threshold)),
        far_resolution=1.0 / n_diff,
        attainable=k >= 1 or far_target == 0,
    )


def calibrate_thresholds(
    distances: np.ndarray, issame: np.ndarray, far_target: float = DEFAULT_FAR
) -> dict[str, float]:
    """Operating thresholds fitted on all given pairs, to ship with a model.

    Returns:
        ``{"accuracy": t_acc, "far_1e-3": t_far}`` (key from ``far_key(far_target)``); accept a
        pair when its distance is ``<=`` the threshold.
    """
    t_acc, _ = best_accuracy_threshold(distances, issame)
    op = threshold_at_far(distances, issame, far_target)
    return {"accuracy": t_acc, far_key(far_target): op.threshold}


def make_folds(n: int, folds: np.ndarray | int = DEFAULT_FOLDS, seed: int = 0) -> np.ndarray:
    """(N,) fold ids: given ids are checked; an int k makes a seeded random k-way split."""
    if isinstance(folds, (int, np.integer)):
        k = int(folds)
        if not 2 <= k <= n:
            raise ValueError(
                f"only {n} pairs to evaluate, and {k}-fold evaluation needs at least {k} "
                "(and folds >= 2): use a pairs file with more pairs, or check that its images "
                "are there and readable"
                if n < k
                else f"need 2 <= folds <= number of pairs ({n}), got {k}"
            )
        ids = np.empty(n, dtype=np.int64)
        for f, idx in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), k)):
            ids[idx] = f
        return ids
    ids = np.asarray(folds).ravel()
    if ids.shape != (n,):
        raise ValueError(f"folds must be an int or (N,) = ({n},) fold ids, got shape {ids.shape}")
    if np.unique(ids).size < 2:
        raise ValueError("need at least two folds")
    return ids


@dataclass(frozen=True)
class VerificationReport:
    """Everything the verification protocol measures. Accuracy/VAL figures are fractions."""

    n_pairs: int
    n_same: int
    n_different: int
    n_folds: int
    # k-fold accuracy: threshold chosen on the other folds, accuracy on the held-out fold
    accuracy: float  # mean over folds
    accuracy_std: float  # population std over folds (ddof=0, as the LFW literature reports)
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    # VAL@FAR on all pairs (one threshold fitted on all pairs; SPEC §6 definitions)
    far_target: float
    val: float
    far: float  # FAR actually achieved
    threshold_far: float
    far_attainable: bool  # False: far_target < 1/n_different, VAL is at FAR = 0
    far_resolution: float  # 1 / n_different
    # VAL@FAR k-fold: threshold from the other folds' pairs, VAL/FAR on the held-out fold
    val_mean: float
    val_std: float
    far_mean: float
    fold_vals: list[float]
    fold_fars: list[float]
    fold_far_resolution: float  # 1 / smallest held-out n_different (test-fold FAR granularity)
    # threshold-free
    auc: float
    eer: float
    eer_threshold: float
    # thresholds fitted on all pairs (to ship with a model)
    threshold_accuracy: float
    thresholds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    roc: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self, include_roc: bool = True) -> dict[str, Any]:
        """JSON-ready dict (ROC as lists; -inf threshold written as null)."""
        d = asdict(self)
        roc = d.pop("roc")
        if include_roc and roc:
            d["roc"] = {
                k: [None if not np.isfinite(v) else float(v) for v in np.asarray(a)]
                for k, a in roc.items()
            }
        return d

    def summary(self) -> str:
        flag = "" if self.far_attainable else " (target below resolution: FAR=0)"
        return (
            f"accuracy {100 * self.accuracy:.2f}% ± {100 * self.accuracy_std:.2f} "
            f"({self.n_folds} folds, {self.n_pairs} pairs); "
            f"VAL {100 * self.val:.2f}% @ FAR {self.far:.2e} (target {self.far_target:g}){flag}; "
            f"AUC {self.auc:.4f}; EER {100 * self.eer:.2f}%"
        )


def evaluate_verification(
    distances: np.ndarray,
    issame: np.ndarray,
    folds: np.ndarray | int = DEFAULT_FOLDS,
    far_target: float = DEFAULT_FAR,
    seed: int = 0,
) -> VerificationReport:
    """Run the verification protocol on pair distances.

    Args:
        distances: (N,) pair distances (smaller = more alike).
        issame: (N,) bool.
        folds: (N,) fold id of each pair (e.g. ``read_pairs(...).folds``), or an int k for a
            seeded random k-fold split.
        far_target: FAR for VAL@FAR and the FAR-calibrated threshold.
        seed: seed of the random split when ``folds`` is an int.

    Returns:
        ``VerificationReport``.
    """
    d, y = _check(distances, issame)
    n_same, n_diff = int(y.sum()), int((~y).sum())
    if n_same == 0 or n_diff == 0:
        raise ValueError(f"need both same ({n_same}) and different ({n_diff}) pairs")
    ids = make_folds(d.size, folds, seed)
    fold_values = np.unique(ids)
    accs, thrs, vals, fars, test_diffs = [], [], [], [], []
    for f in fold_values:
        test = ids == f
        train = ~test
        t, _ = best_accuracy_threshold(d[train], y[train])
        thrs.append(t)
        accs.append(float(np.mean((d[test] <= t) == y[test])))
        op = threshold_at_far(d[train], y[train], far_target)
        same_t, diff_t = d[test & y], d[test & ~y]
        vals.append(float(np.mean(same_t <= op.threshold)) if same_t.size else float("nan"))
        fars.append(float(np.mean(diff_t <= op.threshold)) if diff_t.size else float("nan"))
        test_diffs.append(diff_t.size)

    pooled = threshold_at_far(d, y, far_target)
    roc = roc_curve(d, y)
    eer, eer_thr = equal_error_rate(roc)
    t_acc, _ = best_accuracy_threshold(d, y)
    with_diff = [n for n in test_diffs if n > 0]
    fold_res = 1.0 / min(with_diff) if with_diff else float("nan")
    notes = []
    lopsided = [int(f) + 1 for f in fold_values if not (y[ids == f].any() and (~y[ids == f]).any())]
    if lopsided:
        notes.append(
            f"Fold(s) {', '.join(map(str, lopsided))} hold only one class of pairs: their "
            f"accuracy is still defined, their per-fold VAL or FAR is not (left out of the means)."
        )
    if not pooled.attainable:
        notes.append(
            f"FAR target {far_target:g} is below the smallest non-zero FAR these pairs can show "
            f"(1/{n_diff} = {pooled.far_resolution:.2e}); VAL is reported at FAR = 0 "
            f"(the strictest threshold), not extrapolated."
        )
    if with_diff and fold_res > far_target:
        notes.append(
            f"Per-fold VAL@FAR: the smallest held-out fold has {min(with_diff)} different pairs, "
            f"so its measured FAR is 0 or >= {fold_res:.2e}; the threshold is fitted on the "
            f"other folds at FAR <= {far_target:g}."
        )
    return VerificationReport(
        n_pairs=int(d.size),
        n_same=n_same,
        n_different=n_diff,
        n_folds=int(fold_values.size),
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        fold_accuracies=accs,
        fold_thresholds=thrs,
        far_target=float(far_target),
        val=pooled.val,
        far=pooled.far,
        threshold_far=pooled.threshold,
        far_attainable=pooled.attainable,
        far_resolution=pooled.far_resolution,
        val_mean=float(np.nanmean(vals)),
        val_std=float(np.nanstd(vals)),
        far_mean=float(np.nanmean(fars)),
        fold_vals=vals,
        fold_fars=fars,
        fold_far_resolution=fold_res,
        auc=auc(roc["far"], roc["tar"]),
        eer=eer,
        eer_threshold=eer_thr,
        threshold_accuracy=t_acc,
        thresholds={"accuracy": t_acc, far_key(far_target): pooled.threshold},
        notes=notes,
        roc=roc,
    )
