"""Distances, triplet mining rules and the triplet loss (SPEC §2–3).

Pure pieces that compose: ``pairwise_squared_distances`` -> ``mine_triplets`` -> hinge
(``facenet.losses.hinge``), wrapped by ``triplet_loss``; ``facenet.losses.distributed`` mines over
the global batch of several processes. Offline mining (triplets selected every n steps with the
current model, on a subset drawn by the data sampler) is training code: ``facenet.train.offline``.
"""

from facenet.losses.distances import (
    pairwise_squared_distances,
    row_squared_distances,
    squared_distances,
)
from facenet.losses.hinge import (
    DEFAULT_MARGIN,
    TripletLossOutput,
    TripletStats,
    hinge_from_distances,
    triplet_margin_loss,
)
from facenet.losses.mining import (
    RULES,
    Rule,
    Triplets,
    batch_all,
    batch_hard,
    get_rule,
    hardest_negative,
    mine_triplets,
    random_violating,
    semi_hard,
    semi_hard_hardest,
)
from facenet.losses.triplet import triplet_loss

__all__ = [
    "DEFAULT_MARGIN",
    "RULES",
    "Rule",
    "TripletLossOutput",
    "TripletStats",
    "Triplets",
    "batch_all",
    "batch_hard",
    "get_rule",
    "hardest_negative",
    "hinge_from_distances",
    "mine_triplets",
    "pairwise_squared_distances",
    "random_violating",
    "row_squared_distances",
    "semi_hard",
    "semi_hard_hardest",
    "squared_distances",
    "triplet_loss",
    "triplet_margin_loss",
]
