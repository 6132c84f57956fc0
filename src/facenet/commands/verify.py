"""``facenet verify A B``: are the main faces of two photos the same person?"""

from __future__ import annotations

import argparse
import json

from facenet.commands._apps import (
    add_model_arguments,
    add_threshold_arguments,
    build_embedder,
    error,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="first photo")
    parser.add_argument("b", metavar="B", help="second photo")
    add_threshold_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from facenet.apps.embedder import NoFaceError, resolve_threshold
    from facenet.apps.verify import verify_files
    from facenet.data.images import ImageError

    try:
        embedder = build_embedder(args)
    except Exception as e:  # noqa: BLE001 - any load failure becomes one clear line
        return error(f"cannot load model {args.model!r}: {e}")
    try:
        resolve_threshold(embedder.thresholds, args.threshold, args.far)
        result = verify_files(embedder, args.a, args.b, args.threshold, args.far)
    except (ImageError, NoFaceError, ValueError) as e:
        return error(str(e))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.sentence())
    return 0
