"""``facenet identify IMAGE [--k 5]``: who is in this photo? (open-set: "unknown" beyond the
calibrated threshold). The main face by default, ``--face N`` or ``--all-faces``; a photo with
several faces is reported.

Exit code: 0 every identified face is enrolled, 1 a face is unknown, 2 no answer (unreadable
photo, no face, empty or incompatible gallery, bad arguments).
"""

from __future__ import annotations

import argparse
import sys

from facenet.apps.embedder import NoFaceError
from facenet.apps.gallery import Gallery, GalleryError, printable
from facenet.apps.identify import identify_file
from facenet.commands._apps import (
    add_model_arguments,
    add_threshold_arguments,
    error,
    gallery_dir,
    load_embedder,
    model_for_gallery,
)
from facenet.commands._checks import existing_file, non_empty, non_negative_int, positive_int
from facenet.data.images import ImageError
from facenet.utils import dumps_json

# why: exit 1 is an answer here (a face is unknown); a failure the command did not foresee is no answer
EXIT_NO_ANSWER = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", type=existing_file, help="a photo")
    parser.add_argument(
        "--k", type=positive_int, default=5, help="nearest identities to list (default 5)"
    )
    parser.add_argument(
        "--gallery",
        default=None,
        type=non_empty,
        help="gallery folder (default: $FACENET_GALLERY or ./facenet-gallery)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--all-faces", action="store_true", help="identify every face, not only the main one"
    )
    which.add_argument(
        "--face",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="identify face N (detector order; default: the main face, largest and most central)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_threshold_arguments(parser)
    add_model_arguments(parser, model_default=None)


def run(args: argparse.Namespace) -> int:
    """Exit code 0: every identified face is enrolled; 1: a face is unknown; 2: no answer."""
    directory = gallery_dir(args.gallery)
    try:
        gallery = Gallery(directory, create=False)
    except GalleryError as e:
        return error(e, 2)
    with gallery:
        if gallery.model is None or len(gallery) == 0:
            return error(f"gallery {directory} is empty; enrol people first", 2)
        try:
            model = model_for_gallery(args, gallery)
        except ValueError as e:
            return error(e, 2)
        embedder = load_embedder(args, model, code=2)
        if isinstance(embedder, int):
            return embedder
        try:
            result = identify_file(
                embedder,
                gallery,
                args.image,
                k=args.k,
                face=args.face,
                all_faces=args.all_faces,
                threshold=args.threshold,
                far=args.far,
                operating_point_name=args.operating_point,
            )
        except (GalleryError, ImageError, NoFaceError, ValueError) as e:
            return error(e, 2)
    image = result.images[0]
    if len(image.faces) > 1 and not args.all_faces:
        used = image.used[0]
        print(
            f"facenet identify: note: {args.image}: {len(image.faces)} faces found; identified "
            f"face {used.face_index}"
            + (
                ", the main face (largest, most central)"
                if image.chosen_by == "main face"
                else ", as asked"
            )
            + "; choose another with --face N or use --all-faces",
            file=sys.stderr,
        )
    if args.json:
        print(dumps_json(result.to_dict()))
        return 0 if result.all_known else 1
    op = result.operating_point
    for f in result.faces:
        box = ", ".join(f"{v:.0f}" for v in f.box)
        verdict = (
            printable(f.identity or "")
            if f.known
            else f"unknown (nearest is beyond threshold {op.threshold:.3f})"
        )
        print(
            f"face {f.face_index} [{box}]: {verdict}  (threshold {op.threshold:.3f}, {op.source})"
        )
        for rank, m in enumerate(f.matches, 1):
            print(f"  {rank}. {printable(m.name)}\t{m.distance:.3f}")
    return 0 if result.all_known else 1
