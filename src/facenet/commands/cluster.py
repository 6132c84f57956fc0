"""``facenet cluster PHOTOS... --out DIR``: group the faces of a photo collection by person."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from facenet.commands._apps import add_model_arguments, build_embedder, error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "photos", nargs="*", metavar="PHOTOS", help="photos and/or folders (searched recursively)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--method",
        choices=("agglomerative", "hdbscan", "chinese-whispers"),
        default="agglomerative",
        help="agglomerative (average linkage, the paper's choice; default), hdbscan, "
        "chinese-whispers",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="squared-L2 cut (default: the model's calibrated accuracy threshold)",
    )
    parser.add_argument("--k", type=int, default=20, help="neighbours per face in the graph")
    parser.add_argument(
        "--min-cluster-size", type=int, default=2, help="HDBSCAN's smallest cluster (default 2)"
    )
    parser.add_argument(
        "--embeddings",
        help="cluster the faces of a `facenet embed` file instead of embedding PHOTOS",
    )
    parser.add_argument(
        "--link",
        choices=("symlink", "copy", "none"),
        default="symlink",
        help="how cluster folders hold the photos (default: symlink)",
    )
    parser.add_argument("--no-html", action="store_true", help="skip the contact sheet")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from facenet.apps.cluster import cluster_embeddings, write_clusters
    from facenet.apps.embedder import expand_paths, load_embeddings, resolve_threshold

    thresholds: dict[str, float] = {}
    if args.embeddings:
        if args.photos:
            return error("give either PHOTOS or --embeddings, not both")
        try:
            table = load_embeddings(args.embeddings)
        except (OSError, ValueError) as e:
            return error(str(e))
        paths, boxes, face_index, emb = (
            table.paths.tolist(),
            table.boxes,
            table.face_index,
            table.embeddings,
        )
        if args.threshold is None:
            try:
                from facenet.apps.embedder import Embedder

                ref = table.meta.get("model", {}).get("ref") or args.model
                thresholds = Embedder.from_ref(ref, crop="none").thresholds
            except Exception:  # noqa: BLE001 - only needed for the default threshold
                thresholds = {}
    else:
        if not args.photos:
            return error("give PHOTOS (files or folders) or --embeddings FILE")
        try:
            photo_paths = expand_paths(args.photos)
        except FileNotFoundError as e:
            return error(str(e))
        if not photo_paths:
            return error(f"no image files found in {' '.join(args.photos)}")
        try:
            embedder = build_embedder(args)
        except Exception as e:  # noqa: BLE001 - any load failure becomes one clear line
            return error(f"cannot load model {args.model!r}: {e}")
        thresholds = embedder.thresholds
        paths, boxes_l, face_l, emb_l = [], [], [], []
        for result in embedder.embed_files(photo_paths, progress=args.progress):
            if result.error:
                print(f"facenet: skipped {result.error}", file=sys.stderr)
            for f in result.faces:
                paths.append(result.path)
                boxes_l.append(f.box)
                face_l.append(f.face_index)
                emb_l.append(f.embedding)
        boxes = np.array(boxes_l, np.float32).reshape(-1, 4)
        face_index = np.array(face_l, np.int64)
        emb = np.array(emb_l, np.float32).reshape(len(emb_l), -1)
    if len(paths) == 0:
        return error("no faces found to cluster")
    threshold = args.threshold
    if args.method != "hdbscan":
        try:
            threshold, _ = resolve_threshold(thresholds, args.threshold)
        except ValueError as e:
            return error(str(e))
    labels = cluster_embeddings(
        emb,
        method=args.method,
        threshold=threshold,
        k=args.k,
        min_cluster_size=args.min_cluster_size,
        progress=args.progress,
    )
    out = write_clusters(
        args.out, paths, boxes, face_index, labels, link=args.link, html=not args.no_html
    )
    print(
        f"{out.n_faces} faces -> {out.n_clusters} clusters + {out.n_singletons} unclustered "
        f"({args.method}"
        + (f", threshold {threshold:.3f}" if threshold is not None else "")
        + f"); {out.csv}"
        + (f"; {out.html}" if out.html else "")
    )
    return 0
