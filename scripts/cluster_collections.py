"""Clustering quality on real photo collections: every method x threshold x minimum cluster size.

Reads one or more embedding files written by ``facenet embed`` (one face per photo with
``--subject-only``); the identity of a face is the name of its photo's parent folder (LFW:
``lfw-deepfunneled/<Name>/<Name>_0001.jpg``; CelebA-wild: ``images/<identity>/<file>.jpg``).
For each file it scores every face (a real collection: most people are strangers seen once) and,
with ``--min-images``, the subset of people with at least that many faces (the README's old
clustering table used LFW people with >= 5 images, which hides over-merging of strangers).

Sweep: every method (``agglomerative``, ``hdbscan``, ``chinese-whispers``) x thresholds (the
model's named operating points such as ``accuracy`` and ``far_1e-3``, plus a grid; HDBSCAN has no
threshold) x minimum cluster size (faces in clusters smaller than this are left unclustered,
label -1, as ``facenet.apps.cluster.cluster_embeddings`` does). One k-NN graph per set serves
every row.

Scoring (``facenet.eval.clustering.clustering_metrics``): **an unclustered face counts as a
singleton** (its own cluster) in every metric, so leaving a stranger unclustered is correct and
leaving one of a person's photos out costs recall. Columns: clusters = predicted clusters of 2+
faces; unclustered = fraction of faces in no such cluster; BCubed precision / recall / F
(per-face averages); pairwise F1.

    facenet embed ../shared/data/lfw/lfw-deepfunneled --subject-only --out lfw_all.npz
    facenet embed ../shared/data/celeba-wild/images --subject-only --out celeba_all.npz
    python scripts/cluster_collections.py lfw_all.npz celeba_all.npz --names LFW CelebA-wild \\
        --min-images 1 LFW=5 --json sweep.json --plot sweep.png --progress
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from facenet.apps.cluster import (
    DEFAULT_K,
    DEFAULT_METHOD,
    DEFAULT_MIN_CLUSTER_SIZE,
    METHODS,
    apply_min_cluster_size,
    average_linkage,
    chinese_whispers,
    hdbscan_graph,
    knn_graph,
)
from facenet.apps.embedding_table import load_embeddings
from facenet.apps.thresholds import DEFAULT_OPERATING_POINT
from facenet.eval.clustering import clustering_metrics
from facenet.models.card import card_of
from facenet.models.loading import load_model

GRID = (0.60, 1.30, 0.05)  # default threshold grid: start, stop (inclusive), step
MIN_SIZES = (2, 3, 4, 5, 6, 7, 8)  # 6 is the default of `facenet cluster`


@dataclass
class FaceSet:
    """Faces of one collection (or a subset) with identity labels."""

    name: str
    labels: np.ndarray  # (N,) str: parent folder of each face's photo
    embeddings: np.ndarray  # (N, D) float32 unit vectors
    thresholds: dict[str, float] = field(default_factory=dict)  # the model's named thresholds
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_people(self) -> int:
        return len(np.unique(self.labels))


def model_thresholds(ref: str) -> dict[str, float]:
    """The named calibrated thresholds of model ``ref`` ({} when it cannot be loaded)."""
    try:
        return {k: float(v) for k, v in card_of(load_model(ref)).thresholds.items()}
    except Exception as e:  # noqa: BLE001 - named thresholds are optional; the grid still runs
        print(f"cluster_collections: no thresholds from model {ref!r}: {e}", file=sys.stderr)
        return {}


def load_set(path: Path, name: str, model: str | None = None) -> FaceSet:
    """An embedding file as a ``FaceSet``: labels from each photo's parent folder."""
    table = load_embeddings(path)
    ref = model or table.meta.get("model", {}).get("ref") or "inception_resnet_v1:casia-webface"
    labels = np.array([Path(p).parent.name for p in table.paths.tolist()])
    photos = len(set(table.paths.tolist()))
    return FaceSet(
        name=name,
        labels=labels,
        embeddings=np.asarray(table.embeddings, np.float32),
        thresholds=model_thresholds(ref),
        info={"file": str(path), "model": ref, "photos": photos, "faces": len(labels)},
    )


def subset_min_images(s: FaceSet, min_images: int) -> FaceSet:
    """The faces of people with at least ``min_images`` faces in ``s``."""
    if min_images <= 1:
        return s
    _, inverse, counts = np.unique(s.labels, return_inverse=True, return_counts=True)
    keep = counts[inverse] >= min_images
    return FaceSet(
        name=f"{s.name} (people with >= {min_images})",
        labels=s.labels[keep],
        embeddings=s.embeddings[keep],
        thresholds=s.thresholds,
        info={**s.info, "min_images": min_images},
    )


def random_subset(s: FaceSet, n: int, seed: int) -> FaceSet:
    """``n`` faces of ``s`` drawn without replacement (a smaller collection of the same kind)."""
    keep = np.sort(np.random.default_rng(seed).choice(len(s.labels), size=n, replace=False))
    return FaceSet(
        name=f"{s.name}, {n:,} random faces",
        labels=s.labels[keep],
        embeddings=s.embeddings[keep],
        thresholds=s.thresholds,
        info={**s.info, "sample": n, "seed": seed},
    )


def mean_rows(runs: list[list[dict[str, Any]]], seeds: int) -> list[dict[str, Any]]:
    """Row-by-row means over the runs of several seeds (same sweep, same row order)."""
    out = []
    for same in zip(*runs, strict=True):
        row = dict(same[0])
        row["set"] = f"{row['set']} (mean of {seeds} seeds)"
        for key, value in row.items():
            if isinstance(value, float) and key != "threshold":
                row[key] = float(np.mean([r[key] for r in same]))
        for key in ("clusters", "people"):
            row[key] = round(float(np.mean([r[key] for r in same])))
        out.append(row)
    return out


def pair_false_accepts(s: FaceSet, thresholds: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """For each threshold: the share of different-person pairs of ``s`` at squared distance <=
    it (every pair counted once, in row chunks: no N x N matrix), and what that means per face,
    the look-alikes a face meets in a collection of this size."""
    x = s.embeddings.astype(np.float32)
    _, y = np.unique(s.labels, return_inverse=True)
    values = np.array([v for _, v in thresholds], np.float64)
    hits = np.zeros(len(values), np.int64)
    n, different = len(x), 0
    for start in range(0, n, 1024):
        block = x[start : start + 1024]
        d = np.clip(2.0 - 2.0 * block @ x.T, 0.0, 4.0)  # (b, N)
        rows = np.arange(start, start + len(block))[:, None]
        mask = (np.arange(n)[None, :] > rows) & (y[start : start + len(block), None] != y[None, :])
        pairs = d[mask]
        different += pairs.size
        hits += (pairs[None, :] <= values[:, None]).sum(axis=1)
    return [
        {
            "set": s.name,
            "threshold_name": label,
            "threshold": value,
            "different_pairs": different,
            "false_accept_rate": h / max(different, 1),
            "lookalikes_per_face": 2 * h / n,
        }
        for (label, value), h in zip(thresholds, hits.tolist(), strict=True)
    ]


def min_images_for(specs: list[str], name: str) -> list[int]:
    """The ``--min-images`` entries (``N`` or ``NAME=N``) that apply to set ``name``, in order,
    without duplicates."""
    out: list[int] = []
    for spec in specs:
        target, _, value = spec.rpartition("=")
        if target and target != name:
            continue
        if int(value) not in out:
            out.append(int(value))
    return out


def threshold_list(
    s: FaceSet, named: list[str], grid: tuple[float, float, float] | None
) -> list[tuple[str, float]]:
    """(label, value) of the thresholds to try: named operating points the model has (a name
    that parses as a number is taken as a value), then the grid; sorted by value, duplicates
    of a named point's value dropped from the grid."""
    out: dict[float, str] = {}
    for key in named:
        try:
            value = float(key)
            out.setdefault(round(value, 6), f"{value:.3f}")
        except ValueError:
            if key in s.thresholds:
                out[round(s.thresholds[key], 6)] = key
    if grid is not None:
        start, stop, step = grid
        for v in np.arange(start, stop + step / 2, step):
            out.setdefault(round(float(v), 6), f"{v:.3f}")
    return [(label, value) for value, label in sorted(out.items())]


def sweep_set(
    s: FaceSet,
    methods: list[str],
    thresholds: list[tuple[str, float]],
    min_sizes: list[int],
    k: int,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One row per (method, threshold, min cluster size) on face set ``s``."""
    t0 = time.perf_counter()
    graph = knn_graph(s.embeddings, k=k)
    graph_s = time.perf_counter() - t0
    jobs: list[tuple[str, str | None, float | None]] = []
    for method in methods:
        if method == "hdbscan":
            jobs.append((method, None, None))
        else:
            jobs.extend((method, label, value) for label, value in thresholds)
    rows: list[dict[str, Any]] = []
    for method, label, value in tqdm(jobs, desc=s.name, disable=not progress, leave=False):
        if method == "hdbscan":
            # HDBSCAN's min_cluster_size is its own parameter: one run per size
            runs = []
            for m in min_sizes:
                t = time.perf_counter()
                pred = apply_min_cluster_size(hdbscan_graph(graph, min_cluster_size=m), m)
                runs.append((m, pred, time.perf_counter() - t))
        else:
            t = time.perf_counter()
            if method == "agglomerative":
                base = average_linkage(s.embeddings, value, graph)
            else:
                base = chinese_whispers(graph, value)
            dt = time.perf_counter() - t
            runs = [(m, apply_min_cluster_size(base, m), dt) for m in min_sizes]
        for m, pred, dt in runs:
            r = clustering_metrics(s.labels, pred)
            rows.append(
                {
                    "set": s.name,
                    "faces": len(s.labels),
                    "people": s.n_people,
                    "method": method,
                    "threshold_name": label,
                    "threshold": value,
                    "min_cluster_size": m,
                    "clusters": r.n_groups,
                    "unclustered": r.unclustered_fraction,
                    "bcubed_precision": r.bcubed_precision,
                    "bcubed_recall": r.bcubed_recall,
                    "bcubed_f": r.bcubed_f,
                    "pairwise_precision": r.pairwise_precision,
                    "pairwise_recall": r.pairwise_recall,
                    "pairwise_f1": r.pairwise_f1,
                    "nmi": r.nmi,
                    "cluster_seconds": dt,
                    "graph_seconds": graph_s,
                }
            )
    return rows


def markdown_table(rows: list[dict[str, Any]], mark: dict[tuple, str] | None = None) -> str:
    """Markdown table of sweep rows; ``mark`` maps (method, threshold_name, min size) to a note
    (e.g. "default")."""
    mark = mark or {}
    head = (
        "| set | faces / people | method | threshold | min size | clusters | unclustered "
        "| BCubed P | BCubed R | BCubed F | pairwise F1 | |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if r["threshold"] is None:
            thr = "—"
        elif r["threshold_name"] and not r["threshold_name"][0].isdigit():
            thr = f"{r['threshold']:.3f} ({r['threshold_name']})"
        else:
            thr = f"{r['threshold']:.3f}"
        note = mark.get((r["method"], r["threshold_name"], r["min_cluster_size"]), "")
        lines.append(
            f"| {r['set']} | {r['faces']:,} / {r['people']:,} | {r['method']} | {thr} "
            f"| {r['min_cluster_size']} | {r['clusters']:,} | {r['unclustered']:.3f} "
            f"| {r['bcubed_precision']:.3f} | {r['bcubed_recall']:.3f} | {r['bcubed_f']:.3f} "
            f"| {r['pairwise_f1']:.3f} | {note} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, min_size: int) -> None:
    """BCubed precision vs recall, one panel per set, one curve per method across thresholds at
    minimum cluster size ``min_size`` (HDBSCAN: one point per minimum cluster size)."""
    # why: matplotlib loads only with --plot, and the Agg backend must be chosen before pyplot
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(r["set"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.6), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        for method, style in (
            ("agglomerative", "o-"),
            ("chinese-whispers", "s-"),
            ("hdbscan", "^:"),
        ):
            sel = [r for r in rows if r["set"] == name and r["method"] == method]
            if method != "hdbscan":
                sel = [r for r in sel if r["min_cluster_size"] == min_size]
            if not sel:
                continue
            sel.sort(key=lambda r: (r["threshold"] or 0.0, r["min_cluster_size"]))
            x = [r["bcubed_recall"] for r in sel]
            y = [r["bcubed_precision"] for r in sel]
            (line,) = ax.plot(x, y, style, ms=4, label=method)
            for r in sel:
                named = r["threshold_name"] and not r["threshold_name"][0].isdigit()
                if named or method == "hdbscan":
                    text = r["threshold_name"] if named else f"m={r['min_cluster_size']}"
                    ax.annotate(
                        text,
                        (r["bcubed_recall"], r["bcubed_precision"]),
                        fontsize=7,
                        color=line.get_color(),
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        ax.axhline(0.95, color="grey", lw=0.6, ls="--")
        ax.set_title(
            f"{name}\n(min cluster size {min_size}; thresholds grow to the right)", fontsize=9
        )
        ax.set_xlabel("BCubed recall")
        ax.set_ylabel("BCubed precision")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("embeddings", nargs="+", type=Path, help="files written by `facenet embed`")
    ap.add_argument("--names", nargs="+", help="a name per file (default: the file name)")
    ap.add_argument(
        "--min-images",
        nargs="+",
        default=["1"],
        metavar="[NAME=]N",
        help="score the people with >= N faces (1 = everyone) of every set, or of set NAME only "
        "(e.g. 1 LFW=5: everyone, plus LFW's people with >= 5)",
    )
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument(
        "--thresholds",
        nargs="+",
        default=["accuracy", "far_1e-3"],
        help="named operating points of the model and/or numbers (squared L2)",
    )
    ap.add_argument(
        "--grid",
        nargs=3,
        type=float,
        metavar=("START", "STOP", "STEP"),
        default=list(GRID),
        help=f"threshold grid (default {GRID[0]} {GRID[1]} {GRID[2]})",
    )
    ap.add_argument("--no-grid", action="store_true", help="only the --thresholds")
    ap.add_argument(
        "--sample",
        nargs="+",
        type=int,
        default=[],
        metavar="N",
        help="also score random collections of N faces of each set (mean over --seeds)",
    )
    ap.add_argument("--seeds", type=int, default=3, help="random draws per --sample size")
    ap.add_argument(
        "--pair-far",
        action="store_true",
        help="print each named threshold's false-accept rate over every different-person pair",
    )
    ap.add_argument("--min-sizes", nargs="+", type=int, default=list(MIN_SIZES))
    ap.add_argument("--k", type=int, default=DEFAULT_K, help="neighbours per face in the graph")
    ap.add_argument("--model", help="model whose thresholds to use (default: the file's)")
    ap.add_argument("--json", type=Path, help="write every row here")
    ap.add_argument("--plot", type=Path, help="write a BCubed precision-recall plot here")
    ap.add_argument(
        "--plot-min-size",
        type=int,
        default=DEFAULT_MIN_CLUSTER_SIZE,
        help="minimum cluster size of the plotted curves",
    )
    ap.add_argument("--progress", action="store_true", help="show progress")
    args = ap.parse_args(argv)
    if args.names and len(args.names) != len(args.embeddings):
        ap.error("give one --names entry per embeddings file")
    for spec in args.min_images:
        try:
            int(spec.rpartition("=")[2])
        except ValueError:
            ap.error(f"--min-images {spec!r}: expected N or NAME=N")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.names or [p.stem for p in args.embeddings]
    grid = None if args.no_grid else tuple(args.grid)
    rows: list[dict[str, Any]] = []
    pair_rows: list[dict[str, Any]] = []
    sets_info = []
    t_start = time.perf_counter()
    for path, name in zip(args.embeddings, names, strict=True):
        try:
            base = load_set(path, name, args.model)
        except (OSError, ValueError) as e:
            print(f"cluster_collections: {e}", file=sys.stderr)
            return 1
        for m in min_images_for(args.min_images, name):
            s = subset_min_images(base, m)
            if len(s.labels) < 2:
                print(f"cluster_collections: {s.name}: fewer than 2 faces", file=sys.stderr)
                continue
            counts = np.unique(s.labels, return_counts=True)[1]
            info = {
                **s.info,
                "set": s.name,
                "faces": int(len(s.labels)),
                "people": int(len(counts)),
                "people_seen_once": int((counts == 1).sum()),
                "largest_identity": int(counts.max()),
                "thresholds": s.thresholds,
            }
            sets_info.append(info)
            if args.progress:
                print(
                    f"{s.name}: {info['faces']:,} faces of {info['people']:,} people "
                    f"({info['people_seen_once']:,} seen once)",
                    file=sys.stderr,
                )
            t = time.perf_counter()
            thresholds = threshold_list(s, args.thresholds, grid)
            part = sweep_set(s, args.methods, thresholds, args.min_sizes, args.k, args.progress)
            info["sweep_seconds"] = time.perf_counter() - t
            rows.extend(part)
            if args.pair_far and m <= 1:
                named = threshold_list(s, args.thresholds, None)
                for r in pair_false_accepts(s, named):
                    pair_rows.append(r)
                    print(
                        f"{r['set']}: {r['threshold_name']} ({r['threshold']:.3f}): false-accept "
                        f"rate {r['false_accept_rate']:.2e} over {r['different_pairs']:,} "
                        f"different pairs, {r['lookalikes_per_face']:.1f} look-alikes per face",
                        file=sys.stderr,
                    )
        for n in args.sample:
            if n >= len(base.labels):
                continue
            runs = [
                sweep_set(
                    random_subset(base, n, seed),
                    args.methods,
                    threshold_list(base, args.thresholds, grid),
                    args.min_sizes,
                    args.k,
                )
                for seed in range(args.seeds)
            ]
            rows.extend(mean_rows(runs, args.seeds))
    # the old `facenet cluster`: agglomerative at the accuracy threshold, every face labelled
    # (a face alone scores the same as an unclustered one, so min size 2 shows it)
    mark = {("agglomerative", "accuracy", 2): "old default"}
    mark[(DEFAULT_METHOD, DEFAULT_OPERATING_POINT, DEFAULT_MIN_CLUSTER_SIZE)] = "**default**"
    print(markdown_table(rows, mark))
    elapsed = time.perf_counter() - t_start
    print(f"\n{len(rows)} rows in {elapsed:.0f} s", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "defaults": {
                        "method": DEFAULT_METHOD,
                        "operating_point": DEFAULT_OPERATING_POINT,
                        "min_cluster_size": DEFAULT_MIN_CLUSTER_SIZE,
                    },
                    "k": args.k,
                    "sets": sets_info,
                    "rows": rows,
                    "pair_false_accepts": pair_rows,
                    "seconds": elapsed,
                },
                indent=1,
            )
        )
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(rows, args.plot, args.plot_min_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
