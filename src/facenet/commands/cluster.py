"""``facenet cluster PHOTOS... --out DIR``: group the faces of a photo collection by person."""

from __future__ import annotations

import argparse
from pathlib import Path

from facenet.apps.cluster import (
    DEFAULT_K,
    DEFAULT_METHOD,
    DEFAULT_MIN_CLUSTER_SIZE,
    METHODS,
    cluster_embeddings,
)
from facenet.apps.cluster_folder import write_clusters
from facenet.apps.embedder import expand_paths
from facenet.apps.embedding_table import EmbeddingTable, load_embeddings
from facenet.apps.thresholds import DEFAULT_MODEL, DEFAULT_OPERATING_POINT, operating_point
from facenet.commands._apps import add_model_arguments, embed_photos, error, load_embedder
from facenet.commands._checks import (
    existing_dir,
    existing_file,
    int_at_least,
    output_dir,
    positive_int,
    squared_distance,
)
from facenet.fingerprint import weights_sha256
from facenet.models.card import card_of
from facenet.models.loading import load_model, recorded_model_ref


def _embeddings_input(text: str) -> Path:
    """A `facenet embed` file, or a folder of its shards (``--out DIR/``)."""
    return existing_dir(text) if Path(text).is_dir() else existing_file(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "photos", nargs="*", metavar="PHOTOS", help="photos and/or folders (searched recursively)"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=output_dir,
        help="output folder (a rerun replaces what the last run wrote there, nothing else)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in --out that facenet cluster did not write (default: refuse)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help=f"agglomerative (average linkage, the paper's choice), hdbscan, chinese-whispers "
        f"(default {DEFAULT_METHOD})",
    )
    parser.add_argument(
        "--threshold",
        type=squared_distance,
        help=f"squared-L2 cut (default: the model's {DEFAULT_OPERATING_POINT} threshold: "
        "in a collection every face meets every other, so the pair-wise accuracy threshold "
        "merges look-alike strangers)",
    )
    parser.add_argument(
        "--k", type=positive_int, default=DEFAULT_K, help="neighbours per face in the graph"
    )
    parser.add_argument(
        "--min-cluster-size",
        type=int_at_least(1),
        default=DEFAULT_MIN_CLUSTER_SIZE,
        help="faces in clusters smaller than this are left unclustered, every method (default "
        f"{DEFAULT_MIN_CLUSTER_SIZE}; 3 suits a few hundred photos; 1 labels every face)",
    )
    parser.add_argument(
        "--embeddings",
        type=_embeddings_input,
        help="cluster the faces of a `facenet embed` file (or shard folder) instead of "
        "embedding PHOTOS",
    )
    parser.add_argument(
        "--link",
        choices=("symlink", "copy", "none"),
        default="symlink",
        help="how cluster folders hold the photos (default: symlink)",
    )
    parser.add_argument("--no-html", action="store_true", help="skip the contact sheet")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    # why: no default value, so that --model given with --embeddings (which records its model)
    # is seen and refused instead of silently ignored
    add_model_arguments(parser, None, f"{DEFAULT_MODEL}, for PHOTOS")


def run(args: argparse.Namespace) -> int:
    faces = _faces_to_cluster(args)
    if isinstance(faces, int):
        return faces
    table, thresholds, unreadable = faces
    if len(table) == 0:
        return error("no faces found to cluster")
    threshold, source = args.threshold, ""
    if args.method != "hdbscan":
        try:
            op = operating_point(thresholds, args.threshold)
            threshold, source = op.threshold, op.source
        except ValueError as e:
            return error(e)
    labels = cluster_embeddings(
        table.embeddings,
        method=args.method,
        threshold=threshold,
        k=args.k,
        min_cluster_size=args.min_cluster_size,
        progress=args.progress,
    )
    try:
        out = write_clusters(
            args.out,
            table.paths.tolist(),
            table.boxes,
            table.face_index,
            labels,
            link=args.link,
            html=not args.no_html,
            overwrite=args.overwrite,
            min_cluster_size=args.min_cluster_size,
        )
    except (OSError, ValueError) as e:
        return error(e)
    print(
        f"{out.n_faces} faces -> {out.n_clusters} clusters + {out.n_singletons} unclustered "
        f"({args.method}"
        + (f", threshold {threshold:.3f} ({source})" if threshold is not None else "")
        + f", clusters of under {args.min_cluster_size} faces left unclustered"
        + f"); {out.csv}"
        + (f"; {out.html}" if out.html else "")
    )
    return 1 if unreadable else 0  # why: as embed: some input could not be used


def _faces_to_cluster(
    args: argparse.Namespace,
) -> tuple[EmbeddingTable, dict[str, float], int] | int:
    """The faces of ``--embeddings`` or of PHOTOS (embedded now), with the calibrated thresholds
    that go with them and the count of photos that could not be used; or the exit code after a
    one-line error."""
    if args.embeddings:
        if args.photos:
            return error("give either PHOTOS or --embeddings, not both", 2)
        if args.model:
            return error(
                "--model is for PHOTOS; an --embeddings file was made by the model it records", 2
            )
        try:
            table = load_embeddings(args.embeddings)
        except (OSError, ValueError) as e:
            return error(e)
        if args.threshold is not None or args.method == "hdbscan":
            return table, {}, 0
        try:
            return table, _recorded_thresholds(table.meta, str(args.embeddings)), 0
        except ValueError as e:
            return error(f"{e}; or pass --threshold T")
    if not args.photos:
        return error("give PHOTOS (files or folders) or --embeddings FILE", 2)
    try:
        photo_paths = expand_paths(args.photos)
    except OSError as e:
        return error(e)
    if not photo_paths:
        return error(f"no image files found in {' '.join(args.photos)}")
    embedder = load_embedder(args)
    if isinstance(embedder, int):
        return embedder
    embedded = embed_photos(embedder, photo_paths, progress=args.progress)
    if isinstance(embedded, int):
        return embedded
    return embedded.table, embedder.thresholds, embedded.unreadable


def _recorded_thresholds(meta: dict, where: str) -> dict[str, float]:
    """The calibrated thresholds an embeddings file carries; for files written before they were
    recorded, those of the model it names, loaded by the safe loader (no code runs) and used only
    when its weights hash is the one the file records."""
    recorded = meta.get("thresholds")
    if isinstance(recorded, dict) and recorded:
        return {str(k): float(v) for k, v in recorded.items()}
    model_meta = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    ref = recorded_model_ref(str(model_meta.get("ref", "")), where)
    model = load_model(ref)
    expected = str(model_meta.get("weights_hash", ""))
    if expected and weights_sha256(model) != expected:
        raise ValueError(
            f"{where} was made by weights sha256 {expected[:12]}..., but {ref} now holds others"
        )
    return dict(card_of(model).thresholds)
