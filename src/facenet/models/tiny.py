"""``tiny``: a small BatchNorm CNN for fast tests and CPU smoke runs (not a paper model)."""

from __future__ import annotations

from torch import Tensor, nn

from facenet.models.head import EmbeddingHead, EmbeddingNet
from facenet.models.registry import register_model
from facenet.preprocess import ModelSpec


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyNet(EmbeddingNet):
    def __init__(self, spec: ModelSpec, width: int = 16) -> None:
        super().__init__(spec)
        w = width
        self.features = nn.Sequential(_block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = EmbeddingHead(4 * w, spec.embedding_dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, D)
        return self.head(self.pool(self.features(x)).flatten(1))


@register_model
def tiny(embedding_dim: int = 128, input_size: int = 32, width: int = 16) -> TinyNet:
    """A ~40k-parameter CNN at 32x32 for tests and smoke runs."""
    spec = ModelSpec("tiny", (input_size, input_size), embedding_dim)
    return TinyNet(spec, width=width)
