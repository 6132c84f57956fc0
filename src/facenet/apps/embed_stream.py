"""Embeddings of any number of photos in bounded memory: a folder of shards, written as it goes,
that a rerun resumes.

``facenet embed PHOTOS --out DIR/`` (or ``--shard-photos N``) writes ``DIR/part-00000.parquet``
(or ``.npz``), ``part-00001...``, each an ordinary embeddings file (``embedding_table``) for the
next ``shard_photos`` photos. A shard is written atomically (temporary file, then rename) and
records in its metadata every photo it covers, the ones that gave no face included, with why. So:

- memory holds one shard's faces at a time, whatever the number of photos;
- a run killed at any instant leaves whole shards only, and a rerun skips every photo a shard
  already covers (the output then equals an uninterrupted run's, shard boundaries aside);
- a folder made with another model, crop or ``subject_only`` is refused, never mixed.

``load_embeddings(DIR)`` reads the folder back as one table (``embedding_table``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from facenet.apps.embedder import PhotoResult
from facenet.apps.embedding_table import (
    EmbeddingTable,
    read_shard_meta,
    save_embeddings,
    shard_files,
)

DEFAULT_SHARD_PHOTOS = 1000
# what must match between a folder's shards and a rerun (the rest of meta may differ)
SAME_RUN_KEYS = ("model", "crop", "detector", "subject_only")


@dataclass
class StreamReport:
    """What ``embed_to_shards`` did."""

    photos: int  # photos given
    already_done: int  # skipped: a shard from an earlier run covers them
    faces: int = 0  # faces written by this run
    unreadable: int = 0
    faceless: int = 0
    shards: list[Path] = field(default_factory=list)  # written by this run
    problems: list[str] = field(default_factory=list)  # one line per photo without a face

    @property
    def with_faces(self) -> int:
        return self.photos - self.already_done - self.unreadable - self.faceless


def _shown(value: Any) -> str:
    """A shard setting for a message: a model as its reference and short weights hash."""
    if isinstance(value, dict) and "weights_hash" in value:
        name = value.get("ref") or value.get("name") or "a model"
        return f"{name} (weights {str(value['weights_hash'])[:12]})"
    return repr(value)


def done_photos(out_dir: Path, meta: dict[str, Any]) -> tuple[set[str], int]:
    """The photos the shards in ``out_dir`` cover, and the next free shard number.

    Raises:
        ValueError: a shard made by another model, crop, detector or ``subject_only``, or a
            shard that cannot be read (the message names it).
    """
    covered: set[str] = set()
    last = -1
    for shard in shard_files(out_dir):
        theirs = read_shard_meta(shard)
        for key in SAME_RUN_KEYS:
            if theirs.get(key) != meta.get(key):
                raise ValueError(
                    f"{shard}: made with {key} {_shown(theirs.get(key))}, this run has "
                    f"{_shown(meta.get(key))}; use another --out folder (shards of different "
                    "runs are never mixed)"
                )
        covered.update(theirs.get("photos", []))
        last = max(last, int(shard.stem.split("-")[-1]))
    return covered, last + 1


def embed_to_shards(
    results: Callable[[Sequence[str]], Iterable[PhotoResult]],
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    meta: dict[str, Any],
    dim: int,
    shard_photos: int = DEFAULT_SHARD_PHOTOS,
    fmt: str = "parquet",
    progress: bool = True,
) -> StreamReport:
    """Embed ``paths`` into shards of ``shard_photos`` photos in ``out_dir``, skipping photos a
    shard there already covers.

    Args:
        results: the photos still to do -> one ``PhotoResult`` each, in order, lazily
            (``Embedder.embed_files`` with its options bound, or ``RayEngine.results``).
        meta: recorded in every shard (model fingerprint, crop, detector, subject_only, ...).
        dim: the embedding dimension (for a shard without faces).
        fmt: ``parquet`` or ``npz``.
    """
    if fmt not in ("parquet", "npz"):
        raise ValueError(f"shard format must be parquet or npz, not {fmt!r}")
    if shard_photos < 1:
        raise ValueError(f"shard_photos must be at least 1, got {shard_photos}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file; a sharded output is a folder")
    out.mkdir(parents=True, exist_ok=True)
    covered, number = done_photos(out, meta)
    todo = [str(p) for p in paths if str(p) not in covered]
    report = StreamReport(len(paths), len(paths) - len(todo))
    bar = tqdm(total=len(todo), desc="embedding", unit=" photos", disable=not progress)
    try:
        stream = iter(results(todo))  # why: one stream, so an engine keeps its workers warm
        for start in range(0, len(todo), shard_photos):
            group = todo[start : start + shard_photos]
            rows = _Rows(dim)
            problems: dict[str, str] = {}
            for path in group:
                result = next(stream)
                if result.path != path:
                    raise RuntimeError(f"the engine answered {result.path} for {path}")
                if result.error:
                    problems[result.path] = result.error
                    report.unreadable += 1
                elif not result.faces:
                    problems[result.path] = f"{result.path}: no face found"
                    report.faceless += 1
                rows.add(result)
                bar.update(1)
            table = rows.table({**meta, "photos": group, "problems": problems})
            shard = out / f"part-{number:05d}.{fmt}"
            save_embeddings(shard, table)  # atomic: the shard is whole or absent
            number += 1
            report.faces += len(table)
            report.shards.append(shard)
            report.problems.extend(problems.values())
    finally:
        bar.close()
    return report


class _Rows:
    """One shard's faces as columns (the crops are dropped as soon as a face is added)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.paths: list[str] = []
        self.index: list[int] = []
        self.boxes: list[tuple[float, ...]] = []
        self.scores: list[float] = []
        self.vectors: list[np.ndarray] = []

    def add(self, result: PhotoResult) -> None:
        for f in result.faces:
            self.paths.append(str(f.path))
            self.index.append(int(f.face_index))
            self.boxes.append(tuple(float(v) for v in f.box))
            self.scores.append(float(f.score))
            self.vectors.append(np.asarray(f.embedding, np.float32))

    def table(self, meta: dict[str, Any]) -> EmbeddingTable:
        return EmbeddingTable(
            paths=np.array(self.paths, dtype=str),
            face_index=np.array(self.index, np.int64),
            boxes=np.array(self.boxes, np.float32).reshape(-1, 4),
            scores=np.array(self.scores, np.float32),
            embeddings=np.array(self.vectors, np.float32).reshape(-1, self.dim),
            meta=meta,
        )
