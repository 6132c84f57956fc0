"""Distillation losses: a student's unit embeddings against a teacher's of the same faces.

Both take (B, D) unit vectors of the same B faces, the student's with gradients and the
teacher's as fixed targets (already mapped to the student's dimension, see
``facenet.train.teacher``):

- ``embedding_distillation_loss``: the mean squared L2 distance between each face's two
  embeddings (``2 - 2 cos``): the student takes the teacher's coordinates.
- ``relation_distillation_loss``: the mean squared difference of the two pairwise cosine
  similarity matrices over distinct pairs (Park et al.'s relational distillation with the
  distance taken as the squared L2 of unit vectors, ``2 - 2 cos``, up to a factor 4): the
  student takes the teacher's geometry, in any coordinates and any dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(student: Tensor, teacher: Tensor, same_dim: bool) -> None:
    if student.ndim != 2 or teacher.ndim != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"expected (B, D) student and teacher embeddings of the same faces, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if same_dim and student.shape[1] != teacher.shape[1]:
        raise ValueError(
            f"student ({student.shape[1]}-d) and teacher ({teacher.shape[1]}-d) embeddings "
            "differ in dimension: project the teacher's first"
        )


def embedding_distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """mean_i ||s_i - t_i||^2 over the batch (0 when the student matches the teacher)."""
    _check(student, teacher, same_dim=True)
    return (student - teacher.detach()).pow(2).sum(dim=1).mean()


def relation_distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """mean over i != j of (s_i . s_j - t_i . t_j)^2; 0 for a batch of one face."""
    _check(student, teacher, same_dim=False)
    n = student.shape[0]
    if n < 2:
        return student.sum() * 0.0
    teacher = teacher.detach()
    diff = student @ student.T - teacher @ teacher.T  # (B, B); the diagonal is 1 - 1 = 0
    off = ~torch.eye(n, dtype=torch.bool, device=student.device)
    return diff[off].pow(2).mean()
