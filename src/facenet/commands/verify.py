"""``facenet verify A B``: are two photos the same person? (each photo's main face, or the face
chosen with ``--face-a``/``--face-b``; a photo with several faces is reported).

Exit code: 0 the same person, 1 different people, 2 no answer (unreadable photo, no face, no
threshold, bad arguments) -- like ``grep``, so scripts can branch on it.
"""

from __future__ import annotations

import argparse
import sys

from facenet.apps.embedder import NoFaceError
from facenet.apps.thresholds import operating_point
from facenet.apps.verify import verify_files
from facenet.commands._apps import (
    add_model_arguments,
    add_threshold_arguments,
    error,
    load_embedder,
)
from facenet.commands._checks import existing_file, non_negative_int
from facenet.data.images import ImageError
from facenet.utils import dumps_json

# why: exit 1 is an answer here (different people); a failure the command did not foresee is no answer
EXIT_NO_ANSWER = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", type=existing_file, help="first photo")
    parser.add_argument("b", metavar="B", type=existing_file, help="second photo")
    add_threshold_arguments(parser)
    for side in ("a", "b"):
        parser.add_argument(
            f"--face-{side}",
            type=non_negative_int,
            default=None,
            metavar="N",
            help=f"compare face N of {side.upper()} (detector order, as listed when a photo has "
            "several faces; default: its main face, the largest and most central)",
        )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Exit code 0: the same person; 1: different people; 2: no answer (an error)."""
    embedder = load_embedder(args, code=2)
    if isinstance(embedder, int):
        return embedder
    try:
        operating_point(embedder.thresholds, args.threshold, args.far, args.operating_point)
        result = verify_files(
            embedder,
            args.a,
            args.b,
            args.threshold,
            args.far,
            args.face_a,
            args.face_b,
            args.operating_point,
        )
    except (ImageError, NoFaceError, ValueError) as e:
        return error(e, 2)
    if args.json:
        print(dumps_json(result.to_dict()))
    else:
        print(result.sentence())
    for note in result.notes():
        print(f"facenet verify: note: {note}", file=sys.stderr)
    return 0 if result.same else 1
