"""Embedding head and the base class every model derives from."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facenet.preprocess import ModelSpec


class EmbeddingHead(nn.Module):
    """(B, C) features -> (B, D) L2-normalised embeddings (FaceNet's "L2" layer after the FC).

    ``batch_norm``: a BatchNorm1d on the D outputs before the L2 normalisation (the "bottleneck
    BN" of Sandberg's and facenet-pytorch's Inception-ResNet, ArcFace's BN-FC-BN output): it
    centres and scales each dimension over the batch, so the unit vectors spread around the
    origin instead of crowding one side of the sphere.
    """

    def __init__(
        self,
        in_features: int,
        embedding_dim: int = 128,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, embedding_dim, bias=not batch_norm)
        self.bn: nn.Module = nn.BatchNorm1d(embedding_dim) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.bn(self.fc(self.dropout(x))), p=2, dim=1, eps=1e-12)


class EmbeddingNet(nn.Module):
    """Base class: ``forward(images (B, C, H, W)) -> (B, D)`` unit vectors; carries ``spec``."""

    spec: ModelSpec

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Inference helper: eval-mode embeddings without gradients."""
        was_training = self.training
        self.eval()
        try:
            return self(images)
        finally:
            self.train(was_training)
