"""Gallery search and clustering at scale, side by side with the plain approaches.

Identification: galleries of 100k / 1M embeddings (real face embeddings from an embeddings
file if given, e.g. LFW from ``facenet embed``, topped up with random unit vectors; probes are
noisy copies of real faces, searched one at a time: an interactive identify) on each of
``--backends``, side by side:

- ``numpy:scan``: a plain linear scan (``np.linalg.norm(gallery - probe, axis=1)``, what
  ``face_recognition.face_distance`` does), the exact reference for latency;
- ``embedded:KIND``: our default backend (SQLite + a FAISS index file) with the index forced to
  ``flat``, ``sq8``, ``ivf_flat``, ``ivf_sq8`` or ``hnsw`` (``Gallery(folder, index=KIND)``; default
  parameters: ``nlist = 4 sqrt(N)``, ``nprobe = max(16, nlist / 64)``). The rows are loaded once
  (insert rate: SQLite transactions of 50,000 rows, one identity per embedding) and the database
  copied for each kind; index build = ``rebuild_index()`` (reading the rows from SQLite included);
- ``milvus-lite:KIND``: Milvus Lite in process (``milvus-lite:///x.db?index=KIND``), rows
  inserted ``MILVUS_BATCH`` at a time; index build = flush + load + the first search (Milvus
  builds per sealed segment).

Each cell runs in its own subprocess, killed past ``--cell-timeout`` seconds or
``--cell-mem-gib`` GiB resident (with its children): the table then says "limit hit" and keeps
what the cell measured before. Columns: inserts/s, index build s, load s (a fresh process's first
search), p50/p99 latency of single-probe ``search``, recall@1 against exact search, bytes per face
on disk of the index file and of the store (SQLite database; Milvus Lite's whole data folder),
peak resident MiB.

Clustering: 10k / 100k faces, every face labelled (minimum cluster size 1), average linkage cut
at ``--threshold`` (squared L2) by

- ours (``facenet cluster``'s ``agglomerative``): exact average linkage over the candidate
  pairs of a FAISS k-NN graph (k = ``DEFAULT_K``; exact search below 20k faces, IVF above),
- scikit-learn ``AgglomerativeClustering(linkage="average", connectivity=kneighbors_graph(X, k))``,
  the sparse peer: the same k, the same cut (cosine distance = squared L2 / 2 on unit vectors),
  its own exact k-NN graph, and
- scikit-learn ``AgglomerativeClustering(linkage="average")`` on the full N x N matrix where it
  fits in memory (``--sklearn-max``).

Each method runs in its own subprocess, which reports its peak resident memory (``ru_maxrss``);
the parent kills it past ``--cluster-timeout`` seconds or ``--cluster-mem-gib`` GiB resident and
reports that instead of a time. Agreement: adjusted Rand index and pairwise F1 of each clustering
against ours, and BCubed F against the identity labels. The faces are synthetic identities of 10
(128-d), or with ``--cluster-embeddings`` real faces with identity labels (a ``facenet embed``
file: the parent folder of each photo; LFW: 13,232 faces) -- a random subset up to their count,
above it all of them topped up with synthetic identities of the same dimension and spread; the
BCubed F column then scores the real faces only.

    python benchmarks/gallery.py [--embeddings lfw.npz] [--sizes 100000 1000000]
        [--backends embedded:flat milvus-lite:flat ...] [--skip embedded:hnsw@1000000]
        [--cell-timeout 900] [--cell-mem-gib 12] [--queries 200]
        [--cluster-sizes 10000 100000] [--cluster-embeddings lfw.npz --threshold 0.981901]
        [--threads 1] [--json out.json]

``--sizes`` with no value skips the gallery search.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facenet.apps.cluster import DEFAULT_K, cluster_embeddings, knn_graph
from facenet.apps.embedding_table import load_embeddings
from facenet.apps.gallery import FaceRecord, Gallery
from facenet.apps.gallery_index import INDEX_NAME, index_kind
from facenet.eval.clustering import clustering_metrics
from facenet.fingerprint import ModelFingerprint


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def load_real_embeddings(path: str) -> np.ndarray:
    """(N, D) float32 from a `facenet embed` file or a `scripts/quality.py` cache (key
    `embeddings`)."""
    with np.load(path, allow_pickle=False) as z:
        if "embeddings" in z.files:
            return unit(z["embeddings"].astype(np.float64))
    return load_embeddings(path).embeddings.astype(np.float32)


def make_gallery_vectors(real: np.ndarray | None, n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [] if real is None else [real[:n]]
    missing = n - sum(len(p) for p in parts)
    if missing > 0:
        parts.append(unit(rng.normal(size=(missing, dim))))
    return np.concatenate(parts).astype(np.float32)


BACKENDS = (
    "numpy:scan",
    "embedded:flat",
    "embedded:sq8",
    "embedded:ivf_flat",
    "embedded:ivf_sq8",
    "embedded:hnsw",
    "milvus-lite:flat",
    "milvus-lite:ivf_flat",
    "milvus-lite:ivf_sq8",
    "milvus-lite:hnsw",
)
MILVUS_BATCH = 10_000


def _model(dim: int) -> ModelFingerprint:
    return ModelFingerprint("bench", "bench", "0" * 64, dim)


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _hwm_kib() -> int:
    """Peak resident memory of this process image (``VmHWM``, KiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _say(key: str, value: object) -> None:
    """One result line for the parent (it keeps what came before a kill)."""
    print(f"{key} {value}", flush=True)


def insert_embedded(folder: Path, vectors: np.ndarray) -> None:
    """Bulk-load ``vectors`` as one identity per embedding (the worst case for identity grouping):
    SQLite transactions of 50,000 rows, the same rows ``enroll`` writes."""
    g = Gallery(folder)
    model = _model(vectors.shape[1])
    for start in range(0, len(vectors), 50_000):
        block = np.ascontiguousarray(vectors[start : start + 50_000], np.float32)
        with g._transaction() as db:
            if g.model is None:
                g._set_meta("model", json.dumps(model.to_dict()))
            for i, v in enumerate(block):
                j = start + i
                ident = db.execute(
                    "INSERT INTO identities (name, created_at) VALUES (?, 0)", (f"id{j}",)
                ).lastrowid
                img = db.execute(
                    "INSERT INTO images (identity_id, path, added_at) VALUES (?, ?, 0)",
                    (ident, f"{j}.jpg"),
                ).lastrowid
                db.execute(
                    "INSERT INTO embeddings (image_id, identity_id, face_index, vector,"
                    " model_name, model_version, weights_hash) VALUES (?,?,0,?,?,?,?)",
                    (img, ident, v.tobytes(), "bench", "bench", "0" * 64),
                )
            g._set_meta("generation", str(g.generation + 1))
    g.close()


def insert_milvus(location: str, vectors: np.ndarray) -> Any:
    """The gallery's first identity through ``enroll`` (creates the collections), the rest as
    the rows ``enroll`` inserts, ``MILVUS_BATCH`` per ``insert`` call."""
    g = Gallery(location)
    model = _model(vectors.shape[1])
    g.enroll("id0", [FaceRecord(vectors[0], "0.jpg")], model)
    row = g._client.query(g.collection, filter="id >= 0", output_fields=["*"], limit=1)[0]
    base = {k: v for k, v in row.items() if k not in ("id", "vector")}
    for start in range(1, len(vectors), MILVUS_BATCH):
        block = np.asarray(vectors[start : start + MILVUS_BATCH], np.float32)
        rows = []
        for i, v in enumerate(block.tolist()):
            j = start + i
            rows.append({**base, "vector": v, "identity": f"id{j}", "identity_id": j,
                         "image_id": j, "path": f"{j}.jpg"})  # fmt: skip
        g._client.insert(g.collection, rows)
    return g


def identify_worker(
    backend: str, n: int, data: str, work: str, template: str | None, sweep: list[int]
) -> None:
    """One cell in this process: prints ``insert_s``, ``build_s``, ``load_s``, ``p50_ms``,
    ``p99_ms``, ``recall_at_1``, ``index_bytes``, ``store_bytes``, ``peak_kib`` lines as it goes;
    for an IVF index, ``sweep`` lines: recall@1 and p50 at each nprobe of ``sweep``."""

    store, kind = backend.split(":")
    vectors = np.load(Path(data) / "vectors.npy", mmap_mode="r")
    queries = np.load(Path(data) / "queries.npy")
    exact = np.load(Path(data) / "exact.npy")
    k = 5
    found: list[int] = []
    lat: list[float] = []
    if store == "numpy":
        x = np.asarray(vectors)
        for q in queries:
            t0 = time.perf_counter()
            d = np.linalg.norm(x - q, axis=1)  # face_recognition.face_distance
            best = np.argpartition(d, k)[:k]
            best = best[np.argsort(d[best])]
            lat.append(time.perf_counter() - t0)
            found.append(int(best[0]))
    elif store == "embedded":
        folder = Path(work) / "g"
        if template is None:
            t0 = time.perf_counter()
            insert_embedded(folder, vectors)
            _say("insert_s", time.perf_counter() - t0)
        else:
            folder.mkdir(parents=True)
            shutil.copy(Path(template) / "g" / "gallery.sqlite", folder / "gallery.sqlite")
        g = Gallery(folder, index=kind)
        t0 = time.perf_counter()
        g.rebuild_index()  # reads every embedding from SQLite, builds, writes index.faiss
        _say("build_s", time.perf_counter() - t0)
        g.close()
        g = Gallery(folder)  # a fresh process loads the saved index
        t0 = time.perf_counter()
        g.search(queries[:1], k)
        _say("load_s", time.perf_counter() - t0)
        index = g._fresh_index()
        _say("index", index_kind(index))
        if hasattr(index, "nlist"):
            _say("params", f"nlist={index.nlist},nprobe={index.nprobe}")
        _say("index_bytes", (folder / INDEX_NAME).stat().st_size)
        _say("store_bytes", (folder / "gallery.sqlite").stat().st_size)
        for q in queries:
            t0 = time.perf_counter()
            m = g.search(q[None], k)[0]
            lat.append(time.perf_counter() - t0)
            found.append(int(m[0].name[2:]))
        for nprobe in sweep if hasattr(index, "nprobe") else ():
            # why: a search setting (no rebuild): recall and latency of other nprobe values
            g.set_index(nprobe=nprobe)
            sweep_lat, sweep_found = [], []
            for q in queries:
                t0 = time.perf_counter()
                m = g.search(q[None], k)[0]
                sweep_lat.append(time.perf_counter() - t0)
                sweep_found.append(int(m[0].name[2:]))
            recall = float(np.mean(np.array(sweep_found) == exact))
            _say(
                "sweep",
                f"nprobe={nprobe}:recall={recall:.3f}:p50_ms={1e3 * np.median(sweep_lat):.2f}",
            )
        g.close()
    else:
        path = Path(work) / "m.db"
        location = f"milvus-lite:///{path}?index={kind}"
        t0 = time.perf_counter()
        g = insert_milvus(location, vectors)
        _say("insert_s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        # why: Milvus builds its index per sealed segment; flush seals, load makes it searchable
        g._client.flush(g.collection)
        g._client.release_collection(g.collection)
        g._client.load_collection(g.collection)
        g.search(queries[:1], k)
        _say("build_s", time.perf_counter() - t0)
        info = g._client.describe_index(g.collection, "vector")
        _say("index", info.get("index_type", "?"))
        g.close()
        t0 = time.perf_counter()
        g = Gallery(location)
        g.search(queries[:1], k)
        _say("load_s", time.perf_counter() - t0)
        for q in queries:
            t0 = time.perf_counter()
            m = g.search(q[None], k)[0]
            lat.append(time.perf_counter() - t0)
            found.append(int(m[0].name[2:]))
        raw = []  # the engine alone: one search call, no grouping, no count or model look-up
        for q in queries:
            t0 = time.perf_counter()
            g._client.search(g.collection, data=[q.tolist()], limit=k, output_fields=["identity"],
                             search_params={"metric_type": "IP", "params": g._spec["search"]})  # fmt: skip
            raw.append(time.perf_counter() - t0)
        _say("raw_p50_ms", 1e3 * float(np.median(raw)))
        g.close()
        _say("store_bytes", _disk_bytes(Path(work)))
    ms = 1e3 * np.array(lat)
    _say("p50_ms", float(np.percentile(ms, 50)))
    _say("p99_ms", float(np.percentile(ms, 99)))
    _say("recall_at_1", float(np.mean(np.array(found) == exact)))
    # why: VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and
    # exec, so a worker of a parent holding 1M vectors would report the parent's peak
    _say("peak_kib", _hwm_kib())


def run_worker(cmd: list[str], timeout: float, mem_gib: float, threads: int | None) -> dict:
    """``cmd`` (this script as a worker) in a subprocess, killed past ``timeout`` s or ``mem_gib``
    GiB resident; its ``key value`` lines, with ``note`` saying why it stopped early."""
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    t0, killed, seen_kib = time.perf_counter(), "", 0
    while proc.poll() is None:
        seen_kib = max(seen_kib, _rss_tree_kib(proc.pid))
        if time.perf_counter() - t0 > timeout:
            killed = f"limit hit: did not finish in {timeout:.0f} s"
        elif seen_kib > mem_gib * 2**20:
            killed = f"limit hit: over {mem_gib:g} GiB resident"
        if killed:
            proc.kill()
            break
        time.sleep(0.1)
    stdout, _ = proc.communicate()
    row: dict = {"note": killed, "wall_s": time.perf_counter() - t0, "tree_peak_kib": seen_kib}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("index", "params", "method"):
            row[key] = value
        elif key == "sweep":
            row.setdefault("sweep", []).append(value)
        elif key:
            with contextlib.suppress(ValueError):
                row[key] = float(value)
    if not killed and proc.returncode != 0:
        row["note"] = f"failed (exit {proc.returncode})"
    if "peak_kib" not in row and seen_kib:
        row["peak_kib"] = float(seen_kib)  # sampled every 0.1 s up to the kill
    return row


def _rss_tree_kib(pid: int) -> int:
    """Resident memory of a process and its children (Milvus Lite runs a server process)."""
    total = _rss_kib(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(_rss_tree_kib(int(c)) for c in children)


def identify_data(real: np.ndarray | None, n: int, dim: int, queries: int, folder: Path) -> None:
    """vectors.npy (real faces topped up with random unit vectors), queries.npy (noisy copies of
    real faces: a new photo of an enrolled person) and exact.npy (their exact nearest rows)."""
    vectors = make_gallery_vectors(real, n, dim, seed=n)
    rng = np.random.default_rng(n + 1)
    pick = rng.choice(min(n, len(real)) if real is not None else n, queries)
    q = unit(vectors[pick] + 0.03 * rng.normal(size=(queries, dim)))
    best = np.full(queries, -1)
    best_sim = np.full(queries, -np.inf)
    for start in range(0, n, 100_000):
        sims = vectors[start : start + 100_000] @ q.T
        top = sims.argmax(0)
        better = sims[top, np.arange(queries)] > best_sim
        best[better] = start + top[better]
        best_sim[better] = sims[top, np.arange(queries)][better]
    np.save(folder / "vectors.npy", vectors)
    np.save(folder / "queries.npy", q)
    np.save(folder / "exact.npy", best)


def bench_identify(
    real: np.ndarray | None,
    n: int,
    dim: int,
    backends: list[str],
    queries: int,
    timeout: float,
    mem_gib: float,
    threads: int | None,
    skip: set[str],
    nprobes: list[int],
    on_row: Any = None,
) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        identify_data(real, n, dim, queries, data)
        template: str | None = None
        for backend in backends:
            if f"{backend}@{n}" in skip:
                row = {"backend": backend, "n": n, "note": "not run (--skip)"}
                rows.append(row)
                if on_row:
                    on_row(row)
                continue
            work = Path(tmp) / backend.replace(":", "_")
            work.mkdir()
            cmd = [sys.executable, __file__, "--identify-worker", backend, str(n), str(data)]
            cmd += [str(work), "--nprobes", *map(str, nprobes)]
            if backend.startswith("embedded:") and template is not None:
                cmd += ["--template", template]
            row = run_worker(cmd, timeout, mem_gib, threads)
            row.update(backend=backend, n=n, queries=queries)
            if backend.startswith("embedded:") and template is None and "insert_s" in row:
                template = str(work)  # the next embedded cells copy this database
            elif backend.startswith("embedded:"):
                shutil.rmtree(work, ignore_errors=True)
            if not backend.startswith("embedded:"):
                shutil.rmtree(work, ignore_errors=True)
            if template is not None and backend.startswith("embedded:") and "insert_s" not in row:
                row["insert_s"] = next(
                    (r["insert_s"] for r in rows if r.get("n") == n and "insert_s" in r), None
                )
                row["insert_shared"] = True
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


def identify_row_text(r: dict) -> str:
    def num(key: str, fmt: str, scale: float = 1.0) -> str:
        v = r.get(key)
        return "–" if v is None else format(v * scale, fmt)

    n = r["n"]
    rate = f"{n / r['insert_s']:,.0f}" if r.get("insert_s") else "–"
    if r.get("insert_shared"):
        rate += " (shared)"
    index = r.get("index", "–") + (f" ({r['params']})" if r.get("params") else "")
    per_face = lambda key: "–" if r.get(key) is None else f"{r[key] / n:,.0f}"  # noqa: E731
    return (
        f"| {n:,} | {r['backend']} | {index} | {rate} | {num('build_s', '.1f')} | "
        f"{num('load_s', '.2f')} | {num('p50_ms', '.2f')} | {num('p99_ms', '.2f')} | "
        f"{num('recall_at_1', '.3f')} | {per_face('index_bytes')} | {per_face('store_bytes')} | "
        f"{num('peak_kib', ',.0f', 1 / 1024)} / {num('tree_peak_kib', ',.0f', 1 / 1024)} | "
        f"{r.get('note') or ''}"
        + (f" engine alone p50 {r['raw_p50_ms']:.2f} ms" if r.get("raw_p50_ms") else "")
        + " |"
    )


IDENTIFY_HEADER = (
    "| gallery | backend | index | inserts/s | index build s | load s | p50 ms | p99 ms | "
    "recall@1 | index B/face | store B/face | peak MiB (worker / with children) | note |\n"
    "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def synthetic_faces(
    n: int, dim: int, per: int, seed: int, spread: float = 0.06
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors in identities of ``per``: a centre plus noise at face-like spread."""
    rng = np.random.default_rng(seed)
    ids = n // per
    centres = unit(rng.normal(size=(ids, dim)))
    # why: 0.06 per dimension at 128-d puts same-identity squared distances near 0.5-0.9 and
    # different-identity ones near 2, like a trained face model
    x = unit(np.repeat(centres, per, 0) + spread * rng.normal(size=(ids * per, dim)))
    return x, np.repeat(np.arange(ids), per)


CLUSTER_METHODS = ("ours", "sklearn-knn", "sklearn-full")
METHOD_TEXT = {
    "ours": "ours (FAISS k-NN graph, exact average linkage)",
    "sklearn-knn": "scikit-learn, k-NN connectivity",
    "sklearn-full": "scikit-learn, full matrix",
}


def real_faces(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, D) unit embeddings and (N,) identity labels (the parent folder of each photo) of a
    `facenet embed` file; a `scripts/quality.py` cache gives ``labels`` if it has them."""
    with np.load(path, allow_pickle=False) as z:
        if "embeddings" in z.files:
            labels = z["labels"] if "labels" in z.files else None
            return unit(z["embeddings"].astype(np.float64)), labels
    table = load_embeddings(path)
    labels = np.array([Path(str(q)).parent.name for q in table.paths.tolist()])
    return unit(table.embeddings.astype(np.float64)), labels


def cluster_faces(
    n: int, real: tuple[np.ndarray, np.ndarray | None] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, D) faces, (n,) int identity labels and (n,) bool "scored" mask (the faces whose labels
    are real identities, or all of them when the faces are synthetic)."""
    if real is None:
        x, y = synthetic_faces(n, 128, 10, seed=n)
        return x, y, np.ones(n, bool)
    emb, names = real
    rng = np.random.default_rng(n)
    if n <= len(emb):
        pick = np.sort(rng.choice(len(emb), size=n, replace=False))
        emb, names = emb[pick], None if names is None else names[pick]
    if names is None:  # no identities: each real face its own, scored nowhere
        y, scored = np.arange(len(emb)), np.zeros(len(emb), bool)
    else:
        y, scored = np.unique(names, return_inverse=True)[1], np.ones(len(emb), bool)
    missing = n - len(emb)
    if missing <= 0:
        return emb, y, scored
    dim = emb.shape[1]
    # why: the same noise norm as synthetic_faces' 0.06 at 128-d, so filler identities have the
    # same within-identity spread at any dimension
    fx, fy = synthetic_faces(
        -(-missing // 10) * 10, dim, 10, seed=n, spread=0.06 * (128 / dim) ** 0.5
    )
    return (
        np.concatenate([emb, fx[:missing]]).astype(np.float32),
        np.concatenate([y, fy[:missing] + y.max() + 1]),
        np.concatenate([scored, np.zeros(missing, bool)]),
    )


def _rss_kib(pid: int | str = "self") -> int:
    """Resident memory of a process now (KiB), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cluster_worker(method: str, data: str, out: str, threshold: float, k: int) -> None:
    """One clustering in this process: prints ``graph_s``, ``merge_s``, ``base_kib`` (resident
    after imports and loading the faces) and ``peak_kib`` (``ru_maxrss``) lines; labels to
    ``out``."""
    import resource

    from sklearn.cluster import AgglomerativeClustering
    from sklearn.neighbors import kneighbors_graph

    x = np.load(data)
    print(f"base_kib {_rss_kib()}", flush=True)
    t0 = time.perf_counter()
    if method == "ours":
        graph = knn_graph(x, k=k)
    elif method == "sklearn-knn":
        graph = kneighbors_graph(x, n_neighbors=k, mode="connectivity", include_self=False)
    else:
        graph = None
    print(f"graph_s {time.perf_counter() - t0}", flush=True)
    t0 = time.perf_counter()
    if method == "ours":
        # why: scikit-learn labels every face; so must we for a like-for-like timing
        labels = cluster_embeddings(
            x, "agglomerative", threshold=threshold, graph=graph, min_cluster_size=1
        )
    else:
        # cosine distance = squared L2 / 2 on unit vectors: the same average linkage, same cut
        labels = AgglomerativeClustering(
            n_clusters=None,
            distance_threshold=threshold / 2,
            metric="cosine",
            linkage="average",
            connectivity=graph,
        ).fit_predict(x)
    print(f"merge_s {time.perf_counter() - t0}", flush=True)
    np.save(out, np.asarray(labels, np.int64))
    print(f"peak_kib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)


def run_cluster_worker(
    method: str,
    data: str,
    out: str,
    threshold: float,
    k: int,
    timeout: float,
    mem_gib: float,
    threads: int | None,
) -> dict:
    """``cluster_worker`` in a subprocess (``run_worker``: killed past ``timeout`` s or
    ``mem_gib`` GiB resident)."""
    cmd = [sys.executable, __file__, "--cluster-worker", method, data, out]
    cmd += ["--threshold", str(threshold), "--k", str(k)]
    return {**run_worker(cmd, timeout, mem_gib, threads), "method": method}


def pair_f1(a: np.ndarray, b: np.ndarray) -> float:
    """Pairwise F1 of two clusterings (symmetric: either may be the reference)."""
    from sklearn.metrics.cluster import pair_confusion_matrix

    c = pair_confusion_matrix(a, b).astype(np.float64)
    both, one = c[1, 1], c[0, 1] + c[1, 0]
    return 1.0 if both + one == 0 else float(2 * both / (2 * both + one))


def bench_cluster(
    n: int,
    real: tuple[np.ndarray, np.ndarray | None] | None,
    threshold: float,
    sklearn_max: int,
    timeout: float,
    mem_gib: float,
    threads: int | None,
    k: int = DEFAULT_K,
) -> list[dict]:
    from sklearn.metrics import adjusted_rand_score

    x, y, scored = cluster_faces(n, real)
    rows, labels = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "faces.npy")
        np.save(data, x)
        for method in CLUSTER_METHODS:
            if method == "sklearn-full" and n > sklearn_max:
                gib = n * (n - 1) / 2 * 8 / 2**30
                note = f"not run: the condensed {n:,}² distance matrix alone is {gib:.1f} GiB"
                rows.append({"method": method, "note": note})
                continue
            out = str(Path(tmp) / f"{method}.npy")
            r = run_cluster_worker(method, data, out, threshold, k, timeout, mem_gib, threads)
            if not r["note"]:
                labels[method] = np.load(out)
            rows.append(r)
    for r in rows:
        r.update(n=n, k=k, threshold=threshold, scored_faces=int(scored.sum()))
        got = labels.get(r["method"])
        if got is None:
            continue
        r["total_s"] = r["graph_s"] + r["merge_s"]
        r["clusters"] = int(len(np.unique(got)))
        if scored.any():
            m = clustering_metrics(y[scored], got[scored])
            r["bcubed_f"], r["pairwise_f1_truth"] = m.bcubed_f, m.pairwise_f1
        if "ours" in labels:
            r["ari_vs_ours"] = float(adjusted_rand_score(labels["ours"], got))
            r["pairwise_f1_vs_ours"] = pair_f1(labels["ours"], got)
    return rows


def cluster_row_text(r: dict) -> str:
    def num(key: str, fmt: str) -> str:
        return format(r[key], fmt) if r.get(key) is not None else "–"

    mib = lambda key: f"{r[key] / 1024:,.0f}" if r.get(key) else "–"  # noqa: E731
    if r.get("total_s") is None:
        graph = f"{r['graph_s']:.1f}" if r.get("graph_s") is not None else "–"
        time_cell = f"{r['note']} (k-NN graph {graph} s)" if r.get("graph_s") else r["note"]
        return (
            f"| {r['n']:,} | {METHOD_TEXT[r['method']]} | {time_cell} | "
            f"{mib('peak_kib')} | – | – | – | – | – |"
        )
    extra = (r["peak_kib"] - r["base_kib"]) / 1024 if r.get("base_kib") else None
    graph = "–" if r["method"] == "sklearn-full" else f"{r['graph_s']:.1f}"
    return (
        f"| {r['n']:,} | {METHOD_TEXT[r['method']]} | {r['total_s']:.1f} "
        f"({graph} + {r['merge_s']:.1f}) | {mib('peak_kib')}"
        + (f" (+{extra:,.0f})" if extra is not None else "")
        + f" | {r['clusters']:,} | {num('bcubed_f', '.3f')} | {num('pairwise_f1_truth', '.3f')} | "
        f"{num('ari_vs_ours', '.3f')} | {num('pairwise_f1_vs_ours', '.3f')} |"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--identify-worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("--identify-worker", nargs=4)
        wp.add_argument("--template")
        wp.add_argument("--nprobes", type=int, nargs="*", default=[])
        w = wp.parse_args()
        backend, n, data, work = w.identify_worker
        identify_worker(backend, int(n), data, work, w.template, w.nprobes)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--cluster-worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("--cluster-worker", nargs=3)
        wp.add_argument("--threshold", type=float)
        wp.add_argument("--k", type=int)
        w = wp.parse_args()
        cluster_worker(*w.cluster_worker, threshold=w.threshold, k=w.k)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--embeddings",
        help="real face embeddings to start from (`facenet embed` .npz or a scripts/quality.py cache)",
    )
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--skip", nargs="*", default=[], metavar="BACKEND@N", help="cells not to run")
    ap.add_argument(
        "--nprobes", type=int, nargs="*", default=[8, 16, 32, 64, 128],
        help="also measure embedded IVF cells at these nprobe values (search setting)",
    )  # fmt: skip
    ap.add_argument("--cell-timeout", type=float, default=900.0, help="seconds per cell")
    ap.add_argument("--cell-mem-gib", type=float, default=12.0, help="resident GiB per cell")
    ap.add_argument("--cluster-sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument(
        "--cluster-embeddings",
        help="real faces with identities to cluster (`facenet embed` .npz); default synthetic",
    )
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=512, help="without --embeddings")
    ap.add_argument("--threshold", type=float, default=1.0, help="clustering cut (squared L2)")
    ap.add_argument("--sklearn-max", type=int, default=20_000, help="largest full-matrix run")
    ap.add_argument("--cluster-timeout", type=float, default=600.0, help="seconds per clustering")
    ap.add_argument(
        "--cluster-mem-gib", type=float, default=12.0, help="resident GiB per clustering"
    )
    ap.add_argument("--threads", type=int, help="OpenMP/BLAS threads of the clustering runs")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    real = None if args.embeddings is None else load_real_embeddings(args.embeddings)
    dim = real.shape[1] if real is not None else args.dim
    results: dict = {"identify": [], "cluster": []}
    if args.sizes:
        print(
            f"identify: {args.queries} probes one at a time, {os.cpu_count()} CPUs, threads "
            f"{args.threads or 'default'}, cells limited to {args.cell_timeout:.0f} s and "
            f"{args.cell_mem_gib:g} GiB"
        )
        print(IDENTIFY_HEADER, flush=True)
        for n in args.sizes:
            results["identify"].extend(
                bench_identify(
                    real,
                    n,
                    dim,
                    args.backends,
                    args.queries,
                    args.cell_timeout,
                    args.cell_mem_gib,
                    args.threads,
                    set(args.skip),
                    args.nprobes,
                    on_row=lambda r: print(identify_row_text(r), flush=True),
                )  # fmt: skip
            )
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2))
        sweeps = [r for r in results["identify"] if r.get("sweep")]
        if sweeps:
            print("\nembedded IVF indexes, nprobe (a search setting) against recall@1 and p50 ms:")
            print("| gallery | backend | nlist | nprobe: recall@1 (p50 ms) |\n|---:|---|---:|---|")
        for r in sweeps:
            cells = []
            for item in r["sweep"]:
                parts = dict(kv.split("=") for kv in item.split(":"))
                cells.append(f"{parts['nprobe']}: {parts['recall']} ({parts['p50_ms']})")
            nlist = r.get("params", "").split(",")[0].removeprefix("nlist=")
            print(f"| {r['n']:,} | {r['backend']} | {nlist} | {'; '.join(cells)} |")
    if args.cluster_sizes:
        faces = None if args.cluster_embeddings is None else real_faces(args.cluster_embeddings)
        print(
            f"\nclustering: average linkage cut at {args.threshold:g} (squared L2), k = {DEFAULT_K}, "
            f"threads {args.threads or 'default'}, {os.cpu_count()} CPUs"
        )
        print(
            "| faces | method | s (k-NN graph + merge) | peak MiB (+ over the loaded faces) | "
            "clusters | BCubed F | pair F1 | ARI vs ours | pair F1 vs ours |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for n in args.cluster_sizes:
            rows = bench_cluster(
                n,
                faces,
                args.threshold,
                args.sklearn_max,
                args.cluster_timeout,
                args.cluster_mem_gib,
                args.threads,
            )
            results["cluster"].extend(rows)
            for r in rows:
                print(cluster_row_text(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
