"""The paper's robustness sweeps on a pairs benchmark: JPEG quality and face size.

Each setting degrades every face crop at the model's input size (see
``facenet.eval.embedding.degrade``) and reruns the full verification protocol:

- ``jpeg``: quality 10, 20, 30, 50, 70, 90 (Pillow encoder);
- ``size``: 40, 80, 120, 160, 256 px: the crop is resized to S x S and back up to the model
  input, i.e. the face was only S pixels wide. Sizes above the input size are a no-op up to
  resampling.

The paper's figures (NN1, VAL at FAR 1e-3 on its own hold-out set, not LFW) are listed beside
ours for orientation; they are not the same measurement.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from facenet.data.lfw import Pairs
from facenet.eval.protocol import evaluate_pairs
from facenet.eval.verification import DEFAULT_FAR, VerificationReport

SweepKind = Literal["jpeg", "size"]
# why: SPEC §6, the paper's robustness table (NN1, VAL @ FAR 1e-3, hold-out set), percent.
PAPER_JPEG = {10: 67.3, 20: 81.4, 30: 83.9, 50: 85.5, 70: 86.1, 90: 86.5}
PAPER_SIZE = {40: 37.8, 80: 79.5, 120: 84.5, 160: 85.7, 256: 86.4}
SWEEPS: dict[str, dict[int, float]] = {"jpeg": PAPER_JPEG, "size": PAPER_SIZE}
LABELS = {"jpeg": "JPEG quality", "size": "face size (px)"}


@dataclass
class SweepResult:
    """One row per setting: the verification report under that degradation."""

    kind: str
    values: list[int]
    reports: list[VerificationReport]
    baseline: VerificationReport | None = None  # undegraded, when given
    paper: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rows = [
            {"value": v, **r.to_dict(include_roc=False), "paper_val_nn1": self.paper.get(v)}
            for v, r in zip(self.values, self.reports, strict=True)
        ]
        return {"kind": self.kind, "rows": rows}

    def markdown(self) -> str:
        """A Markdown table: setting | accuracy | VAL@FAR | AUC | paper VAL (NN1)."""
        far = self.reports[0].far_target if self.reports else DEFAULT_FAR
        head = (
            f"| {LABELS[self.kind]} | accuracy (10-fold) | VAL @ FAR={far:g} | AUC | "
            f"paper VAL @ 1e-3 (NN1, hold-out set) |\n|---|---|---|---|---|\n"
        )
        lines = []
        for v, r in zip(self.values, self.reports, strict=True):
            paper = self.paper.get(v)
            lines.append(
                f"| {v} | {100 * r.accuracy:.2f}% ± {100 * r.accuracy_std:.2f} | "
                f"{100 * r.val:.1f}%{'' if r.far_attainable else ' (FAR=0)'} | {r.auc:.4f} | "
                f"{f'{paper:.1f}%' if paper is not None else '-'} |"
            )
        if self.baseline is not None:
            b = self.baseline
            lines.append(
                f"| undegraded | {100 * b.accuracy:.2f}% ± {100 * b.accuracy_std:.2f} | "
                f"{100 * b.val:.1f}% | {b.auc:.4f} | - |"
            )
        return head + "\n".join(lines) + "\n"


def run_sweep(
    model: Any,
    pairs: Pairs,
    root: str | os.PathLike,
    kind: SweepKind,
    values: Sequence[int] | None = None,
    distance: str = "l2",
    far_target: float = DEFAULT_FAR,
    baseline: VerificationReport | None = None,
    **embed_kwargs: Any,
) -> SweepResult:
    """Run the verification protocol once per degradation setting.

    Args:
        model: an ``EmbeddingNet`` or a peer ``FaceEmbedder``.
        pairs: the benchmark's pairs (its folds are used).
        root: image folder.
        kind: ``"jpeg"`` or ``"size"``.
        values: settings; the paper's by default.
        distance: pair distance.
        far_target: FAR for VAL.
        baseline: the undegraded report, shown as the last row.
        **embed_kwargs: passed to ``embed_paths`` (``cache_dir``, ``flip``, ``align``, ...).
    """
    if kind not in SWEEPS:
        raise ValueError(f"sweep must be one of {', '.join(SWEEPS)}, got {kind!r}")
    values = list(values) if values is not None else list(SWEEPS[kind])
    reports = []
    for v in values:
        ev = evaluate_pairs(
            model, pairs, root, distance, far_target, degradation=f"{kind}:{v}", **embed_kwargs
        )
        reports.append(ev.report)
    return SweepResult(kind, values, reports, baseline, dict(SWEEPS[kind]))
