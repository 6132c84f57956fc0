"""Slow, obvious Python-loop oracles for every mining rule and for the triplet loss.

Each comparison repeats the implementation's exact arithmetic (``d(a, n) < d(a, p) + margin`` with
the sum taken in the distance matrix's dtype), so the oracle and the fast code agree bit for bit,
including at exact ties and margin boundaries.
"""

from __future__ import annotations

import torch
from torch import Tensor


def positive_pairs(labels: list[int]) -> list[tuple[int, int]]:
    """Every ordered (anchor, positive) pair, anchor-major, positives ascending."""
    n = len(labels)
    return [(a, p) for a in range(n) for p in range(n) if p != a and labels[p] == labels[a]]


def negatives(labels: list[int], a: int) -> list[int]:
    return [n for n in range(len(labels)) if labels[n] != labels[a]]


def threshold(sq: Tensor, a: int, p: int, margin: float) -> float:
    """d(a, p) + margin, rounded in sq's dtype exactly as the implementation does."""
    return float(sq[a, p] + margin)


def semi_hard_candidates(sq: Tensor, labels: list[int], a: int, p: int, margin: float) -> list[int]:
    """Negatives with d(a, p) < d(a, n) < d(a, p) + margin."""
    d_ap, t = float(sq[a, p]), threshold(sq, a, p, margin)
    return [n for n in negatives(labels, a) if d_ap < float(sq[a, n]) < t]


def violating_candidates(sq: Tensor, labels: list[int], a: int, p: int, margin: float) -> list[int]:
    """Negatives with d(a, n) < d(a, p) + margin (positive loss)."""
    t = threshold(sq, a, p, margin)
    return [n for n in negatives(labels, a) if float(sq[a, n]) < t]


def closest(sq: Tensor, a: int, candidates: list[int]) -> int:
    """Candidate with the smallest d(a, n), lowest index on ties."""
    return min(candidates, key=lambda n: (float(sq[a, n]), n))


def farthest(sq: Tensor, a: int, candidates: list[int]) -> int:
    """Candidate with the largest d(a, n), lowest index on ties."""
    return min(candidates, key=lambda n: (-float(sq[a, n]), n))


def expected_batch_hard(sq: Tensor, labels: list[int]) -> list[tuple[int, int, int]]:
    out = []
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = negatives(labels, a)
        if pos and neg:
            out.append((a, farthest(sq, a, pos), closest(sq, a, neg)))
    return out


def expected_batch_all(sq: Tensor, labels: list[int], margin: float) -> list[tuple[int, int, int]]:
    return [
        (a, p, n)
        for a, p in positive_pairs(labels)
        for n in violating_candidates(sq, labels, a, p, margin)
    ]


def loop_triplet_loss(x: Tensor, triplets: list[tuple[int, int, int]], margin: float) -> Tensor:
    """Mean of max(0, |a - p|^2 - |a - n|^2 + margin), one triplet at a time."""
    if not triplets:
        return x.sum() * 0.0
    total = x.new_zeros(())
    for a, p, n in triplets:
        d_ap = sum((x[a, k] - x[p, k]) ** 2 for k in range(x.shape[1]))
        d_an = sum((x[a, k] - x[n, k]) ** 2 for k in range(x.shape[1]))
        total = total + torch.clamp(d_ap - d_an + margin, min=0.0)
    return total / len(triplets)
