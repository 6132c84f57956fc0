"""The CI smoke config (the tiny model on synthetic faces), the ``facenet train`` arguments
that run it into a folder of its own, and a check of a distillation run's log, shared by the
training tests."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

SMOKE = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")


def smoke_args(run: Path, *extra: str) -> list[str]:
    """``facenet train`` on the smoke config into ``run``, its face cache beside it."""
    return [
        "train",
        "--config",
        SMOKE,
        f"output.dir={run}",
        f"data.cache_dir={run.parent / 'cache'}",
        *extra,
    ]


def distillation_log_ends(run: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The first and last rows of ``run``'s ``train_log.csv``, after checking that each row's
    loss is the sum of its triplet and two distillation terms."""
    with open(run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    for row in (first, last):
        parts = sum(float(row[f"loss_{k}"]) for k in ("triplet", "distill", "relation"))
        assert float(row["loss"]) == pytest.approx(parts, rel=1e-5)
    return first, last
