"""The FAISS index file of a gallery (``index.faiss``): choosing and building the index, writing
and reading it.

Search. Embeddings are unit vectors, so squared L2 distance = ``2 - 2 * inner product``; every
index ranks by inner product and answers with the gallery's embedding ids. Four kinds
(``INDEX_KINDS``):

- ``flat``: exact ``IndexFlatIP`` (in an ``IndexIDMap2``), 4 bytes per dimension;
- ``sq8``: ``IndexScalarQuantizer`` (8-bit, each dimension's range trained on the gallery): an
  exhaustive scan over one byte per dimension, 128 bytes per 128-d face (SPEC §2), at a quarter
  of ``flat``'s memory; its distances carry the quantisation error;
- ``hnsw``: an HNSW graph (``IndexHNSWFlat``, M 32), approximate; slow to build at 1M (> 20 min
  on two cores, 60 s at 100k), so it is only used when asked for;
- ``ivf_flat``: ``IndexIVFFlat``, k-means cells (``nlist``, default ``4 * sqrt(N)``) trained on
  a sample, a query scans the ``nprobe`` nearest cells; 4 bytes per dimension;
- ``ivf_sq8``: ``IndexIVFScalarQuantizer`` (8-bit), the same cells with each dimension in one
  byte: 128 bytes per 128-d face, the paper's figure.

``IndexSpec`` is a gallery's choice: ``kind="auto"`` is exact up to ``approximate_above``
embeddings and ``AUTO_APPROXIMATE`` above; ``nlist``/``nprobe`` default by size. The file's
header records the kind and parameters it was built with (``"index"``), so an index that no longer
matches the choice (or outgrew its IVF training, ``IVF_REGROW``) is rebuilt rather than appended
to. ``nprobe`` and HNSW's ``efSearch`` are search settings: applied when an index is used, never a
reason to rebuild.

File format::

    magic "FNGIDX01" | u32 little-endian header length | JSON header | faiss.serialize_index bytes

The header holds what binds the file to its database (``gallery_id``, ``generation``, ``max_id``,
``weights_hash``; see ``facenet.apps.gallery_sqlite``) and the built ``index`` spec. A writer
returns the SHA-256 of the bytes it wrote, which the database records; a reader given that
checksum refuses any other bytes.

FAISS is the optional ``gallery`` extra: it is imported when an index is built or read, so this
module (and the gallery) import without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facenet.utils import atomic_write

INDEX_NAME = "index.faiss"
INDEX_MAGIC = b"FNGIDX01"
INDEX_KINDS = ("flat", "sq8", "hnsw", "ivf_flat", "ivf_sq8")
# why: below ~100k vectors an exact scan answers in about ten milliseconds on one core; above it
# an approximate index keeps queries at a few milliseconds (see benchmarks/gallery.py).
DEFAULT_APPROXIMATE_ABOVE = 100_000
# why: at 1M x 512-d (LFW + random filler, 2 shared cores, benchmarks/gallery.py) IVF-Flat
# (nlist 4000, nprobe 62) built in 124 s from SQLite with recall@1 1.000 and 3.9 ms p50; HNSW
# (M 32, efConstruction 80) took over 20 minutes; int8 IVF: 122 s, recall 1.000, a quarter of
# the bytes, kept as a choice (its distances carry a small quantisation error).
AUTO_APPROXIMATE = "ivf_flat"
HNSW_M = 32  # graph degree: the usual accuracy/memory trade-off for 128-d vectors
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_TRAIN_PER_CELL = 40  # k-means training points per cell (FAISS warns below 39)
IVF_MIN_TRAIN = 1_000  # an IVF kind over fewer vectors is built exact (flat): too few to train
IVF_DEFAULT_NPROBE_FRACTION = 1 / 64  # cells scanned per query, of nlist
IVF_MIN_NPROBE = 16
IVF_REGROW = 2.0  # an IVF index whose gallery has grown past this factor is retrained


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


@dataclass(frozen=True)
class IndexSpec:
    """A gallery's index choice: ``kind`` (``"auto"`` or one of ``INDEX_KINDS``), IVF cells
    ``nlist`` and cells searched ``nprobe`` (None: by size), HNSW ``ef_search``."""

    kind: str = "auto"
    nlist: int | None = None
    nprobe: int | None = None
    approximate_above: int = DEFAULT_APPROXIMATE_ABOVE

    def __post_init__(self) -> None:
        if self.kind not in ("auto", *INDEX_KINDS):
            raise ValueError(
                f"index kind {self.kind!r}: choose one of auto, {', '.join(INDEX_KINDS)}"
            )
        for name in ("nlist", "nprobe"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer, not {value!r}")

    def kind_for(self, n: int) -> str:
        """The kind used for ``n`` embeddings: the chosen one, or by size for ``auto``; an IVF
        kind with too few vectors to train its cells is exact (``flat``) instead."""
        kind = self.kind
        if kind == "auto":
            kind = AUTO_APPROXIMATE if n > self.approximate_above else "flat"
        if _trained(kind) and n < IVF_MIN_TRAIN:
            return "flat"
        return kind

    def nlist_for(self, n: int) -> int:
        """IVF cells for ``n`` vectors: the chosen ``nlist`` or ``4 * sqrt(n)``, at most one per
        ``IVF_TRAIN_PER_CELL`` vectors."""
        want = self.nlist or int(round(4 * math.sqrt(max(n, 1))))
        return max(1, min(want, n // IVF_TRAIN_PER_CELL))

    def nprobe_for(self, nlist: int) -> int:
        want = self.nprobe or max(IVF_MIN_NPROBE, int(round(nlist * IVF_DEFAULT_NPROBE_FRACTION)))
        return max(1, min(want, nlist))

    def built(self, n: int) -> dict[str, Any]:
        """What an index built now over ``n`` vectors is (the header's ``index``)."""
        kind = self.kind_for(n)
        spec: dict[str, Any] = {"kind": kind, "trained_on": n}
        if kind.startswith("ivf"):
            spec["nlist"] = self.nlist_for(n)
            spec["nlist_asked"] = self.nlist  # None: by size
        return spec

    def can_append(self, built: dict[str, Any] | None, n: int) -> bool:
        """Whether an index built as ``built`` may take appended vectors up to ``n`` in all."""
        if not built or built.get("kind") != self.kind_for(n):
            return False
        if not _trained(built["kind"]):
            return True
        if built["kind"].startswith("ivf") and built.get("nlist_asked") != self.nlist:
            return False  # another nlist was chosen since
        # why: cells (or int8 ranges) trained on a much smaller gallery fit it less; retrain
        return n <= IVF_REGROW * max(int(built.get("trained_on", 0)), 1)

    def to_meta(self) -> dict[str, str]:
        return {
            "index_kind": self.kind,
            "index_nlist": "" if self.nlist is None else str(self.nlist),
            "index_nprobe": "" if self.nprobe is None else str(self.nprobe),
        }


def _trained(kind: str) -> bool:
    """Whether an index of ``kind`` is trained on the gallery's vectors (IVF cells, int8
    ranges): too few vectors make it flat, a gallery that outgrew it rebuilds it."""
    return kind.startswith("ivf") or kind == "sq8"


def _base(index: Any) -> Any:
    faiss = _faiss()
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    approximate_above: int | IndexSpec = DEFAULT_APPROXIMATE_ABOVE,
) -> Any:
    """A FAISS inner-product index over (N, D) unit ``vectors`` answering with int64 ``ids``,
    of the kind ``spec`` (an ``IndexSpec``, or the ``approximate_above`` of an auto one) gives
    for N vectors; ready to search (``nprobe``/``efSearch`` set)."""
    spec = (
        approximate_above
        if isinstance(approximate_above, IndexSpec)
        else IndexSpec(approximate_above=approximate_above)
    )
    faiss = _faiss()
    n, d = vectors.shape
    kind = spec.kind_for(n)
    x = np.ascontiguousarray(vectors, np.float32)
    ids = np.ascontiguousarray(ids, np.int64)
    if kind.startswith("ivf"):
        nlist = spec.nlist_for(n)
        quantizer = faiss.IndexFlatIP(d)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
        sample = min(n, IVF_TRAIN_PER_CELL * nlist)
        if sample < n:  # why: a fixed seed, so a rebuild of the same rows is the same index
            rows = np.random.default_rng(0).choice(n, sample, replace=False)
            index.train(x[np.sort(rows)])
        else:
            index.train(x)
        for start in range(0, n, 100_000):  # why: bounded temporary memory while assigning
            index.add_with_ids(x[start : start + 100_000], ids[start : start + 100_000])
    else:
        if kind == "hnsw":
            base = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        elif kind == "sq8":
            base = faiss.IndexScalarQuantizer(
                d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            base.train(x)  # why: per-dimension min/max, a pass over the vectors
        else:
            base = faiss.IndexFlatIP(d)
        index = faiss.IndexIDMap2(base)
        if n:
            index.add_with_ids(x, ids)
    configure_search(index, spec)
    return index


def configure_search(index: Any, spec: IndexSpec) -> None:
    """Set the search-time parameters of ``spec`` on ``index`` (IVF ``nprobe``, HNSW
    ``efSearch``); they never need a rebuild."""
    faiss = _faiss()
    base = _base(index)
    if isinstance(base, faiss.IndexIVF):
        base.nprobe = spec.nprobe_for(base.nlist)
    elif isinstance(base, faiss.IndexHNSW):
        base.hnsw.efSearch = HNSW_EF_SEARCH


def index_kind(index: Any) -> str:
    """``"flat"``, ``"sq8"``, ``"hnsw"``, ``"ivf_flat"`` or ``"ivf_sq8"``: the search structure of
    ``index`` (ids map unwrapped)."""
    faiss = _faiss()
    base = _base(index)
    if isinstance(base, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(base, faiss.IndexIVFScalarQuantizer):
        return "ivf_sq8"
    if isinstance(base, faiss.IndexIVF):
        return "ivf_flat"
    if isinstance(base, faiss.IndexScalarQuantizer):
        return "sq8"
    return "flat"


def write_index_file(path: Path, index: Any, header: dict[str, Any]) -> str:
    """``magic | u32 header length | JSON header | faiss bytes``, written atomically; returns
    the SHA-256 of the bytes written.

    why streamed: ``serialize_index`` would hold a second copy of the index in memory (2 GB more
    for 1M x 512-d), and a third for its bytes.
    """
    faiss = _faiss()
    head = json.dumps(header).encode()
    h = hashlib.sha256()
    with atomic_write(path) as f:

        def put(part: bytes) -> int:
            f.write(part)
            h.update(part)
            return len(part)

        for part in (INDEX_MAGIC, struct.pack("<I", len(head)), head):
            put(part)
        faiss.write_index(index, faiss.PyCallbackIOWriter(put))
    return h.hexdigest()


def read_index_file(path: Path, sha256: str | None = None) -> tuple[dict[str, Any], Any] | None:
    """The header and index of ``path``, or None when it is missing, unreadable or its bytes do
    not have the SHA-256 ``sha256`` (when given).

    The checksum is verified (one pass over the file) before FAISS parses a byte of it; the index
    is then read in a second pass, streamed, never holding the file's bytes in memory.
    """
    faiss = _faiss()
    try:
        with path.open("rb") as f:
            if sha256 is not None:
                h = hashlib.sha256()
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                if h.hexdigest() != sha256:
                    return None
                f.seek(0)
            if f.read(len(INDEX_MAGIC)) != INDEX_MAGIC:
                return None
            (n,) = struct.unpack("<I", f.read(4))
            header = json.loads(f.read(n))
            index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        return header, index
    except (OSError, ValueError, RuntimeError, struct.error):
        return None
