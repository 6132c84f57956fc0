"""Application quality on real data: open-set identification and clustering of aligned faces.

Input: a folder of aligned face crops, one sub-folder per identity (``facenet align`` output,
e.g. LFW or CelebA-wild). Embeddings are cached in ``--cache`` so reruns are instant.

- identification (``facenet.eval.identification``): the first image of every person with >= 2
  images is enrolled, their other images are known probes, people with one image are unknown
  probes; rank-1 and DIR at FAR = 1e-3.
- clustering (``facenet.eval.clustering``): the faces of people with >= ``--min-images`` images,
  clustered with each method at the model's threshold; pairwise F1 and BCubed F.

    python scripts/quality.py aligned/lfw_box160 --model inception_resnet_v1:casia-webface
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from facenet.apps.cluster import METHODS, cluster_embeddings, knn_graph
from facenet.apps.embedder import Embedder
from facenet.data.images import is_image_file
from facenet.eval.clustering import clustering_metrics
from facenet.eval.identification import evaluate_identification, gallery_probe_split
from facenet.models.card import card_of
from facenet.models.loading import load_model


def embed_folder(
    folder: Path, model: str, cache: Path, max_people: int | None, seed: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, labels, (N, D) embeddings) of every crop under ``folder`` (cached)."""
    people = sorted(p for p in folder.iterdir() if p.is_dir())
    if max_people is not None and len(people) > max_people:
        rng = np.random.default_rng(seed)
        people = sorted(rng.choice(people, max_people, replace=False).tolist())
    paths = [str(f) for p in people for f in sorted(p.iterdir()) if is_image_file(f)]
    labels = np.array([Path(p).parent.name for p in paths])
    cache.parent.mkdir(parents=True, exist_ok=True)
    known: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as z:
            known = dict(zip(z["paths"].tolist(), z["embeddings"], strict=True))
    todo = [p for p in paths if p not in known]
    if todo:
        embedder = Embedder.from_ref(model, crop="none")
        for start in range(0, len(todo), 512):
            part = todo[start : start + 512]
            for r in embedder.embed_files(part, progress=True):
                if r.faces:
                    known[r.path] = r.faces[0].embedding
            np.savez(
                cache,
                paths=np.array(list(known)),
                embeddings=np.stack(list(known.values())),
            )
    keep = [i for i, p in enumerate(paths) if p in known]
    if not keep:
        raise SystemExit(f"no face crops found under {folder}")
    return (
        [paths[i] for i in keep],
        labels[keep],
        np.stack([known[paths[i]] for i in keep]).astype(np.float32),
    )


def identification_summary(paths: list[str], labels: np.ndarray, emb: np.ndarray) -> dict:
    """Open-set identification of every face: the first photo (by path) of each person with two
    or more is enrolled, their other photos are known probes, people seen once are unknown."""
    split = gallery_probe_split(labels.tolist(), keys=paths)
    rep = evaluate_identification(
        emb[split.gallery],
        labels[split.gallery].tolist(),
        emb[split.probes],
        labels[split.probes].tolist(),
        emb[split.unknown] if len(split.unknown) else None,
        far_targets=(1e-3, 1e-2),
    )
    return {
        "gallery_people": rep.n_gallery_identities,
        "probes": rep.n_probes,
        "unknown": rep.n_unknown,
        "rank1": rep.rank.get(1),
        "open_set": rep.open_set,
    }


def clustering_summary(
    labels: np.ndarray, emb: np.ndarray, threshold: float, min_images: int
) -> dict[str, Any]:
    """Every clustering method on the faces of people with >= ``min_images`` faces, cut at
    ``threshold`` (one k-NN graph for all), scored against the people."""
    counts = {lab: int(c) for lab, c in zip(*np.unique(labels, return_counts=True), strict=True)}
    sel = np.array([counts[lab] >= min_images for lab in labels], dtype=bool)
    x, y = emb[sel], labels[sel]
    graph = knn_graph(x, k=20)
    out: dict[str, Any] = {"faces": int(sel.sum()), "people": len(set(y))}
    for method in METHODS:
        t0 = time.perf_counter()
        pred = cluster_embeddings(x, method, threshold=threshold, graph=graph, min_cluster_size=2)
        r = clustering_metrics(y, pred)
        out[method] = {
            "clusters": r.n_clusters,
            "pairwise_f1": r.pairwise_f1,
            "bcubed_f": r.bcubed_f,
            "nmi": r.nmi,
            "seconds": time.perf_counter() - t0,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("folder", type=Path, help="aligned crops, a sub-folder per identity")
    ap.add_argument("--model", default="inception_resnet_v1:casia-webface")
    ap.add_argument("--threshold", type=float, help="clustering cut (default: model's accuracy)")
    ap.add_argument("--min-images", type=int, default=5, help="clustering: people with >= this")
    ap.add_argument("--max-people", type=int, help="random subset of people (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "facenet" / "quality")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    cache = args.cache / f"{args.folder.name}-{args.model.replace(':', '_').replace('/', '_')}.npz"
    paths, labels, emb = embed_folder(args.folder, args.model, cache, args.max_people, args.seed)
    threshold = args.threshold
    if threshold is None:
        threshold = card_of(load_model(args.model)).thresholds.get("accuracy")
    if threshold is None:
        raise SystemExit("the model has no calibrated threshold; pass --threshold")
    out: dict = {
        "folder": str(args.folder),
        "model": args.model,
        "faces": len(paths),
        "people": len(set(labels)),
        "threshold": threshold,
    }
    out["identification"] = identification_summary(paths, labels, emb)
    print(json.dumps(out["identification"], indent=2))
    out["clustering"] = clustering_summary(labels, emb, threshold, args.min_images)
    for method in METHODS:
        print(method, json.dumps(out["clustering"][method]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
