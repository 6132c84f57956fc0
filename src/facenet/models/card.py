"""``ModelCard``: what a model is, in one typed object on the model (``model.card``).

The registry sets it when it builds a model (architecture name and factory kwargs); loaders add
the calibrated thresholds, the published version and where the weights came from; training
records the thresholds its validation calibrated. Everything that needs a fact about a model
(saving, fingerprints, the applications' operating points) reads it here, through ``card_of``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class ModelCard:
    """The facts about a model that are not its weights or its input (``ModelSpec``).

    Attributes:
        name: registry name of the architecture (``facenet.models.list_models()``).
        kwargs: the factory's keyword arguments (``create_model(name, **kwargs)`` rebuilds it).
        thresholds: calibrated squared-L2 distance thresholds by operating point, e.g.
            ``{"accuracy": 1.16, "far_1e-3": 0.98}``; empty for an uncalibrated model.
        version: the published weights' reference (``NAME:TAG``) or the weights file it came
            from; empty for a model built by the registry (random weights) or loaded from a file
            without a name.
        provenance: where the weights come from (source file and its hash, licence, converter,
            training run), as recorded in the weights file; for people, never for checks.
        compatible_with: weights hashes of other models whose embeddings this model's may be
            compared with (harmonic embeddings, SPEC §6).
        mixed_thresholds: for each of those hashes, the thresholds calibrated on mixed pairs
            (that model's embedding of one face, this model's of the other): what a probe of
            this model uses against a gallery that model enrolled. Empty when not calibrated.
        int8: the 128-byte code of its embeddings (``facenet.quantize.Int8Codec.to_dict()``:
            per-dimension scales calibrated on training faces); empty when not calibrated.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    version: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    compatible_with: tuple[str, ...] = ()
    mixed_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    int8: dict[str, Any] = field(default_factory=dict)

    def set_thresholds(self, thresholds: dict[str, Any] | None) -> None:
        """Replace the thresholds (keys as text, values as floats)."""
        self.thresholds = {str(k): float(v) for k, v in dict(thresholds or {}).items()}


def card_of(model: nn.Module) -> ModelCard:
    """``model.card``; for a module built outside the registry, a card naming its spec or class."""
    card = getattr(model, "card", None)
    if isinstance(card, ModelCard):
        return card
    spec = getattr(model, "spec", None)
    card = ModelCard(name=getattr(spec, "name", None) or type(model).__name__)
    model.card = card
    return card
