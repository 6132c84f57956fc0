"""``facenet embed PATHS... --out FILE | DIR/``: every face of every photo to an embeddings file,
or to a folder of shards written as it goes (bounded memory, resumable, ``--engine ray``)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys

from facenet.apps.embed_ray import RayEngine
from facenet.apps.embed_stream import DEFAULT_SHARD_PHOTOS, embed_to_shards
from facenet.apps.embedder import Embedder, expand_paths
from facenet.apps.embedding_table import EMBEDDING_FILE_FORMATS, save_embeddings
from facenet.commands import _errors
from facenet.commands._apps import add_model_arguments, embed_photos, error, load_embedder
from facenet.commands._checks import output_dir, output_file, positive_int


def _output(text: str) -> str:
    """A file (``.npz``/``.parquet``) or, ending in ``/``, a shard folder (kept as typed: the
    trailing ``/`` is what says "folder"; an existing folder named without it is refused, so a
    mistyped file name never writes shards into a folder)."""
    if _is_folder(text):
        output_dir(text)
    else:
        output_file(text)
    return text


def _is_folder(text: str) -> bool:
    return text.endswith(("/", os.sep))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos and/or folders of photos")
    parser.add_argument(
        "--out",
        required=True,
        type=_output,
        help="a file (.npz, or .parquet with pyarrow), or a folder (ending in /): shards "
        "written as it goes, memory bounded, a rerun skips what is done",
    )
    parser.add_argument(
        "--subject-only", action="store_true", help="keep only the main face of each photo"
    )
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress bar (the default when stderr is a terminal)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g = parser.add_argument_group("folder output (--out DIR/)")
    g.add_argument(
        "--shard-photos",
        type=positive_int,
        default=DEFAULT_SHARD_PHOTOS,
        help=f"photos per shard (default {DEFAULT_SHARD_PHOTOS})",
    )
    g.add_argument(
        "--format",
        choices=("parquet", "npz"),
        default=None,
        help="shard format (default: parquet when pyarrow is installed, else npz)",
    )
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process; ray: Ray Data with an actor pool (extra ray)",
    )
    g.add_argument("--workers", type=positive_int, default=2, help="Ray actors (one CPU each)")
    g.add_argument(
        "--ray-address",
        default=None,
        help="join this Ray cluster (ray://head:10001, auto); default: a local Ray for the run",
    )
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    folder = _is_folder(args.out)
    if not folder and not args.out.lower().endswith(EMBEDDING_FILE_FORMATS):
        return error(
            f"--out {args.out}: must end in {' or '.join(EMBEDDING_FILE_FORMATS)}, or be a "
            "folder (end it in /)",
            2,
        )
    if args.engine == "ray" and not folder:
        return error("--engine ray writes a folder of shards: give --out DIR/", 2)
    try:
        paths = expand_paths(args.paths)
    except OSError as e:
        return error(e)
    if not paths:
        return error(f"no image files found in {' '.join(args.paths)}")
    if args.progress is None:  # why: a bar on a terminal; logs and pipes get the summary only
        args.progress = sys.stderr.isatty()
    embedder = load_embedder(args)
    if isinstance(embedder, int):
        return embedder
    meta = {
        "model": embedder.fingerprint.to_dict(),
        "crop": embedder.crop_mode,
        "detector": None if embedder.crop_mode == "none" else args.detector,
        "backend": embedder.backend,  # torch and onnxruntime agree to 1e-4 (tests/models)
        "subject_only": bool(args.subject_only),
        # why: `facenet cluster --embeddings` takes its default threshold from here instead of
        # loading the model the file names
        "thresholds": embedder.thresholds,
    }
    if folder:
        return _to_folder(args, embedder, paths, meta)
    embedded = embed_photos(embedder, paths, args.subject_only, args.progress)
    if isinstance(embedded, int):
        return embedded
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


def _to_folder(args: argparse.Namespace, embedder: Embedder, paths: list, meta: dict) -> int:
    fmt = args.format or ("parquet" if importlib.util.find_spec("pyarrow") else "npz")
    if args.engine == "ray":
        engine = RayEngine(
            {"ref": embedder.ref, "detector": args.detector, "crop": embedder.crop_mode,
             "batch_size": args.batch_size, "backend": embedder.backend},
            subject_only=args.subject_only,
            workers=args.workers,
            address=args.ray_address,
            num_cpus=None if args.ray_address else args.workers,
        )  # fmt: skip
        results = engine.results
    else:

        def results(todo):
            return embedder.embed_files(todo, subject_only=args.subject_only)

    try:
        report = embed_to_shards(
            results, paths, args.out, meta, embedder.embedding_dim, args.shard_photos, fmt,
            args.progress,
        )  # fmt: skip
    except ImportError as e:
        return error(e, 2)
    except (OSError, ValueError) as e:
        return error(e)
    for problem in report.problems:
        print(f"{_errors.PROG}: skipped {problem}", file=sys.stderr)
    print(
        f"{report.faces} faces from {report.with_faces} of {len(paths)} photos -> {args.out} "
        f"({len(report.shards)} new shard(s); {report.already_done} photo(s) already done, "
        f"{report.unreadable} unreadable, {report.faceless} without a face)"
    )
    return 1 if report.unreadable else 0
