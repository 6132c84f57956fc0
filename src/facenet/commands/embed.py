"""``facenet embed PATHS... --out FILE``: every face of every photo to an embeddings file."""

from __future__ import annotations

import argparse
import dataclasses

from facenet.apps.embedder import expand_paths
from facenet.apps.embedding_table import EMBEDDING_FILE_FORMATS, save_embeddings
from facenet.commands._apps import add_model_arguments, embed_photos, error, load_embedder
from facenet.commands._checks import output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos and/or folders of photos")
    parser.add_argument(
        "--out",
        required=True,
        type=output_file,
        help="output file: .npz, or .parquet (needs pyarrow)",
    )
    parser.add_argument(
        "--subject-only", action="store_true", help="keep only the main face of each photo"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if not str(args.out).lower().endswith(EMBEDDING_FILE_FORMATS):
        return error(f"--out {args.out}: must end in {' or '.join(EMBEDDING_FILE_FORMATS)}")
    try:
        paths = expand_paths(args.paths)
    except OSError as e:
        return error(e)
    if not paths:
        return error(f"no image files found in {' '.join(args.paths)}")
    embedder = load_embedder(args)
    if isinstance(embedder, int):
        return embedder
    embedded = embed_photos(embedder, paths, args.subject_only, args.progress)
    if isinstance(embedded, int):
        return embedded
    meta = {
        "model": embedder.fingerprint.to_dict(),
        "crop": embedder.crop_mode,
        "detector": None if embedder.crop_mode == "none" else args.detector,
        # why: `facenet cluster --embeddings` takes its default threshold from here instead of
        # loading the model the file names
        "thresholds": embedder.thresholds,
    }
    table = dataclasses.replace(embedded.table, meta=meta)
    try:
        out = save_embeddings(args.out, table)
    except (OSError, ValueError) as e:
        return error(e)
    print(
        f"{len(table)} faces from {embedded.with_faces} of {len(paths)} photos "
        f"-> {out} ({embedded.unreadable} unreadable, {embedded.faceless} without a face)"
    )
    return 1 if embedded.unreadable else 0
