"""Pairwise squared distances: values, exact diagonal, finite gradients (duplicates included)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facenet.losses import pairwise_squared_distances, row_squared_distances, squared_distances


def explicit(x: torch.Tensor) -> torch.Tensor:
    return (x[:, None, :] - x[None, :, :]).pow(2).sum(-1)


def test_matches_explicit_differences_and_diagonal_is_exactly_zero():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(20, 16, generator=g, dtype=torch.float64), dim=1)
    d = pairwise_squared_distances(x)
    torch.testing.assert_close(d, explicit(x), atol=1e-12, rtol=0)
    assert bool((d.diagonal() == 0).all())
    assert bool((d >= 0).all())
    torch.testing.assert_close(d, d.T)
    x32 = x.float() * 3.0  # not normalised: still exact diagonal, non-negative
    d32 = pairwise_squared_distances(x32)
    assert bool((d32.diagonal() == 0).all()) and bool((d32 >= 0).all())
    torch.testing.assert_close(d32, explicit(x32), atol=1e-4, rtol=1e-5)


def test_gradients_match_explicit_formula():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(9, 9, generator=g, dtype=torch.float64)
    (pairwise_squared_distances(x) * w).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    (explicit(x) * w).sum().backward()
    torch.testing.assert_close(ours, x.grad)
    y = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pairwise_squared_distances, (y,))


def test_duplicated_and_identical_embeddings_give_finite_zero_gradients():
    x = F.normalize(torch.ones(6, 4), dim=1).requires_grad_()  # a collapsed batch
    d = pairwise_squared_distances(x)
    assert bool((d == 0).all())
    d.sum().backward()
    assert bool(torch.isfinite(x.grad).all()) and bool((x.grad == 0).all())
    g = torch.Generator().manual_seed(2)
    base = F.normalize(torch.randn(3, 8, generator=g), dim=1)
    y = base[torch.tensor([0, 0, 1, 2, 2, 2])].clone().requires_grad_()
    w = torch.rand(6, 6, generator=g)
    (pairwise_squared_distances(y) * w).sum().backward()
    assert bool(torch.isfinite(y.grad).all())


def test_cross_and_row_distances():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    y = torch.randn(4, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        squared_distances(x, y), (x[:, None] - y[None]).pow(2).sum(-1), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(row_squared_distances(x[:4], y), (x[:4] - y).pow(2).sum(1))
