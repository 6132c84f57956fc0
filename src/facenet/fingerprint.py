"""Hashes and fingerprints: which bytes a file holds, which weights a model has, and which
embedding space a vector lives in.

A bottom module (the standard library only; it touches tensors it is given, never imports
PyTorch): the converter, the pretrained loader, the embedder, the
gallery and the clustering command all identify files and weights through it, so one scheme
holds everywhere.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # why: the gallery reads fingerprints without loading PyTorch
    import torch
    from torch import nn

_CHUNK = 1 << 22


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def array_sha256(array: Any) -> str:
    """Hex SHA-256 of an array's shape, dtype and bytes (an in-memory image, say)."""
    h = hashlib.sha256(f"{array.shape}|{array.dtype}|".encode())
    h.update(array.tobytes(order="C"))
    return h.hexdigest()


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 of a state dict's content (names, dtypes, shapes, bytes), independent of the
    file format it is stored in."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """``state_sha256`` of a model's weights: two models embed alike iff these match."""
    return state_sha256(model.state_dict())


@dataclass(frozen=True)
class ModelFingerprint:
    """Which embedding space a vector lives in: enough to refuse mixing two of them."""

    name: str  # registry name of the architecture, e.g. "inception_resnet_v1"
    version: str  # pretrained tag, checkpoint file name or "random"; for people, not for checks
    weights_hash: str  # sha256 of the weights: two models are compatible iff these match
    embedding_dim: int
    ref: str = ""  # what the user typed to load the model (re-used by later commands)
    compatible_with: tuple[str, ...] = ()  # other weights hashes whose embeddings we can query

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "weights_hash": self.weights_hash,
            "embedding_dim": self.embedding_dim,
            "ref": self.ref,
            "compatible_with": list(self.compatible_with),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelFingerprint:
        return cls(
            name=d["name"],
            version=d.get("version", ""),
            weights_hash=d["weights_hash"],
            embedding_dim=int(d["embedding_dim"]),
            ref=d.get("ref", ""),
            compatible_with=tuple(d.get("compatible_with", ())),
        )

    def can_query(self, gallery: ModelFingerprint) -> bool:
        """Whether embeddings from this model may be compared with ``gallery``'s."""
        if self.embedding_dim != gallery.embedding_dim:
            return False
        return gallery.weights_hash == self.weights_hash or (
            gallery.weights_hash in self.compatible_with
        )

    def describe(self) -> str:
        return f"{self.name} ({self.version}, weights sha256 {self.weights_hash[:12]}, d={self.embedding_dim})"
