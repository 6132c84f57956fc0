"""Gallery search and clustering at scale, side by side with the plain approaches.

Identification: galleries of 10k / 100k / 1M embeddings (real face embeddings from an
embeddings file if given, e.g. LFW from ``facenet embed``, topped up with random unit vectors)
searched by

- our ``Gallery`` (SQLite + FAISS: exact flat index up to 100k, HNSW above), and
- a plain NumPy linear scan (``np.linalg.norm(gallery - probe, axis=1)``, what
  ``face_recognition.face_distance`` does),

one probe at a time (interactive identify), reporting median latency, queries/s and recall@1 of
our index against exact search.

Clustering: 10k / 100k synthetic faces (identities as clusters of unit vectors) with our sparse
average linkage vs scikit-learn's ``AgglomerativeClustering`` on the full N x N matrix where it
fits in memory.

    python benchmarks/gallery.py [--embeddings lfw.npz] [--sizes 10000 100000 1000000]
        [--cluster-sizes 10000 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from facenet.apps.cluster import cluster_embeddings, knn_graph
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


def synthetic_faces(n: int, dim: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors in identities of ``per``: a centre plus noise at face-like spread."""
    rng = np.random.default_rng(seed)
    ids = n // per
    centres = unit(rng.normal(size=(ids, dim)))
    # why: 0.06 per dimension at 128-d puts same-identity squared distances near 0.5-0.9 and
    # different-identity ones near 2, like a trained face model
    x = unit(np.repeat(centres, per, 0) + 0.06 * rng.normal(size=(ids * per, dim)))
    return x, np.repeat(np.arange(ids), per)


def bench_cluster(n: int, dim: int, threshold: float, sklearn_max: int) -> dict:
    x, y = synthetic_faces(n, dim, 10, seed=n)
    t0 = time.perf_counter()
    graph = knn_graph(x, k=20)
    t_graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    # why: scikit-learn labels every face; so must we for a like-for-like timing
    labels = cluster_embeddings(
        x, "agglomerative", threshold=threshold, graph=graph, min_cluster_size=1
    )
    t_merge = time.perf_counter() - t0
    ours = clustering_metrics(y, labels)
    row = {
        "n": n,
        "ours_s": t_graph + t_merge,
        "ours_graph_s": t_graph,
        "ours_merge_s": t_merge,
        "ours_bcubed_f": ours.bcubed_f,
        "sklearn_s": None,
        "sklearn_bcubed_f": None,
        "sklearn_note": "",
    }
    if n <= sklearn_max:
        from sklearn.cluster import AgglomerativeClustering

        t0 = time.perf_counter()
        ref = AgglomerativeClustering(
            n_clusters=None, distance_threshold=threshold / 2, metric="cosine", linkage="average"
        ).fit_predict(x)
        row["sklearn_s"] = time.perf_counter() - t0
        row["sklearn_bcubed_f"] = clustering_metrics(y, ref).bcubed_f
    else:
        gib = n * n * 8 / 2**30
        row["sklearn_note"] = f"needs the {n}x{n} distance matrix ({gib:.0f} GiB float64)"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--embeddings",
        help="real face embeddings to start from (`facenet embed` .npz or a scripts/quality.py cache)",
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--cluster-sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=512, help="without --embeddings")
    ap.add_argument("--threshold", type=float, default=1.0, help="clustering cut (squared L2)")
    ap.add_argument("--sklearn-max", type=int, default=20_000)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    real = None if args.embeddings is None else load_real_embeddings(args.embeddings)
    dim = real.shape[1] if real is not None else args.dim
    rng = np.random.default_rng(0)
    results = {"identify": [], "cluster": []}
    print("| gallery | index | ours ms | NumPy ms | ours q/s | NumPy q/s | speed-up | recall@1 |")
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
    print()
    print(
        "| faces | ours s (graph + merge) | BCubed F | sklearn full-matrix s | BCubed F | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.cluster_sizes:
        r = bench_cluster(n, 128, args.threshold, args.sklearn_max)
        results["cluster"].append(r)
        sk = f"{r['sklearn_s']:.1f}" if r["sklearn_s"] is not None else r["sklearn_note"]
        skf = f"{r['sklearn_bcubed_f']:.3f}" if r["sklearn_bcubed_f"] is not None else "-"
        ratio = f"{r['sklearn_s'] / r['ours_s']:.1f}x" if r["sklearn_s"] else "-"
        print(
            f"| {n:,} | {r['ours_s']:.1f} ({r['ours_graph_s']:.1f} + {r['ours_merge_s']:.1f}) | "
            f"{r['ours_bcubed_f']:.3f} | {sk} | {skf} | {ratio} |",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
