"""``facenet embed PATHS... --out FILE``: every face of every photo to an embeddings file."""

from __future__ import annotations

import argparse
import sys

from facenet.commands._apps import add_model_arguments, build_embedder, error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos and/or folders of photos")
    parser.add_argument(
        "--out", required=True, help="output file: .npz, or .parquet (needs pyarrow)"
    )
    parser.add_argument(
        "--subject-only", action="store_true", help="keep only the main face of each photo"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from facenet.apps.embedder import (
        EMBEDDING_FILE_FORMATS,
        EmbeddingTable,
        expand_paths,
        save_embeddings,
    )

    if not args.out.lower().endswith(EMBEDDING_FILE_FORMATS):
        return error(f"--out {args.out}: must end in {' or '.join(EMBEDDING_FILE_FORMATS)}")
    try:
        paths = expand_paths(args.paths)
    except FileNotFoundError as e:
        return error(str(e))
    if not paths:
        return error(f"no image files found in {' '.join(args.paths)}")
    try:
        embedder = build_embedder(args)
    except Exception as e:  # noqa: BLE001 - any load failure becomes one clear line
        return error(f"cannot load model {args.model!r}: {e}")
    faces, failed, faceless = [], 0, 0
    for result in embedder.embed_files(
        paths, subject_only=args.subject_only, progress=args.progress
    ):
        if result.error:
            failed += 1
            print(f"facenet: skipped {result.error}", file=sys.stderr)
        elif not result.faces:
            faceless += 1
            print(f"facenet: no face found in {result.path}", file=sys.stderr)
        faces.extend(result.faces)
    meta = {
        "model": embedder.fingerprint.to_dict(),
        "crop": embedder.crop_mode,
        "detector": None if embedder.crop_mode == "none" else args.detector,
    }
    try:
        out = save_embeddings(
            args.out, EmbeddingTable.from_faces(faces, embedder.embedding_dim, meta)
        )
    except ValueError as e:
        return error(str(e))
    print(
        f"{len(faces)} faces from {len(paths) - failed - faceless} of {len(paths)} photos "
        f"-> {out} ({failed} unreadable, {faceless} without a face)"
    )
    return 1 if failed else 0
