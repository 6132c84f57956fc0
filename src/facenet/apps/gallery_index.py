"""The FAISS index file of a gallery (``index.faiss``): building the index, writing and reading it.

Search. Embeddings are unit vectors, so squared L2 distance = ``2 - 2 * inner product``; the index
ranks by inner product. Up to ``approximate_above`` embeddings it is an exact ``IndexFlatIP``;
above, an HNSW graph (approximate, logarithmic query time). Either is wrapped in an
``IndexIDMap2`` that answers with the gallery's embedding ids.

File format::

    magic "FNGIDX01" | u32 little-endian header length | JSON header | faiss.serialize_index bytes

The header holds what binds the file to its database (``gallery_id``, ``generation``, ``max_id``,
``weights_hash``; see ``facenet.apps.gallery``). A writer returns the SHA-256 of the bytes it
wrote, which the database records; a reader given that checksum refuses any other bytes.

FAISS is the optional ``gallery`` extra: it is imported when an index is built or read, so this
module (and the gallery) import without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facenet.utils import atomic_write

INDEX_NAME = "index.faiss"
INDEX_MAGIC = b"FNGIDX01"
# why: below ~100k vectors an exact scan answers in about a millisecond on one core; above it an
# HNSW graph keeps queries well under a millisecond at recall ~0.99 (see benchmarks/gallery.py).
DEFAULT_APPROXIMATE_ABOVE = 100_000
HNSW_M = 32  # graph degree: the usual accuracy/memory trade-off for 128-d vectors
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


def _faiss() -> Any:
    # why: faiss is the optional `gallery` extra; import it only when an index is touched
    import faiss

    return faiss


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads inside the block (None: leave as is).

    why: for one probe, OpenMP start-up and barrier waits cost far more than the scan itself
    (measured 42 ms vs 0.5 ms per query on a busy 2-core machine, 10k x 128 flat index).
    """
    faiss = _faiss()
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def build_index(
    vectors: np.ndarray, ids: np.ndarray, approximate_above: int = DEFAULT_APPROXIMATE_ABOVE
) -> Any:
    """A FAISS inner-product index over (N, D) unit ``vectors`` answering with int64 ``ids``.

    Exact (``IndexFlatIP``) up to ``approximate_above`` vectors, HNSW above.
    """
    faiss = _faiss()
    d = vectors.shape[1]
    if len(vectors) > approximate_above:
        base = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        base.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        base = faiss.IndexFlatIP(d)
    index = faiss.IndexIDMap2(base)
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids.astype(np.int64))
    return index


def index_kind(index: Any) -> str:
    """``"hnsw"`` or ``"flat"``: the search structure inside ``index`` (ids map unwrapped)."""
    faiss = _faiss()
    base = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    return "hnsw" if isinstance(base, faiss.IndexHNSW) else "flat"


def write_index_file(path: Path, index: Any, header: dict[str, Any]) -> str:
    """``magic | u32 header length | JSON header | faiss bytes``, written atomically; returns
    the SHA-256 of the bytes written."""
    blob = _faiss().serialize_index(index).tobytes()
    head = json.dumps(header).encode()
    h = hashlib.sha256()
    with atomic_write(path) as f:
        for part in (INDEX_MAGIC, struct.pack("<I", len(head)), head, blob):
            f.write(part)
            h.update(part)
    return h.hexdigest()


def read_index_file(path: Path, sha256: str | None = None) -> tuple[dict[str, Any], Any] | None:
    """The header and index of ``path``, or None when it is missing, unreadable or its bytes do
    not have the SHA-256 ``sha256`` (when given)."""
    faiss = _faiss()
    try:
        data = path.read_bytes()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            return None
        if not data.startswith(INDEX_MAGIC):
            return None
        (n,) = struct.unpack_from("<I", data, len(INDEX_MAGIC))
        start = len(INDEX_MAGIC) + 4
        header = json.loads(data[start : start + n])
        index = faiss.deserialize_index(np.frombuffer(data[start + n :], dtype=np.uint8))
        return header, index
    except (OSError, ValueError, RuntimeError, struct.error):
        return None
