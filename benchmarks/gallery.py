"""Gallery search and clustering at scale, side by side with the plain approaches.

Identification: galleries of 10k / 100k / 1M embeddings (real face embeddings from an
embeddings file if given, e.g. LFW from ``facenet embed``, topped up with random unit vectors)
searched by

- our ``Gallery`` (SQLite + FAISS: exact flat index up to 100k, HNSW above), and
- a plain NumPy linear scan (``np.linalg.norm(gallery - probe, axis=1)``, what
  ``face_recognition.face_distance`` does),

one probe at a time (interactive identify), reporting median latency, queries/s and recall@1 of
our index against exact search.

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

    python benchmarks/gallery.py [--embeddings lfw.npz] [--sizes 10000 100000 1000000]
        [--cluster-sizes 10000 100000] [--cluster-embeddings lfw.npz --threshold 0.981901]
        [--threads 1] [--json out.json]

``--sizes`` with no value skips the gallery search.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facenet.apps.cluster import DEFAULT_K, cluster_embeddings, knn_graph
from facenet.apps.embedding_table import load_embeddings
from facenet.apps.gallery import Gallery
from facenet.apps.gallery_index import index_kind
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


def bench_identify(vectors: np.ndarray, queries: np.ndarray, k: int = 5) -> dict:
    dim = vectors.shape[1]
    model = ModelFingerprint("bench", "bench", "0" * 64, dim)
    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery(tmp)
        t0 = time.perf_counter()
        chunk = 50_000
        for start in range(0, len(vectors), chunk):
            # why: one identity per embedding is the worst case for identity grouping
            block = vectors[start : start + chunk]
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
        t_insert = time.perf_counter() - t0
        t0 = time.perf_counter()
        g.search(queries[:1], k)  # builds and saves the index
        t_index = time.perf_counter() - t0
        g.close()
        g = Gallery(tmp)  # a fresh process would load the saved index
        t0 = time.perf_counter()
        g.search(queries[:1], k)
        t_load = time.perf_counter() - t0
        lat, found = [], []
        for q in queries:
            t0 = time.perf_counter()
            m = g.search(q[None], k)[0]
            lat.append(time.perf_counter() - t0)
            found.append(int(m[0].name[2:]))
        kind = index_kind(g._fresh_index())
        g.close()
    # numpy linear scan, face_recognition style
    np_lat, exact = [], []
    for q in queries:
        t0 = time.perf_counter()
        d = np.linalg.norm(vectors - q, axis=1)
        best = np.argpartition(d, k)[:k]
        best = best[np.argsort(d[best])]
        np_lat.append(time.perf_counter() - t0)
        exact.append(int(best[0]))
    recall = float(np.mean(np.array(found) == np.array(exact)))
    return {
        "n": len(vectors),
        "index": kind,
        "ours_ms": 1e3 * float(np.median(lat)),
        "numpy_ms": 1e3 * float(np.median(np_lat)),
        "ours_qps": 1.0 / float(np.median(lat)),
        "numpy_qps": 1.0 / float(np.median(np_lat)),
        "speedup": float(np.median(np_lat) / np.median(lat)),
        "recall_at_1": recall,
        "insert_s": t_insert,
        "index_build_s": t_index,
        "index_load_s": t_load,
    }


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
    """``cluster_worker`` in a subprocess, killed past ``timeout`` s or ``mem_gib`` GiB resident."""
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    cmd = [sys.executable, __file__, "--cluster-worker", method, data, out]
    cmd += ["--threshold", str(threshold), "--k", str(k)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    t0, killed, seen_kib = time.perf_counter(), "", 0
    while proc.poll() is None:
        seen_kib = max(seen_kib, _rss_kib(proc.pid))
        if time.perf_counter() - t0 > timeout:
            killed = f"did not finish in {timeout:.0f} s"
        elif seen_kib > mem_gib * 2**20:
            killed = f"over {mem_gib:g} GiB resident"
        if killed:
            proc.kill()
            break
        time.sleep(0.1)
    stdout, _ = proc.communicate()
    row: dict = {"method": method, "note": killed, "wall_s": time.perf_counter() - t0}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("graph_s", "merge_s", "base_kib", "peak_kib"):
            row[key] = float(value)
    if not killed and proc.returncode != 0:
        row["note"] = f"failed (exit {proc.returncode})"
    if "peak_kib" not in row and seen_kib:
        row["peak_kib"] = float(seen_kib)  # sampled every 0.1 s up to the kill
    return row


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
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
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
    rng = np.random.default_rng(0)
    results: dict = {"identify": [], "cluster": []}
    if args.sizes:
        print(
            "| gallery | index | ours ms | NumPy ms | ours q/s | NumPy q/s | speed-up | recall@1 |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for n in args.sizes:
            vectors = make_gallery_vectors(real, n, dim, seed=n)
            # probes: noisy copies of gallery faces (a new photo of an enrolled person)
            pick = rng.choice(min(n, len(real)) if real is not None else n, args.queries)
            queries = unit(vectors[pick] + 0.03 * rng.normal(size=(args.queries, dim)))
            r = bench_identify(vectors, queries)
            results["identify"].append(r)
            print(
                f"| {n:,} | {r['index']} | {r['ours_ms']:.2f} | {r['numpy_ms']:.2f} | "
                f"{r['ours_qps']:,.0f} | {r['numpy_qps']:,.0f} | {r['speedup']:.1f}x | "
                f"{r['recall_at_1']:.3f} |",
                flush=True,
            )
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
