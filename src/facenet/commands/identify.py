"""``facenet identify IMAGE [--k 5]``: who is in this photo? (open-set: "unknown" beyond the
calibrated threshold). The main face by default, ``--face N`` or ``--all-faces``; a photo with
several faces is reported."""

from __future__ import annotations

import argparse
import sys

from facenet.apps.embedder import NoFaceError
from facenet.apps.gallery import Gallery, GalleryError, open_set_threshold, printable
from facenet.commands._apps import (
    add_model_arguments,
    add_threshold_arguments,
    error,
    gallery_dir,
    load_embedder,
    model_for_gallery,
)
from facenet.commands._checks import existing_file, non_negative_int, positive_int
from facenet.data.images import ImageError, load_image
from facenet.utils import dumps_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", type=existing_file, help="a photo")
    parser.add_argument(
        "--k", type=positive_int, default=5, help="nearest identities to list (default 5)"
    )
    parser.add_argument(
        "--gallery",
        default=None,
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
    directory = gallery_dir(args.gallery)
    try:
        gallery = Gallery(directory, create=False)
    except GalleryError as e:
        return error(e)
    with gallery:
        if gallery.model is None or len(gallery) == 0:
            return error(f"gallery {directory} is empty; enrol people first")
        try:
            model = model_for_gallery(args, gallery)
        except ValueError as e:
            return error(e)
        embedder = load_embedder(args, model)
        if isinstance(embedder, int):
            return embedder
        try:
            gallery.check_model(embedder.fingerprint)
            threshold, source = open_set_threshold(
                embedder.thresholds or gallery.thresholds, args.threshold, args.far
            )
            image = load_image(args.image)
            if args.all_faces:
                faces = embedder.faces(image, str(args.image))
                if not faces:
                    raise NoFaceError(args.image)
                found, how = len(faces), "all faces"
            else:
                pick = embedder.pick(image, str(args.image), args.face)
                faces, found, how = [pick.face], pick.faces_found, pick.chosen_by
            queries = [f.embedding for f in faces]
            answers = gallery.identify(queries, threshold, k=args.k, model=embedder.fingerprint)
        except (GalleryError, ImageError, NoFaceError, ValueError) as e:
            return error(e)
    if found > 1 and not args.all_faces:
        print(
            f"facenet identify: note: {args.image}: {found} faces found; identified face "
            f"{faces[0].face_index}"
            + (", the main face (largest, most central)" if how == "main face" else ", as asked")
            + "; choose another with --face N or use --all-faces",
            file=sys.stderr,
        )
    if args.json:
        out = [
            {
                "face_index": f.face_index,
                "faces_found": found,
                "face_chosen_by": how,
                "box": [round(v, 1) for v in f.box],
                "identity": a.name,
                # why: None (JSON null) when nothing is near, never Infinity
                "distance": round(a.distance, 6) if a.matches else None,
                "threshold": round(threshold, 6),
                "threshold_source": source,
                "matches": [
                    {"name": m.name, "distance": round(m.distance, 6), "photo": m.path}
                    for m in a.matches
                ],
            }
            for f, a in zip(faces, answers, strict=True)
        ]
        print(dumps_json(out if args.all_faces else out[0]))
        return 0
    for f, a in zip(faces, answers, strict=True):
        box = ", ".join(f"{v:.0f}" for v in f.box)
        verdict = (
            printable(a.name)
            if a.known
            else f"unknown (nearest is beyond threshold {threshold:.3f})"
        )
        print(f"face {f.face_index} [{box}]: {verdict}  (threshold {threshold:.3f}, {source})")
        for rank, m in enumerate(a.matches, 1):
            print(f"  {rank}. {printable(m.name)}\t{m.distance:.3f}")
    return 0
