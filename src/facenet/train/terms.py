"""Loss terms: each maps a step's embeddings to named scalar losses; the step sums them.

A term is any callable ``term(embeddings, labels, batch) -> TermOutput`` (``embeddings`` and
``labels`` are the step's global batch, gathered across ranks under torchrun). The paper trains
with one, :class:`TripletTerm`; another objective (distillation from a teacher, a harmonic
embedding's compatibility term) joins by being added to ``build_terms``' list, without touching
the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.distributed as dist
from torch import Tensor

from facenet.config import Config
from facenet.losses.distances import pairwise_squared_distances
from facenet.losses.distill import embedding_distillation_loss, relation_distillation_loss
from facenet.losses.distributed import gather_no_grad
from facenet.losses.harmonic import harmonic_triplet_loss
from facenet.losses.hinge import TripletStats, loss_and_stats
from facenet.losses.triplet import triplet_loss
from facenet.train.data import Batch


@dataclass(frozen=True)
class TermOutput:
    """What one loss term gives a step.

    Attributes:
        losses: ``{name: scalar tensor}``; the step minimises the sum of every term's losses.
        triplet: the mining statistics of a triplet term (logged, and watched for collapse).
    """

    losses: dict[str, Tensor]
    triplet: TripletStats | None = field(default=None)


class LossTerm(Protocol):
    def __call__(self, embeddings: Tensor, labels: Tensor, batch: Batch) -> TermOutput:
        """(B, D) unit embeddings and (B,) labels of the global batch -> named losses."""
        ...


@dataclass(frozen=True)
class TripletTerm:
    """The paper's triplet loss (SPEC §2): mined online in the batch with ``rule``, or over the
    triplets the batch carries (``batch.triplets``, mined offline).

    Attributes:
        rule: online mining rule (``facenet.losses.RULES``).
        margin: alpha (SPEC §2: 0.2).
    """

    rule: str
    margin: float

    def __call__(self, embeddings: Tensor, labels: Tensor, batch: Batch) -> TermOutput:
        if batch.triplets is None:
            out = triplet_loss(
                embeddings,
                labels,
                rule=self.rule,
                margin=self.margin,
                generator=torch.Generator().manual_seed(batch.mining_seed),
            )
            return TermOutput({"triplet": out.loss}, out.stats)
        sq_dist = pairwise_squared_distances(embeddings)  # (B, B)
        loss, stats = loss_and_stats(embeddings, sq_dist, batch.triplets, self.margin)
        return TermOutput({"triplet": loss}, stats)


def _global_rows(batch: Batch, device: torch.device) -> Tensor:
    """The dataset indices of the step's global batch, in the order of its embeddings."""
    index = torch.from_numpy(batch.indices).to(device)
    if dist.is_available() and dist.is_initialized():
        # why: the embeddings are the global batch, gathered in rank order; so are these
        index = gather_no_grad(index)
    return index


@dataclass(frozen=True)
class DistillTerm:
    """A teacher's geometry (``facenet.losses.distill``): each face's embedding against the
    teacher's target for it, and the batch's pairwise similarities against the teacher's.

    Attributes:
        targets: (N, D) unit teacher targets of every training face (``facenet.train.teacher``),
            on the training device; row i is dataset face i. A batch that carries its own
            (``Batch.targets``, ``distill.online``) is compared with those instead.
        embedding_weight: weight of ``embedding_distillation_loss`` (0 = off).
        relation_weight: weight of ``relation_distillation_loss`` (0 = off).
    """

    targets: Tensor
    embedding_weight: float
    relation_weight: float

    def __call__(self, embeddings: Tensor, labels: Tensor, batch: Batch) -> TermOutput:
        if batch.targets is None:
            teacher = self.targets[_global_rows(batch, self.targets.device)]
        else:  # distill.online: the teacher's embeddings of the faces as augmented
            teacher = batch.targets
            if dist.is_available() and dist.is_initialized():
                teacher = gather_no_grad(teacher)  # why: in rank order, as the embeddings
        teacher = teacher.to(embeddings.device, embeddings.dtype)
        losses = {}
        if self.embedding_weight > 0:
            losses["distill"] = self.embedding_weight * embedding_distillation_loss(
                embeddings, teacher
            )
        if self.relation_weight > 0:
            losses["relation"] = self.relation_weight * relation_distillation_loss(
                embeddings, teacher
            )
        return TermOutput(losses)


@dataclass(frozen=True)
class HarmonicTerm:
    """Harmonic embeddings (``facenet.losses.harmonic``): semi-hard triplets that mix this
    model's embeddings with an old model's frozen ones of the same faces.

    Attributes:
        old: (N, D) unit embeddings of every training face by the old model, on the device.
        margin: alpha.
        weight: the term's weight.
    """

    old: Tensor
    margin: float
    weight: float

    def __call__(self, embeddings: Tensor, labels: Tensor, batch: Batch) -> TermOutput:
        old = self.old[_global_rows(batch, self.old.device)]
        # why: a stream of its own, apart from the triplet term's draws of the same seed
        generator = torch.Generator().manual_seed(batch.mining_seed ^ 0x5A5A5A5A)
        loss, _ = harmonic_triplet_loss(embeddings, old, labels, self.margin, generator)
        return TermOutput({"harmonic": self.weight * loss})


def build_terms(
    config: Config, targets: Tensor | None = None, old: Tensor | None = None
) -> list[LossTerm]:
    """The loss terms ``config`` trains with: the paper's triplet loss, with ``distill.teacher``
    the distillation terms on the teacher's ``targets``, with ``harmonic.model`` the mixed
    triplets with the old model's embeddings ``old``."""
    terms: list[LossTerm] = [TripletTerm(config.mining.rule, config.mining.margin)]
    d = config.distill
    if d.teacher:
        if targets is None:
            raise ValueError("distill.teacher is set but no teacher targets were built")
        terms.append(DistillTerm(targets, d.embedding_weight, d.relation_weight))
    if config.harmonic.model:
        if old is None:
            raise ValueError("harmonic.model is set but its embeddings were not built")
        terms.append(HarmonicTerm(old, config.mining.margin, config.harmonic.weight))
    return terms
