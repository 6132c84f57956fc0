"""The checks that stop a run: divergence (NaN/inf) and collapse (every face one point).

Every rank decides together (``distributed.all_true``), so all of them stop at the same step. A
divergence is caught before the optimiser touches the weights, and checkpoints are only written
after healthy steps, so the last one is always good.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from facenet.config import FaultConfig
from facenet.train import distributed as D


class TrainingStopped(RuntimeError):
    """The run stopped itself; ``str(e)`` says why and where the last good checkpoint is."""

    exit_code = 3


class DivergenceError(TrainingStopped):
    """Loss or gradients became NaN/inf."""

    exit_code = 4


class CollapseError(TrainingStopped):
    """Embeddings converged to one point (SPEC §3's collapsed model)."""

    exit_code = 5


def _last_good(last_path: Path) -> str:
    return str(last_path) if last_path.exists() else "none yet"


def check_finite(
    step: int,
    loss: float,
    grad_norm: float,
    scaled: bool,
    last_path: Path,
    device: torch.device,
) -> None:
    """``DivergenceError`` when ``loss`` or ``grad_norm`` is NaN/inf on any rank, called before the
    optimiser step of ``step`` (0-based). With an fp16 loss scale (``scaled``) an infinite
    gradient and a finite loss is an overflow the scaler skips, not a divergence."""
    finite = math.isfinite(loss) and math.isfinite(grad_norm)
    if D.all_true(finite, device) or (scaled and math.isfinite(loss)):
        return
    raise DivergenceError(
        f"training diverged at step {step + 1}: loss={loss:.4g}, gradient norm={grad_norm:.4g} "
        f"(NaN/inf). The weights were not updated; last good checkpoint: {_last_good(last_path)}. "
        "Lower optimiser.lr, enable optimiser.grad_clip or use precision=fp32."
    )


@dataclass
class CollapseWatch:
    """Counts consecutive steps whose embedding spread is below ``faults.collapse_spread``."""

    faults: FaultConfig
    collapsed_steps: int = 0

    def check(self, step: int, spread: float, last_path: Path, device: torch.device) -> None:
        """``CollapseError`` once any rank has seen ``faults.collapse_patience`` such steps."""
        low = spread < self.faults.collapse_spread
        self.collapsed_steps = self.collapsed_steps + 1 if low else 0
        if D.all_true(self.collapsed_steps < self.faults.collapse_patience, device):
            return
        raise CollapseError(
            f"training collapsed at step {step}: embedding spread {spread:.4f} < "
            f"{self.faults.collapse_spread} for {self.collapsed_steps} steps (all faces map to one "
            f"point, SPEC §3). Last good checkpoint: {_last_good(last_path)}. Try "
            "mining.rule=semi_hard, a lower optimiser.lr or a warm-up (schedule.warmup_steps)."
        )
