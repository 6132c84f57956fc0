"""Verification metrics against hand-computed cases, brute-force oracles and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from facenet.eval.verification import (
    auc,
    best_accuracy_threshold,
    calibrate_thresholds,
    equal_error_rate,
    evaluate_verification,
    far_key,
    make_folds,
    roc_curve,
    threshold_at_far,
)

# Hand case: same pairs at 0.1, 0.2, 0.4; different pairs at 0.3, 0.5, 0.6.
D = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
Y = np.array([True, True, False, True, False, False])


def test_roc_hand_case():
    roc = roc_curve(D, Y)
    assert np.allclose(roc["tar"], [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert np.allclose(roc["far"], [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert roc["thresholds"][0] == -np.inf
    # 8 of the 9 (same, different) pairs are ordered correctly
    assert auc(roc["far"], roc["tar"]) == pytest.approx(8 / 9)


def test_best_accuracy_hand_case_takes_first_maximiser_midpoint():
    t, acc = best_accuracy_threshold(D, Y)
    assert acc == pytest.approx(5 / 6)
    assert t == pytest.approx(0.25)  # 0.2 and 0.4 tie at 5/6; first one, halfway to 0.3


def test_val_at_far_hand_case():
    op = threshold_at_far(D, Y, far_target=1 / 3)
    assert op.threshold == pytest.approx(0.45)
    assert op.val == pytest.approx(1.0) and op.far == pytest.approx(1 / 3)
    assert op.attainable and op.far_resolution == pytest.approx(1 / 3)


def test_val_at_far_below_resolution_is_reported_at_far_zero():
    """Target 0.1 < 1/3: the only attainable FAR is 0; VAL is taken there and flagged."""
    op = threshold_at_far(D, Y, far_target=0.1)
    assert not op.attainable
    assert op.far == 0.0
    assert op.val == pytest.approx(2 / 3)  # same pairs below the smallest different (0.3)
    assert op.threshold == pytest.approx(0.25)
    rep = evaluate_verification(D, Y, folds=np.array([0, 0, 0, 1, 1, 1]), far_target=0.1)
    assert not rep.far_attainable and rep.far == 0.0 and rep.val == pytest.approx(2 / 3)
    assert any("below the smallest non-zero FAR" in n for n in rep.notes)


def test_val_at_far_with_tied_different_distances_never_exceeds_target():
    d = np.array([0.2, 0.5, 0.5, 0.5, 0.5])
    y = np.array([True, True, False, False, False])
    op = threshold_at_far(d, y, far_target=0.34)  # one false accept allowed, but 3 are tied
    assert op.far == 0.0 and op.val == pytest.approx(0.5)
    assert op.threshold < 0.5


def test_val_at_far_zero_target_and_full_target():
    assert threshold_at_far(D, Y, 0.0).attainable
    full = threshold_at_far(D, Y, 1.0)
    assert full.val == 1.0 and full.far == 1.0


def test_eer_hand_case():
    eer, thr = equal_error_rate(roc_curve(D, Y))
    assert eer == pytest.approx(1 / 3) and thr == pytest.approx(0.3)


def test_eer_interpolates_between_points():
    d = np.array([0.1, 0.2, 0.3, 0.4])
    y = np.array([True, False, True, False])
    # far: 0, 0, .5, .5, 1; frr: 1, .5, .5, 0, 0 -> crossing at FAR = FRR = 0.5
    eer, _ = equal_error_rate(roc_curve(d, y))
    assert eer == pytest.approx(0.5)


def random_case(seed: int, n: int = 400, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    d = rng.normal(1.0 + 0.6 * (~y), 0.35)
    if ties:
        d = np.round(d, 1)  # many ties
    return d, y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_sklearn(seed, ties):
    d, y = random_case(seed, ties=ties)
    roc = roc_curve(d, y)
    fpr, tpr, thr = sk_roc_curve(y, -d, drop_intermediate=False)
    np.testing.assert_allclose(roc["far"], fpr)
    np.testing.assert_allclose(roc["tar"], tpr)
    np.testing.assert_allclose(roc["thresholds"][1:], -thr[1:])
    assert auc(roc["far"], roc["tar"]) == pytest.approx(roc_auc_score(y, -d), abs=1e-12)
    rep = evaluate_verification(d, y)
    assert rep.auc == pytest.approx(roc_auc_score(y, -d), abs=1e-12)


def oracle_val_at_far(d, y, target):
    """Brute force: the best VAL over every threshold whose FAR is within the target."""
    best = (0.0, 0.0)
    for t in np.r_[-np.inf, np.unique(d)]:
        far = np.mean(d[~y] <= t)
        if far <= target + 1e-12:
            best = max(best, (np.mean(d[y] <= t), far))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("target", [1e-3, 1e-2, 0.05, 0.3])
def test_val_at_far_matches_brute_force(seed, target):
    d, y = random_case(seed, n=300, ties=seed % 2 == 0)
    op = threshold_at_far(d, y, target)
    val, far = oracle_val_at_far(d, y, target)
    assert op.val == pytest.approx(val) and op.far == pytest.approx(far)
    assert op.far <= target or not op.attainable
    assert op.attainable == (target >= 1 / (~y).sum())


def oracle_kfold(d, y, folds):
    """Slow, obvious k-fold accuracy with the documented threshold rule."""
    accs = []
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        cands = np.unique(d[tr])
        scored = [(-np.inf, np.mean(~y[tr]))]  # accept nothing
        for t in cands:
            scored.append((t, np.mean((d[tr] <= t) == y[tr])))
        best_acc = max(a for _, a in scored)
        i = next(i for i, (_, a) in enumerate(scored) if a == best_acc)
        if i == 0:
            thr = np.nextafter(cands[0], -np.inf)
        elif i == len(scored) - 1:
            thr = cands[-1]
        else:
            thr = (cands[i - 1] + cands[i]) / 2
        accs.append(np.mean((d[te] <= thr) == y[te]))
    return np.mean(accs), np.std(accs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kfold_accuracy_matches_oracle(seed):
    d, y = random_case(seed, n=300, ties=seed == 1)
    folds = np.repeat(np.arange(10), 30)
    rep = evaluate_verification(d, y, folds)
    acc, std = oracle_kfold(d, y, folds)
    assert rep.accuracy == pytest.approx(acc) and rep.accuracy_std == pytest.approx(std)
    assert rep.n_folds == 10 and len(rep.fold_accuracies) == 10


def test_kfold_val_uses_threshold_from_other_folds():
    d, y = random_case(5, n=400, ties=False)
    folds = np.repeat(np.arange(4), 100)
    rep = evaluate_verification(d, y, folds, far_target=0.05)
    for f in range(4):
        tr, te = folds != f, folds == f
        op = threshold_at_far(d[tr], y[tr], 0.05)
        assert rep.fold_vals[f] == pytest.approx(np.mean(d[te & y] <= op.threshold))
        assert rep.fold_fars[f] == pytest.approx(np.mean(d[te & ~y] <= op.threshold))


def test_perfect_separation():
    d = np.r_[np.linspace(0.1, 0.5, 50), np.linspace(1.0, 2.0, 50)]
    y = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    rep = evaluate_verification(d, y, folds=5)
    assert rep.accuracy == 1.0 and rep.auc == 1.0 and rep.eer == 0.0 and rep.val == 1.0
    assert 0.5 < rep.threshold_accuracy < 1.0


def test_calibrate_thresholds_keys_and_values():
    d, y = random_case(7, n=2000, ties=False)
    th = calibrate_thresholds(d, y, far_target=1e-2)
    assert set(th) == {"accuracy", "far_1e-2"}
    assert np.mean(d[~y] <= th["far_1e-2"]) <= 1e-2
    assert th["accuracy"] == pytest.approx(best_accuracy_threshold(d, y)[0])


def test_far_key():
    assert far_key(1e-3) == "far_1e-3" and far_key(5e-4) == "far_5e-4"
    assert far_key(0.01) == "far_1e-2" and far_key(0.0015) == "far_0.0015"


def test_make_folds_int_is_seeded_and_even():
    a, b = make_folds(103, 10, seed=4), make_folds(103, 10, seed=4)
    assert np.array_equal(a, b) and sorted(set(np.bincount(a).tolist())) == [10, 11]


def test_report_to_dict_is_json_ready():
    import json

    rep = evaluate_verification(D, Y, folds=np.array([0, 0, 0, 1, 1, 1]))
    d = rep.to_dict()
    json.dumps(d)
    assert d["roc"]["thresholds"][0] is None and "accuracy_std" in d
    assert "roc" not in rep.to_dict(include_roc=False)
    assert "accuracy" in rep.summary()


@pytest.mark.parametrize(
    ("d", "y", "match"),
    [
        (np.array([0.1, np.nan]), np.array([True, False]), "NaN"),
        (np.array([0.1, 0.2]), np.array([True, True]), "both same"),
        (np.array([0.1, 0.2, 0.3]), np.array([True, False]), "differ in length"),
    ],
)
def test_bad_inputs(d, y, match):
    with pytest.raises(ValueError, match=match):
        evaluate_verification(d, y, folds=2)


def test_single_class_folds_are_flagged_not_inf():
    d, y = random_case(2, n=200, ties=False)
    order = np.argsort(~y, kind="stable")  # all same pairs first: blocks hold one class
    d, y = d[order], y[order]
    rep = evaluate_verification(d, y, np.repeat(np.arange(4), 50))
    assert any("only one class" in n for n in rep.notes)
    assert np.isfinite(rep.fold_far_resolution) and np.isfinite(rep.val_mean)
