"""Harmonic (mixed-model) triplet mining against a brute-force loop over every triplet."""

from __future__ import annotations

import math

import pytest
import torch

from facenet.losses.distances import pairwise_squared_distances
from facenet.losses.harmonic import harmonic_triplet_loss, mixed_semi_hard


def _batch(seed: int, people: int = 5, per: int = 3, dim: int = 4):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(people).repeat_interleave(per)
    new = torch.nn.functional.normalize(torch.randn(len(labels), dim, generator=g), dim=1)
    old = torch.nn.functional.normalize(new + 0.4 * torch.randn(new.shape, generator=g), dim=1)
    return new, old, labels


def _oracle(sq, labels, is_new, margin, seed):
    """Every ordered same-label pair in anchor-major order; its mixed semi-hard negatives by a
    loop over every face; the k-th of them for the pair's uniform draw."""
    g = torch.Generator().manual_seed(seed)
    m = len(labels)
    pairs = [(a, p) for a in range(m) for p in range(m) if a != p and labels[a] == labels[p]]
    draws = torch.rand(len(pairs), generator=g, dtype=torch.float64)
    out, dropped = [], 0
    for (a, p), u in zip(pairs, draws, strict=True):
        cands = [
            n
            for n in range(m)
            if labels[n] != labels[a]
            and sq[a, p] < sq[a, n] < sq[a, p] + margin
            and len({bool(is_new[a]), bool(is_new[p]), bool(is_new[n])}) == 2  # mixed
        ]
        if not cands:
            dropped += 1
            continue
        out.append((a, p, cands[min(math.floor(float(u) * len(cands)), len(cands) - 1)]))
    return out, len(pairs), dropped


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.2, 0.8])
def test_mixed_semi_hard_matches_a_loop_over_every_triplet(seed, margin):
    new, old, labels = _batch(seed)
    joint = torch.cat([new, old])
    jl = torch.cat([labels, labels])
    is_new = torch.arange(len(jl)) < len(labels)
    sq = pairwise_squared_distances(joint)
    t = mixed_semi_hard(sq, jl, is_new, margin, torch.Generator().manual_seed(seed + 10))
    expected, pairs, dropped = _oracle(sq, jl, is_new, margin, seed + 10)
    got = list(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist(), strict=True))
    assert got == expected and len(got) > 0
    assert t.num_pairs == pairs and t.pairs_without_negative == dropped
    # every triplet mixes the models: never all new, never all old
    kinds = torch.stack([is_new[t.anchor], is_new[t.positive], is_new[t.negative]])
    assert (kinds.any(0) & ~kinds.all(0)).all()


def test_a_face_and_its_old_embedding_are_a_positive_pair():
    new, old, labels = _batch(3)
    b = len(labels)
    joint = torch.cat([new, old])
    jl = torch.cat([labels, labels])
    is_new = torch.arange(2 * b) < b
    t = mixed_semi_hard(pairwise_squared_distances(joint), jl, is_new, 2.0)
    pairs = set(zip(t.anchor.tolist(), t.positive.tolist(), strict=True))
    assert any((i, i + b) in pairs for i in range(b))


def test_loss_pulls_only_the_new_model_and_vanishes_when_it_equals_the_old():
    new, old, labels = _batch(4)
    new = new.clone().requires_grad_()
    old = old.clone().requires_grad_()
    loss, stats = harmonic_triplet_loss(new, old, labels, 0.5, torch.Generator().manual_seed(0))
    assert loss.item() > 0 and stats.num_triplets > 0
    loss.backward()
    assert new.grad is not None and new.grad.abs().sum() > 0 and old.grad is None
    # a new model that reproduces a well-separated old one violates no mixed triplet
    labels = torch.arange(4).repeat_interleave(2)
    centres = torch.eye(4)[labels]
    loss, _ = harmonic_triplet_loss(centres, centres.clone(), labels, 0.2)
    assert loss.item() == 0.0


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="same faces"):
        harmonic_triplet_loss(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4))
