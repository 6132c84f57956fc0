"""The CI smoke config (the tiny model on synthetic faces) and the ``facenet train`` arguments
that run it into a folder of its own, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

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
