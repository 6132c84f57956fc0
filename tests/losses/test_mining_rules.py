"""Every mining rule against the brute-force oracles in ``_mining_oracle``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _mining_oracle import (
    closest,
    expected_batch_all,
    expected_batch_hard,
    negatives,
    positive_pairs,
    semi_hard_candidates,
    violating_candidates,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facenet.losses import RULES, Triplets, mine_triplets, pairwise_squared_distances, sorted_search

MARGINS = (0.0, 0.2, 1.0)


def random_batch(seed: int, batch: int, classes: int, dtype=torch.float32, dim: int = 4):
    """Random unit embeddings (low dim, so distances spread over [0, 4]) and random labels."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=1).to(dtype)
    labels = torch.randint(0, classes, (batch,), generator=g)
    return pairwise_squared_distances(x), labels


def tie_matrix(seed: int, batch: int, classes: int):
    """Symmetric distances on a grid of 0.1 (many exact ties, boundary hits for margin 0.2)."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randint(0, 8, (batch, batch), generator=g).double() * 0.1
    sq = torch.triu(steps, diagonal=1)
    sq = sq + sq.T
    labels = torch.randint(0, classes, (batch,), generator=g)
    return sq, labels


def duplicated_batch(seed: int):
    """Embeddings repeated within an identity *and* across identities (distance exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    base = F.normalize(torch.randn(5, 3, generator=g), dim=1)
    x = base[torch.tensor([0, 0, 1, 1, 1, 2, 0, 3, 3, 4, 2, 4])]
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 1])
    return pairwise_squared_distances(x), labels


def cases():
    one = F.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(3)), dim=1)
    single = F.normalize(torch.randn(7, 3, generator=torch.Generator().manual_seed(4)), dim=1)
    return {
        "random-f32": random_batch(0, 13, 3),
        "random-f64": random_batch(1, 16, 4, dtype=torch.float64),
        "random-balanced": (
            random_batch(2, 12, 1)[0],
            torch.arange(4).repeat_interleave(3),
        ),
        "ties": tie_matrix(5, 14, 3),
        "ties-f32": tuple(t.float() if t.is_floating_point() else t for t in tie_matrix(6, 12, 2)),
        "one-identity": (pairwise_squared_distances(one), torch.zeros(6, dtype=torch.long)),
        "singletons": (pairwise_squared_distances(single), torch.arange(7)),
        "duplicates": duplicated_batch(7),
        "one-sample": (torch.zeros(1, 1), torch.tensor([4])),
        "empty": (torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)),
    }


CASES = cases()


def as_list(triplets: Triplets) -> list[tuple[int, int, int]]:
    return list(zip(*(t.tolist() for t in triplets), strict=True))


def check_rule(rule: str, sq: torch.Tensor, labels_t: torch.Tensor, margin: float, out: Triplets):
    """Assert the rule's inequality for every triplet and its exact coverage."""
    labels = labels_t.tolist()
    got = as_list(out)
    pairs = positive_pairs(labels)
    for t in (out.anchor, out.positive, out.negative):
        assert t.dtype == torch.long
    assert len(out) == len(got)
    for a, p, n in got:
        assert labels[a] == labels[p] and a != p and labels[n] != labels[a]

    if rule in ("semi_hard", "semi_hard_hardest", "random_violating"):
        candidates = semi_hard_candidates if rule.startswith("semi_hard") else violating_candidates
        covered = [(a, p) for a, p in pairs if candidates(sq, labels, a, p, margin)]
        # Coverage: each pair that has a candidate appears exactly once, in anchor-major order.
        assert [(a, p) for a, p, _ in got] == covered
        assert out.num_pairs == len(pairs)
        assert out.pairs_without_negative == len(pairs) - len(covered)
        for a, p, n in got:
            d_ap, d_an, t = float(sq[a, p]), float(sq[a, n]), float(sq[a, p] + margin)
            if rule.startswith("semi_hard"):
                assert d_ap < d_an < t  # the paper's semi-hard inequality
            else:
                assert d_an < t  # violates the margin
            assert n in candidates(sq, labels, a, p, margin)
            if rule == "semi_hard_hardest":
                assert n == closest(sq, a, candidates(sq, labels, a, p, margin))
    elif rule == "hardest_negative":
        expected = [
            (a, p, closest(sq, a, negatives(labels, a))) for a, p in pairs if negatives(labels, a)
        ]
        assert got == expected
        assert out.num_pairs == len(pairs)
        assert out.pairs_without_negative == len(pairs) - len(expected)
    elif rule == "batch_hard":
        assert got == expected_batch_hard(sq, labels)
        with_pos = sum(1 for a in range(len(labels)) if labels.count(labels[a]) > 1)
        assert out.num_pairs == with_pos
        assert out.pairs_without_negative == with_pos - len(got)
    elif rule == "batch_all":
        expected = expected_batch_all(sq, labels, margin)
        assert sorted(got) == sorted(expected)
        assert len(set(got)) == len(got)
        for a, p, n in got:
            assert float(sq[a, n]) < float(sq[a, p] + margin)  # positive loss
        assert out.num_pairs == len(pairs)
        covered = {(a, p) for a, p, _ in expected}
        assert out.pairs_without_negative == len(pairs) - len(covered)
    else:  # pragma: no cover - a new rule must get a check here
        raise AssertionError(f"no oracle for rule {rule}")


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("case", list(CASES))
def test_rule_matches_oracle(rule: str, margin: float, case: str):
    sq, labels = CASES[case]
    out = mine_triplets(sq, labels, rule, margin, torch.Generator().manual_seed(11))
    check_rule(rule, sq, labels, margin, out)


@pytest.mark.parametrize("rule", ["semi_hard", "semi_hard_hardest", "batch_all"])
@pytest.mark.parametrize("margin", [0.1, 0.2, 0.3])
def test_margin_boundaries_on_grid(rule: str, margin: float):
    """Distances on a 0.1 grid put many negatives exactly at d(a, p) or d(a, p) + margin."""
    sq, labels = tie_matrix(21, 16, 3)
    check_rule(rule, sq, labels, margin, mine_triplets(sq, labels, rule, margin))


def test_margin_zero_has_no_semi_hard_negatives():
    sq, labels = CASES["random-f64"]
    out = mine_triplets(sq, labels, "semi_hard", margin=0.0)
    assert len(out) == 0
    assert out.pairs_without_negative == out.num_pairs == len(positive_pairs(labels.tolist())) > 0


def test_semi_hard_pair_without_negative_is_dropped_and_counted():
    # anchor 0, positive 1 at distance 0.5; negatives at 0.3 (hard) and 0.9 (easy for margin 0.2):
    # pair (0, 1) has no semi-hard negative. Pair (1, 0) has d = 0.5 and negative 3 at 0.6.
    sq = torch.tensor(
        [
            [0.0, 0.5, 0.3, 0.9],
            [0.5, 0.0, 1.2, 0.6],
            [0.3, 1.2, 0.0, 1.0],
            [0.9, 0.6, 1.0, 0.0],
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 0, 1, 2])
    out = mine_triplets(sq, labels, "semi_hard", margin=0.2)
    assert as_list(out) == [(1, 0, 3)]
    assert out.num_pairs == 2 and out.pairs_without_negative == 1
    # The TF-port rule keeps the pair, with the hard negative 2 (d = 0.3 < 0.5 + 0.2).
    assert as_list(mine_triplets(sq, labels, "random_violating", 0.2)) == [(0, 1, 2), (1, 0, 3)]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_result_does_not_depend_on_chunk_size(rule: str, dtype: torch.dtype):
    sq, labels = random_batch(8, 37, 5, dtype=dtype)
    ref = mine_triplets(sq, labels, rule, 0.5, torch.Generator().manual_seed(3))
    for chunk in (1, 2, 7, 36, 100):
        out = mine_triplets(
            sq, labels, rule, 0.5, torch.Generator().manual_seed(3), chunk_size=chunk
        )
        assert as_list(out) == as_list(ref)
        assert (out.num_pairs, out.pairs_without_negative) == (
            ref.num_pairs,
            ref.pairs_without_negative,
        )


@pytest.mark.parametrize("rule", ["semi_hard", "random_violating"])
def test_random_rules_are_seeded_and_uniform(rule: str):
    # Pair (0, 1) at d = 0.5; five negatives strictly inside (0.5, 0.7) -> each semi-hard.
    d = torch.tensor([0.0, 0.5, 0.55, 0.58, 0.6, 0.62, 0.66], dtype=torch.float64)
    sq = (d[:, None] - d[None, :]).abs()  # a line: row 0 is exactly d
    labels = torch.tensor([0, 0, 1, 2, 3, 4, 5])
    a = mine_triplets(sq, labels, rule, 0.2, torch.Generator().manual_seed(5))
    b = mine_triplets(sq, labels, rule, 0.2, torch.Generator().manual_seed(5))
    assert as_list(a) == as_list(b)
    counts = dict.fromkeys(range(2, 7), 0)
    g = torch.Generator().manual_seed(17)
    for _ in range(500):
        first = as_list(mine_triplets(sq, labels, rule, 0.2, g))[0]
        assert first[:2] == (0, 1)
        counts[first[2]] += 1
    # Uniform over 5 candidates: expected 100 each, standard deviation ~9.
    assert all(60 <= c <= 140 for c in counts.values()), counts


def test_paper_scale_batch_runs_and_satisfies_rule():
    """B = 1,800 (45 identities x 40 images), vectorised checks of the semi-hard guarantees."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(45).repeat_interleave(40)
    centres = torch.randn(45, 128, generator=g)
    x = F.normalize(centres[labels] + 1.1 * torch.randn(1800, 128, generator=g), dim=1)
    sq = pairwise_squared_distances(x)
    out = mine_triplets(sq, labels, "semi_hard", 0.2, torch.Generator().manual_seed(1))
    a, p, n = out
    assert out.num_pairs == 1800 * 39
    assert len(out) + out.pairs_without_negative == out.num_pairs
    assert len(out) > 1000
    assert bool(
        (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all() and (a != p).all()
    )
    assert bool((sq[a, p] < sq[a, n]).all() and (sq[a, n] < sq[a, p] + 0.2).all())
    assert torch.unique(a * 1800 + p).numel() == len(out)  # each pair at most once
    # Pairs left out really have no semi-hard negative (checked on a sample of anchors).
    covered = set((a * 1800 + p).tolist())
    for anchor in range(0, 1800, 97):
        neg = labels != labels[anchor]
        for pos in torch.nonzero(labels == labels[anchor]).flatten().tolist():
            if pos == anchor:
                continue
            d_ap = sq[anchor, pos]
            window = neg & (sq[anchor] > d_ap) & (sq[anchor] < d_ap + 0.2)
            assert bool(window.any()) == ((anchor * 1800 + pos) in covered)


def test_unknown_rule_lists_valid_rules():
    sq, labels = CASES["random-f32"]
    with pytest.raises(ValueError) as err:
        mine_triplets(sq, labels, "semihard")
    for rule in RULES:
        assert rule in str(err.value)


@pytest.mark.parametrize(
    ("sq", "labels", "margin", "message"),
    [
        (torch.zeros(3, 4), [0, 0, 1], 0.2, "square"),
        (torch.zeros(3, 3), [0, 0], 0.2, "labels"),
        (torch.zeros(3, 3), [0.0, 1.0, 1.0], 0.2, "integers"),
        (torch.zeros(3, 3), [0, 0, 1], -0.1, "margin"),
        (torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), [0, 1], 0.2, "NaN"),
        (torch.tensor([[0.0, -1.0], [-1.0, 0.0]]), [0, 1], 0.2, "negative"),
        (torch.zeros(2, 2, dtype=torch.long), [0, 1], 0.2, "floating"),
    ],
)
def test_bad_inputs_raise_clear_errors(sq, labels, margin, message):
    with pytest.raises((ValueError, TypeError), match=message):
        mine_triplets(sq, labels, "semi_hard", margin)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=18),
    seed=st.integers(0, 2**16),
    margin=st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0, 3.0]),
    rule=st.sampled_from(RULES),
    double=st.booleans(),
    dim=st.integers(1, 6),
)
def test_property_rules_hold_for_random_batches(labels, seed, margin, rule, double, dim):
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64 if double else torch.float32
    x = F.normalize(torch.randn(len(labels), dim, generator=g, dtype=dtype), dim=1)
    if len(labels) > 2:  # duplicate a row to exercise exact zero distances
        x[1] = x[0]
    sq = pairwise_squared_distances(x)
    labels_t = torch.tensor(labels)
    out = mine_triplets(sq, labels_t, rule, margin, torch.Generator().manual_seed(seed))
    check_rule(rule, sq, labels_t, margin, out)
    chunked = mine_triplets(
        sq, labels_t, rule, margin, torch.Generator().manual_seed(seed), chunk_size=2
    )
    assert as_list(chunked) == as_list(out)


@pytest.mark.parametrize("rule", RULES)
def test_pure_torch_path_used_on_gpus_matches(rule: str, monkeypatch):
    """The GPU code path (torch sort / searchsorted / repeat_interleave), exercised on CPU."""
    inputs = [CASES["random-f32"], CASES["ties-f32"], CASES["duplicates"], random_batch(9, 40, 6)]
    numpy_results = [
        as_list(mine_triplets(sq, lab, rule, 0.2, torch.Generator().manual_seed(1), chunk_size=7))
        for sq, lab in inputs
    ]
    monkeypatch.setattr(sorted_search, "_NUMPY_ON_CPU", False)
    for (sq, labels), expected in zip(inputs, numpy_results, strict=True):
        out = mine_triplets(sq, labels, rule, 0.2, torch.Generator().manual_seed(1), chunk_size=7)
        check_rule(rule, sq, labels, 0.2, out)
        assert as_list(out) == expected
