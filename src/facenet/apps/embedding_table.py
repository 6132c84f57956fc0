"""The file ``facenet embed`` writes: one row per face (photo, face index, box, detector score,
unit embedding) and a JSON record of how it was made (model fingerprint, crop mode, thresholds).
A folder of such files (``part-00000.parquet``, ... from ``facenet embed --out DIR/``) reads as
one table.

``.npz`` (NumPy) always; ``.parquet`` with pyarrow (the ``[parquet]`` extra). Written atomically;
read back with every column checked, so a damaged or foreign file is one error naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facenet.apps.embedder import Face
from facenet.utils import atomic_write, first_line, open_npz

EMBEDDING_FILE_FORMATS = (".npz", ".parquet")
SHARD_GLOB = "part-[0-9][0-9][0-9][0-9][0-9]*.*"  # the shards of a folder output


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The shards of a folder output, in order (temporary files of a write in progress are not
    shards)."""
    return sorted(
        p for p in Path(folder).glob(SHARD_GLOB) if p.suffix.lower() in EMBEDDING_FILE_FORMATS
    )


def read_shard_meta(path: Path) -> dict[str, Any]:
    """The metadata of one embeddings file, without reading its rows into memory."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq  # why: optional (the [parquet] extra)

            return json.loads((pq.read_schema(path).metadata or {}).get(b"facenet", b"{}"))
        with open_npz(path) as z:
            return json.loads(str(z["meta"]))
    except ImportError:
        raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    except Exception as e:  # noqa: BLE001 - NumPy, zipfile and pyarrow raise their own types
        raise ValueError(f"{path}: not a facenet embeddings file ({first_line(e)})") from None


@dataclass
class EmbeddingTable:
    """Faces written by ``facenet embed``: one row per face."""

    paths: np.ndarray  # (N,) str: the photo
    face_index: np.ndarray  # (N,) int64: face number within the photo
    boxes: np.ndarray  # (N, 4) float32: (x1, y1, x2, y2) in photo pixels
    scores: np.ndarray  # (N,) float32: detector confidence
    embeddings: np.ndarray  # (N, D) float32 unit vectors
    meta: dict[str, Any] = field(default_factory=dict)  # model fingerprint, crop mode, ...

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def from_faces(cls, faces: Sequence[Face], dim: int, meta: dict[str, Any]) -> EmbeddingTable:
        return cls(
            paths=np.array([str(f.path) for f in faces], dtype=str),
            face_index=np.array([f.face_index for f in faces], np.int64),
            boxes=np.array([f.box for f in faces], np.float32).reshape(-1, 4),
            scores=np.array([f.score for f in faces], np.float32),
            embeddings=np.array([f.embedding for f in faces], np.float32).reshape(-1, dim),
            meta=meta,
        )


def save_embeddings(path: str | os.PathLike, table: EmbeddingTable) -> Path:
    """Write ``table`` atomically as ``.npz`` (NumPy) or ``.parquet`` (needs pyarrow)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_FILE_FORMATS:
        raise ValueError(f"{path}: output must end in {' or '.join(EMBEDDING_FILE_FORMATS)}")
    if suffix == ".parquet":
        try:
            # why: pyarrow is optional (the [parquet] extra)
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(
                f"{path}: writing Parquet needs pyarrow (pip install pyarrow); or use .npz"
            ) from None
        dim = table.embeddings.shape[1]
        arrow = pa.table(
            {
                "path": pa.array(table.paths.tolist(), pa.string()),
                "face_index": pa.array(table.face_index),
                "box": pa.FixedSizeListArray.from_arrays(pa.array(table.boxes.ravel()), 4),
                "score": pa.array(table.scores),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(table.embeddings.ravel()), dim
                ),
            },
            metadata={"facenet": json.dumps(table.meta)},
        )
        with atomic_write(path) as f:
            pq.write_table(arrow, f)
        return path
    with atomic_write(path) as f:
        np.savez(
            f,
            path=table.paths,
            face_index=table.face_index,
            box=table.boxes,
            score=table.scores,
            embedding=table.embeddings,
            meta=np.array(json.dumps(table.meta)),
        )
    return path


# why: float32 unit vectors written by save_embeddings have lengths within ~1e-6 of 1 (int8
# codes decoded back stay within ~1e-2); a zero or arbitrary vector is far outside
UNIT_TOLERANCE = 0.02


def load_embeddings(path: str | os.PathLike) -> EmbeddingTable:
    """Read a file written by ``save_embeddings``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable embeddings file (corrupt, truncated, other columns, rows that
            do not line up, non-finite embeddings); the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq  # why: optional, as above

            t = pq.read_table(path)
            meta = json.loads((t.schema.metadata or {}).get(b"facenet", b"{}"))
            emb = np.array(t.column("embedding").to_pylist(), np.float32)
            table = EmbeddingTable(
                np.array(t.column("path").to_pylist(), dtype=str),
                np.array(t.column("face_index").to_pylist(), np.int64),
                np.array(t.column("box").to_pylist(), np.float32).reshape(-1, 4),
                np.array(t.column("score").to_pylist(), np.float32),
                emb.reshape(len(emb), -1),
                meta,
            )
        else:
            with open_npz(path) as z:
                table = EmbeddingTable(
                    z["path"],
                    z["face_index"],
                    z["box"],
                    z["score"],
                    z["embedding"],
                    json.loads(str(z["meta"])),
                )
    except ImportError:
        raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    except Exception as e:  # noqa: BLE001 - NumPy, zipfile and pyarrow raise their own types
        raise ValueError(f"{path}: not a facenet embeddings file ({first_line(e)})") from None
    n = len(table.paths)
    emb = np.asarray(table.embeddings)
    if (
        emb.ndim != 2
        or len(emb) != n
        or len(table.face_index) != n
        or np.asarray(table.boxes).shape != (n, 4)
        or len(table.scores) != n
        or not isinstance(table.meta, dict)
    ):
        raise ValueError(f"{path}: columns do not line up (a damaged embeddings file)")
    if not np.isfinite(emb).all():
        raise ValueError(f"{path}: holds embeddings that are NaN or infinite")
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    off = np.flatnonzero(np.abs(norms - 1) > UNIT_TOLERANCE)
    if len(off):  # why: every distance and threshold assumes unit vectors
        raise ValueError(
            f"{path}: {len(off)} of {n} embeddings are not unit vectors (row {off[0]}: length "
            f"{norms[off[0]]:.4g})"
        )
    model = table.meta.get("model")
    dim = model.get("embedding_dim") if isinstance(model, dict) else None
    if isinstance(dim, int) and n and emb.shape[1] != dim:
        raise ValueError(f"{path}: {emb.shape[1]}-d embeddings, but its model makes {dim}-d")
    return table


def _load_folder(folder: Path) -> EmbeddingTable:
    """The shards of a folder output as one table (their metadata: the first shard's, without
    the per-shard photo lists)."""
    shards = shard_files(folder)
    if not shards:
        raise ValueError(f"{folder}: a folder without embeddings shards (part-00000.parquet, ...)")
    tables = [load_embeddings(s) for s in shards]
    dims = {t.embeddings.shape[1] for t in tables if len(t)} or {tables[0].embeddings.shape[1]}
    if len(dims) > 1:
        raise ValueError(f"{folder}: shards of different embedding sizes {sorted(dims)}")
    meta = {k: v for k, v in tables[0].meta.items() if k not in ("photos", "problems")}
    return EmbeddingTable(
        np.concatenate([t.paths for t in tables]).astype(str),
        np.concatenate([t.face_index for t in tables]).astype(np.int64),
        np.concatenate([t.boxes for t in tables]).reshape(-1, 4),
        np.concatenate([t.scores for t in tables]),
        np.concatenate([t.embeddings for t in tables]).reshape(-1, dims.pop()),
        meta,
    )
