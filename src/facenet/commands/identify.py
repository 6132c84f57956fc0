"""``facenet identify IMAGE [--k 5]``: who is in this photo? (open-set: "unknown" beyond the
calibrated threshold)."""

from __future__ import annotations

import argparse
import json

from facenet.commands._apps import (
    add_model_arguments,
    add_threshold_arguments,
    build_embedder,
    error,
    gallery_dir,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="a photo")
    parser.add_argument("--k", type=int, default=5, help="nearest identities to list (default 5)")
    parser.add_argument(
        "--gallery",
        default=None,
        help="gallery folder (default: $FACENET_GALLERY or ./facenet-gallery)",
    )
    parser.add_argument(
        "--all-faces", action="store_true", help="identify every face, not only the main one"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_threshold_arguments(parser)
    add_model_arguments(parser, model_default=None)


def run(args: argparse.Namespace) -> int:
    from facenet.apps.embedder import NoFaceError
    from facenet.apps.gallery import Gallery, GalleryError, open_set_threshold
    from facenet.data.images import ImageError, load_image

    if args.k < 1:
        return error("--k must be at least 1")
    directory = gallery_dir(args.gallery)
    try:
        gallery = Gallery(directory, create=False)
    except GalleryError as e:
        return error(str(e))
    with gallery:
        if gallery.model is None:
            return error(f"gallery {directory} is empty; enrol people first")
        model = args.model or gallery.model.ref
        try:
            embedder = build_embedder(args, model)
        except Exception as e:  # noqa: BLE001 - any load failure becomes one clear line
            return error(f"cannot load model {model!r}: {e}")
        try:
            gallery.check_model(embedder.fingerprint)
            threshold, source = open_set_threshold(
                embedder.thresholds or gallery.thresholds, args.threshold, args.far
            )
            image = load_image(args.image)
            if args.all_faces:
                faces = embedder.faces(image, args.image)
                if not faces:
                    raise NoFaceError(args.image)
            else:
                faces = [embedder.subject(image, args.image)]
            queries = [f.embedding for f in faces]
            answers = gallery.identify(queries, threshold, k=args.k, model=embedder.fingerprint)
        except (GalleryError, ImageError, NoFaceError, ValueError) as e:
            return error(str(e))
    if args.json:
        out = [
            {
                "face_index": f.face_index,
                "box": [round(v, 1) for v in f.box],
                "identity": a.name,
                "distance": round(a.distance, 6),
                "threshold": round(threshold, 6),
                "threshold_source": source,
                "matches": [
                    {"name": m.name, "distance": round(m.distance, 6), "photo": m.path}
                    for m in a.matches
                ],
            }
            for f, a in zip(faces, answers, strict=True)
        ]
        print(json.dumps(out if args.all_faces else out[0], indent=2))
        return 0
    for f, a in zip(faces, answers, strict=True):
        box = ", ".join(f"{v:.0f}" for v in f.box)
        verdict = a.name if a.known else f"unknown (nearest is beyond threshold {threshold:.3f})"
        print(f"face {f.face_index} [{box}]: {verdict}  (threshold {threshold:.3f}, {source})")
        for rank, m in enumerate(a.matches, 1):
            print(f"  {rank}. {m.name}\t{m.distance:.3f}")
    return 0
