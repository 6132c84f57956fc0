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
from torch import Tensor

from facenet.config import Config
from facenet.losses.distances import pairwise_squared_distances
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


def build_terms(config: Config) -> list[LossTerm]:
    """The loss terms ``config`` trains with (today: the triplet loss alone, as the paper)."""
    return [TripletTerm(config.mining.rule, config.mining.margin)]
