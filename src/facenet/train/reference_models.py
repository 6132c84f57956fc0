"""The fixed models a run learns from, each embedding the training faces once (cached):
``distill.teacher`` (``build_teacher``: the distillation targets) and ``harmonic.model``
(``build_old``: the v1 whose embedding space the trained model must stay compatible with)."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import torch

from facenet.config import Config, ConfigError
from facenet.train import distributed as D
from facenet.train.data import TrainData
from facenet.train.model_setup import load_reference
from facenet.train.teacher import (
    TeacherTargets,
    align_targets,
    build_targets,
    cached_embeddings,
    pair_embeddings,
)
from facenet.train.validate import PairSet


def build_teacher(
    config: Config, data: TrainData, student_dim: int, info: D.DistInfo
) -> TeacherTargets | None:
    """``distill.teacher``'s targets: rank 0 computes (or reuses) the cache, the others read it."""
    if not config.distill.teacher:
        return None
    model = load_reference("distill.teacher", config.distill.teacher)
    teacher_dim = int(model.spec.embedding_dim)
    if teacher_dim < student_dim:  # why: before minutes of embedding the training faces
        raise ConfigError(
            f"distill.teacher={config.distill.teacher} embeds in {teacher_dim} dimensions, "
            f"fewer than the student's {student_dim}: distill into a student of the teacher's "
            "dimension or less"
        )
    progress = config.output.progress and info.is_main
    targets = (
        build_targets(config, data, student_dim, progress, model=model) if info.is_main else None
    )
    D.barrier()
    if targets is None:
        targets = build_targets(config, data, student_dim, False, compute=False, model=model)
    elif progress:
        dims = f"{targets.embeddings.shape[2]}-d"
        if targets.embeddings.shape[2] != student_dim:
            dims += f" -> {student_dim}-d (keeps {100 * targets.kept_energy:.3f}% of the energy)"
        print(f"teacher {config.distill.teacher}: {dims}, cache {targets.path}", file=sys.stderr)
    return targets


def align_teacher(teacher: TeacherTargets, old: OldEmbeddings, progress: bool) -> TeacherTargets:
    """The teacher's targets rotated into the harmonic v1's frame (``align_targets``; the
    rotation is kept for ``distill.online``): the same
    geometry, oriented so that learning it does not fight the mixed triplets."""
    before = float((teacher.targets * old.embeddings).sum(dim=1).mean())
    rotated, after, rotation = align_targets(teacher.targets, old.embeddings)
    if progress:
        print(
            f"teacher targets rotated into {old.weights_hash[:12]}'s frame: mean cosine with "
            f"v1 {before:.3f} -> {after:.3f}",
            file=sys.stderr,
        )
    return dataclasses.replace(teacher, targets=rotated, transform=teacher.transform @ rotation)


@dataclass(frozen=True)
class OldEmbeddings:
    """``harmonic.model``'s (v1's) embeddings of the training faces, as a gallery stores them
    (the face itself, not its mirror).

    Attributes:
        embeddings: (N, D) float32 unit vectors, rows aligned with ``TrainData``.
        weights_hash: v1's weights hash: what the trained model declares itself compatible with.
        pairs: (M, D) v1's embeddings of the validation pairs' images (``pair_embeddings``), for
            the mixed-pair thresholds the export records; rank 0 only (None elsewhere).
    """

    embeddings: torch.Tensor
    weights_hash: str
    pairs: torch.Tensor | None = None


def build_old(
    config: Config, data: TrainData, pairs: PairSet, dim: int, info: D.DistInfo
) -> OldEmbeddings | None:
    """``harmonic.model``'s embeddings: rank 0 computes (or reuses) the cache, the others read
    it; rank 0 also embeds the validation pairs with it."""
    h = config.harmonic
    if not h.model:
        return None
    v1 = load_reference("harmonic.model", h.model)
    old_dim = int(v1.spec.embedding_dim)
    if old_dim != dim:  # why: before minutes of embedding the training faces with it
        raise ConfigError(
            f"harmonic.model {h.model} embeds in {old_dim} dimensions, this model in {dim}: a "
            "harmonic model must have the old model's dimension"
        )
    progress = config.output.progress and info.is_main
    made = (
        cached_embeddings(h.model, h.cache, config, data, progress, model=v1)
        if info.is_main
        else None
    )
    D.barrier()
    if made is None:
        made = cached_embeddings(h.model, h.cache, config, data, False, compute=False, model=v1)
    embeddings, meta, _ = made
    unit = torch.nn.functional.normalize(torch.from_numpy(embeddings[:, 0]), dim=1)
    on_pairs = pair_embeddings(v1, config, pairs, info.device) if info.is_main else None
    return OldEmbeddings(unit, str(meta["weights_hash"]), on_pairs)
