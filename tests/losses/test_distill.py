"""Distillation losses against hand-computed cases and a loop-per-pair oracle."""

from __future__ import annotations

import pytest
import torch

from facenet.losses.distill import embedding_distillation_loss, relation_distillation_loss


def _unit(*rows: list[float]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def test_hand_computed_two_faces():
    # student: two orthogonal faces; teacher: both faces at the student's first point
    s = _unit([1.0, 0.0], [0.0, 1.0])
    t = _unit([1.0, 0.0], [1.0, 0.0])
    # ||s0 - t0||^2 = 0, ||s1 - t1||^2 = |(-1, 1)|^2 = 2 -> mean 1
    assert float(embedding_distillation_loss(s, t)) == pytest.approx(1.0)
    # off-diagonal cosines: student 0, teacher 1 -> (0 - 1)^2 = 1 for both ordered pairs
    assert float(relation_distillation_loss(s, t)) == pytest.approx(1.0)


def test_hand_computed_three_faces_at_60_degrees():
    # student: 0, 60 and 120 degrees on the circle; teacher: all at 0 degrees
    s = _unit([1.0, 0.0], [0.5, 3**0.5 / 2], [-0.5, 3**0.5 / 2])
    t = _unit([1.0, 0.0], [1.0, 0.0], [1.0, 0.0])
    # squared distances 0, 2 - 2 cos 60 = 1, 2 - 2 cos 120 = 3 -> mean 4/3
    assert float(embedding_distillation_loss(s, t)) == pytest.approx(4 / 3)
    # student cosines: (0,1) 0.5, (0,2) -0.5, (1,2) 0.5; teacher all 1
    # squared differences 0.25, 2.25, 0.25, each counted twice of 6 ordered pairs -> 2.75 / 3
    assert float(relation_distillation_loss(s, t)) == pytest.approx(2.75 / 3)


def _embedding_oracle(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return sum(((s[i] - t[i]) ** 2).sum() for i in range(len(s))) / len(s)


def _relation_oracle(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    n = len(s)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    return sum((torch.dot(s[i], s[j]) - torch.dot(t[i], t[j])) ** 2 for i, j in pairs) / len(pairs)


@pytest.mark.parametrize("teacher_dim", [5, 3])  # the relational loss takes any dimension
def test_losses_and_gradients_match_a_loop_over_pairs(teacher_dim):
    g = torch.Generator().manual_seed(teacher_dim)
    raw = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    same = torch.nn.functional.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=1)
    t = torch.randn(7, teacher_dim, generator=g, dtype=torch.float64)
    t = torch.nn.functional.normalize(t, dim=1)
    s = torch.nn.functional.normalize(raw, dim=1)
    fast = embedding_distillation_loss(s, same) + relation_distillation_loss(s, t)
    slow = _embedding_oracle(s, same) + _relation_oracle(s, t)
    assert float(fast.detach()) == pytest.approx(float(slow.detach()), rel=1e-12)
    (g_fast,) = torch.autograd.grad(fast, raw, retain_graph=True)
    (g_slow,) = torch.autograd.grad(slow, raw)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-10, atol=1e-12)


def test_a_perfect_student_costs_nothing_and_the_teacher_gets_no_gradient():
    t = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    s = t.detach().clone().requires_grad_()
    assert float(embedding_distillation_loss(s, t)) == pytest.approx(0.0, abs=1e-12)
    assert float(relation_distillation_loss(s, t)) == pytest.approx(0.0, abs=1e-12)
    (embedding_distillation_loss(s, t) + relation_distillation_loss(s, t)).backward()
    assert t.grad is None


def test_relation_loss_ignores_a_rotation_of_the_teacher():
    """The geometry, not the coordinates: a rotated teacher teaches the same relations."""
    g = torch.Generator().manual_seed(1)
    s = torch.nn.functional.normalize(torch.randn(9, 4, generator=g, dtype=torch.float64), dim=1)
    t = torch.nn.functional.normalize(torch.randn(9, 4, generator=g, dtype=torch.float64), dim=1)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    assert float(relation_distillation_loss(s, t @ q)) == pytest.approx(
        float(relation_distillation_loss(s, t)), rel=1e-12
    )
    assert float(embedding_distillation_loss(s, t @ q)) != pytest.approx(
        float(embedding_distillation_loss(s, t)), rel=1e-3
    )


def test_one_face_and_bad_shapes():
    one = torch.nn.functional.normalize(torch.randn(1, 4), dim=1).requires_grad_()
    assert float(relation_distillation_loss(one, one.detach())) == 0.0
    relation_distillation_loss(one, one.detach()).backward()  # still part of the graph
    with pytest.raises(ValueError, match="differ in dimension"):
        embedding_distillation_loss(torch.zeros(3, 4), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="same faces"):
        relation_distillation_loss(torch.zeros(3, 4), torch.zeros(2, 4))
