"""Triplet loss value, gradients and statistics against explicit loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _mining_oracle import loop_triplet_loss
from hypothesis import given, settings
from hypothesis import strategies as st

from facenet.losses import (
    RULES,
    Triplets,
    mine_triplets,
    pairwise_squared_distances,
    triplet_loss,
    triplet_margin_loss,
)


def batch(seed: int, n: int = 14, classes: int = 3, dim: int = 5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=1)
    return x, torch.randint(0, classes, (n,), generator=g)


def triplet_list(t: Triplets) -> list[tuple[int, int, int]]:
    return list(zip(*(v.tolist() for v in t), strict=True))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("margin", [0.0, 0.2, 1.0])
def test_loss_and_gradients_match_loop(rule: str, margin: float):
    x0, labels = batch(0)
    x = x0.clone().requires_grad_()
    out = triplet_loss(x, labels, rule, margin, torch.Generator().manual_seed(4))
    out.loss.backward()
    # The same triplets (same seed) through a one-triplet-at-a-time loop.
    triplets = mine_triplets(
        pairwise_squared_distances(x0), labels, rule, margin, torch.Generator().manual_seed(4)
    )
    assert triplet_list(out.triplets) == triplet_list(triplets)
    y = x0.clone().requires_grad_()
    expected = loop_triplet_loss(y, triplet_list(triplets), margin)
    expected.backward()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(x.grad, y.grad)


def test_triplet_margin_loss_matches_loop_and_stats_match_loop():
    x0, labels = batch(1, n=16)
    t = mine_triplets(pairwise_squared_distances(x0), labels, "batch_all", 0.5)
    x = x0.clone().requires_grad_()
    loss = triplet_margin_loss(x, t, 0.5)
    loss.backward()
    y = x0.clone().requires_grad_()
    expected = loop_triplet_loss(y, triplet_list(t), 0.5)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(x.grad, y.grad)

    out = triplet_loss(x0, labels, "batch_all", 0.5)
    s = out.stats
    rows = triplet_list(out.triplets)
    d = lambda i, j: float(((x0[i] - x0[j]) ** 2).sum())  # noqa: E731
    assert s.num_triplets == len(rows)
    assert s.mean_ap == pytest.approx(sum(d(a, p) for a, p, _ in rows) / len(rows))
    assert s.mean_an == pytest.approx(sum(d(a, n) for a, _, n in rows) / len(rows))
    active = sum(1 for a, p, n in rows if d(a, p) - d(a, n) + 0.5 > 0)
    assert s.fraction_active == pytest.approx(active / len(rows))
    pairs = [(i, j) for i in range(16) for j in range(16) if i != j]
    assert s.mean_pairwise_distance == pytest.approx(sum(d(i, j) for i, j in pairs) / len(pairs))
    centred = x0 - x0.mean(0)
    assert s.embedding_spread == pytest.approx(float(centred.pow(2).sum(1).mean().sqrt()))
    assert s.num_pairs == out.triplets.num_pairs
    assert set(s.as_dict()) >= {"num_triplets", "fraction_active", "mean_ap", "mean_an"}


def test_no_triplets_gives_zero_loss_with_graph():
    x = F.normalize(torch.randn(5, 4), dim=1).requires_grad_()
    out = triplet_loss(x, torch.arange(5))  # all singletons: no positives
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
    assert bool((x.grad == 0).all())
    assert out.stats.num_triplets == 0 and out.stats.fraction_active == 0.0
    empty = Triplets(*(torch.empty(0, dtype=torch.long) for _ in range(3)))
    assert triplet_margin_loss(x, empty).item() == 0.0


def test_collapsed_embeddings_are_flagged():
    x = F.normalize(torch.ones(8, 4), dim=1).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = triplet_loss(x, labels, "hardest_negative")
    assert out.stats.mean_pairwise_distance == 0.0
    assert out.stats.embedding_spread == pytest.approx(0.0, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.2)  # every triplet sits at exactly the margin
    out.loss.backward()
    assert bool(torch.isfinite(x.grad).all())


def test_semi_hard_loss_is_positive_on_every_triplet():
    x, labels = batch(2, n=30, classes=4, dim=3, dtype=torch.float32)
    out = triplet_loss(x, labels, "semi_hard", 0.2, torch.Generator().manual_seed(0))
    assert out.stats.num_triplets > 0
    assert out.stats.fraction_active == 1.0  # d_ap < d_an < d_ap + margin => loss in (0, margin)
    assert 0.0 < out.loss.item() < 0.2
    assert out.stats.mean_ap < out.stats.mean_an


def test_rejects_bad_embeddings():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        triplet_loss(torch.zeros(4), torch.zeros(4, dtype=torch.long))


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    seed=st.integers(0, 10_000),
    rule=st.sampled_from(RULES),
    margin=st.sampled_from([0.0, 0.2, 1.0]),
)
def test_property_loss_matches_loop(labels, seed, rule, margin):
    g = torch.Generator().manual_seed(seed)
    x0 = F.normalize(torch.randn(len(labels), 3, generator=g, dtype=torch.float64), dim=1)
    x = x0.clone().requires_grad_()
    out = triplet_loss(x, labels, rule, margin, torch.Generator().manual_seed(seed))
    out.loss.backward()
    y = x0.clone().requires_grad_()
    expected = loop_triplet_loss(y, triplet_list(out.triplets), margin)
    expected.backward()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(x.grad, y.grad)
    assert out.loss.item() >= 0.0
