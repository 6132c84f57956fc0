"""What a run records on rank 0: CSV logs (always), TensorBoard (if installed and enabled), the
progress bar, images/s, and ``curves.png`` at the end."""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from facenet.config import Config

TRAIN_FIELDS = (
    "step",
    "epoch",
    "loss",
    "fraction_active",
    "num_triplets",
    "num_pairs",
    "pairs_without_negative",
    "mean_ap",
    "mean_an",
    "embedding_spread",
    "grad_norm",
    "lr",
    "images_per_s",
    "elapsed_s",
    # each loss term's part of ``loss`` (facenet.train.terms); empty where a run has no such term
    "loss_triplet",
    "loss_distill",
    "loss_relation",
    "loss_harmonic",
)
# why: with optimiser.ema_decay the metrics are the averaged model's; raw_* are the raw weights'
VAL_FIELDS = (
    "step",
    "accuracy",
    "accuracy_std",
    "val",
    "far",
    "auc",
    "threshold",
    "pairs",
    "raw_accuracy",
    "raw_auc",
)


class Throughput:
    """Faces per second of training: over the last log window, and over the whole session."""

    def __init__(self) -> None:
        self.window_start, self.window_images = time.perf_counter(), 0
        self.seconds, self.images = 0.0, 0

    def add(self, images: int, seconds: float) -> None:
        """One step of ``images`` faces that took ``seconds``."""
        self.window_images += images
        self.seconds += seconds
        self.images += images

    def window_rate(self) -> float:
        """Faces per second since the last call (the window then starts again)."""
        now = time.perf_counter()
        rate = self.window_images / max(now - self.window_start, 1e-9)
        self.window_start, self.window_images = now, 0
        return rate

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` of other work (validation) out of the current window."""
        self.window_start += seconds

    @property
    def session_rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


class RunLogs:
    """CSV (always) and TensorBoard (if installed and enabled) rows, and the progress bar.

    Only rank 0 writes: on other ranks (``enabled=False``) every method does nothing.
    """

    def __init__(
        self, run_dir: Path, config: Config, step: int, resumed: bool, enabled: bool
    ) -> None:
        self.enabled = enabled
        self.train_csv = run_dir / "train_log.csv"
        self.val_csv = run_dir / "val_log.csv"
        self.tb: Any = None
        self.bar: Any = None
        if not enabled:
            return
        for path, fields in ((self.train_csv, TRAIN_FIELDS), (self.val_csv, VAL_FIELDS)):
            rows = _read_csv(path) if resumed else []
            # why: rows written after the checkpoint we resume from are replayed, not duplicated;
            # columns of options that no longer exist are dropped
            rows = [r for r in rows if int(float(r["step"])) <= step]
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
        if config.output.tensorboard:
            self.tb = _summary_writer(run_dir / "tensorboard", step if resumed else None)
        if config.output.progress:
            self.bar = tqdm(total=config.max_steps, initial=step, desc="train", file=sys.stderr)

    def advance(self) -> None:
        """One step done (the progress bar)."""
        if self.bar is not None:
            self.bar.update(1)

    def train(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        _append_csv(self.train_csv, TRAIN_FIELDS, row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{row['loss']:.4f}",
                active=f"{row['fraction_active']:.2f}",
                spread=f"{row['embedding_spread']:.2f}",
                img_s=f"{row['images_per_s']:.0f}",
            )

    def val(self, row: dict[str, Any], best: dict[str, Any]) -> None:
        if not self.enabled:
            return
        _append_csv(self.val_csv, VAL_FIELDS, row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"val/{k}", v, row["step"])
            self.tb.flush()
        if self.bar is not None:
            self.bar.write(
                f"step {row['step']}: val accuracy {row['accuracy']:.4f} "
                f"± {row['accuracy_std']:.4f}, VAL@FAR {row['val']:.4f}, "
                f"AUC {row['auc']:.4f} (best {best['accuracy']:.4f})"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _summary_writer(folder: Path, purge_step: int | None) -> Any:
    try:
        # why: TensorBoard is an optional extra (`train`); without it the run keeps CSV logs
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard not installed: CSV logs only", file=sys.stderr)
        return None
    return SummaryWriter(str(folder), purge_step=purge_step)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _append_csv(path: Path, fields: tuple[str, ...], row: dict[str, Any]) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerow(row)


def plot_curves(run_dir: str | os.PathLike) -> Path | None:
    """``curves.png``: training loss / active fraction / spread and validation accuracy / AUC."""
    # why: matplotlib takes a second to import and must get its file-only backend before pyplot
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train_rows = _read_csv(run_dir / "train_log.csv")
    val_rows = _read_csv(run_dir / "val_log.csv")
    if not train_rows:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [int(r["step"]) for r in train_rows]

    def col(rows: list[dict[str, str]], key: str) -> list[float]:
        return [float(r[key]) if r[key] not in ("", "nan") else float("nan") for r in rows]

    axes[0].plot(steps, col(train_rows, "loss"), label="triplet")
    axes[0].set(title="triplet loss", xlabel="step")
    axes[1].plot(steps, col(train_rows, "fraction_active"), label="fraction of triplets active")
    if "num_pairs" in train_rows[0]:
        pairs = np.maximum(np.array(col(train_rows, "num_pairs")), 1)
        mined = 1 - np.array(col(train_rows, "pairs_without_negative")) / pairs
        axes[1].plot(steps, mined, label="pairs with a mined negative")
    axes[1].plot(steps, col(train_rows, "embedding_spread"), label="embedding spread")
    axes[1].set(title="mining health", xlabel="step", ylim=(0, 1.05))
    axes[1].legend()
    if val_rows:
        vs = [int(r["step"]) for r in val_rows]
        axes[2].plot(vs, col(val_rows, "accuracy"), "o-", label="accuracy")
        axes[2].plot(vs, col(val_rows, "auc"), "s-", label="AUC")
        axes[2].plot(vs, col(val_rows, "val"), "^-", label="VAL@FAR")
        axes[2].legend()
    axes[2].set(title="validation", xlabel="step", ylim=(0, 1.0))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
