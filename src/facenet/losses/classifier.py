"""An optional identity-classification loss beside the triplet loss (not in the paper).

FaceNet trains with the triplet loss alone (SPEC §2). With a small training set and a short
budget, the triplet loss's signal is sparse: once most sampled triplets satisfy the margin only a
few per batch move the weights. A classifier over the training identities gives every face a
gradient every step. Re-identification work at the same scale (Luo et al., "Bag of Tricks and a
Strong Baseline for Deep Person Re-identification", CVPRW 2019: ~750 identities, ~13k images)
trains with both losses for that reason. Here the classifier is a large-margin cosine softmax
(Wang et al., "CosFace", CVPR 2018) on the same unit embedding that the triplet loss and every
application use, so both losses shape the one metric: a class weight is a unit "proxy" face, the
logit of class ``j`` is ``scale * (cos(e, w_j) - margin * [j == label])``.

The classifier exists only during training: checkpoints keep its weights (for ``--resume``) but
exported models and the applications never see it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CosineClassifier(nn.Module):
    """Large-margin cosine softmax (CosFace) over ``num_classes`` identities.

    Args:
        embedding_dim: width of the embeddings it classifies.
        num_classes: number of training identities (labels are ``0 .. num_classes - 1``).
        scale: the logit scale ``s`` (the temperature's inverse); 30 is CosFace's ~64 tuned for
            fewer classes.
        margin: the additive cosine margin ``m`` subtracted from the true class's cosine.
        generator: random stream of the proxies' initialisation (default: the global one).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        scale: float = 30.0,
        margin: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 identities, got {num_classes}")
        if scale <= 0 or not math.isfinite(scale):
            raise ValueError(f"classifier scale must be a positive number, got {scale}")
        if not 0 <= margin < 1:
            raise ValueError(f"classifier margin must be in [0, 1), got {margin}")
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(embedding_dim), generator=generator)

    def cosines(self, embeddings: Tensor) -> Tensor:
        """(B, C) cosine of each embedding with each class proxy."""
        return F.normalize(embeddings.float(), dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy over the batch and the fraction classified correctly (no margin)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"embeddings must be (B, {self.weight.shape[1]}), got {tuple(embeddings.shape)}"
            )
        if labels.shape != embeddings.shape[:1]:
            raise ValueError(f"labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}")
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.weight)):
            raise ValueError(f"labels must lie in [0, {len(self.weight)}), got {labels.tolist()}")
        cos = self.cosines(embeddings)
        target = F.one_hot(labels, len(self.weight)).to(cos.dtype)
        logits = self.scale * (cos - self.margin * target)
        loss = F.cross_entropy(logits, labels)
        accuracy = (cos.detach().argmax(dim=1) == labels).float().mean()
        return loss, accuracy
