"""``facenet gallery enroll NAME IMAGES... | remove NAME | remove --image ID | list [NAME] |
rebuild`` (``--gallery DIR``)."""

from __future__ import annotations

import argparse
import sys

from facenet.apps.embedder import expand_paths
from facenet.apps.gallery import Gallery, GalleryError, check_identity_name, enroll_files
from facenet.apps.gallery import printable as shown
from facenet.commands._apps import (
    add_model_arguments,
    error,
    gallery_dir,
    load_embedder,
    model_for_gallery,
)
from facenet.utils import dumps_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    enroll = sub.add_parser("enroll", help="add photos of one person")
    enroll.add_argument("name", metavar="NAME")
    enroll.add_argument("images", nargs="+", metavar="IMAGE", help="photos or folders of photos")
    add_model_arguments(enroll, model_default=None)
    remove = sub.add_parser(
        "remove", help="delete a person and their photos' embeddings, or one photo (--image ID)"
    )
    remove.add_argument("name", metavar="NAME", nargs="?")
    remove.add_argument(
        "--image", type=int, metavar="ID", help="delete this one photo (ids: gallery list NAME)"
    )
    lst = sub.add_parser("list", help="enrolled people with photo counts, or one person's photos")
    lst.add_argument("name", metavar="NAME", nargs="?", help="list this person's photos, with ids")
    lst.add_argument("--json", action="store_true")
    sub.add_parser("rebuild", help="rebuild the search index from the database")
    for p in (enroll, remove, lst, sub.choices["rebuild"]):
        p.add_argument(
            "--gallery",
            default=None,
            help="gallery folder (default: $FACENET_GALLERY or ./facenet-gallery)",
        )


def run(args: argparse.Namespace) -> int:
    directory = gallery_dir(args.gallery)
    if args.action == "enroll":
        try:  # why: before any folder is created or any photo embedded
            check_identity_name(args.name)
            paths = expand_paths(args.images)
        except (GalleryError, OSError) as e:
            return error(e)
        if not paths:
            return error(f"no image files in {' '.join(args.images)}")
    try:
        gallery = Gallery(directory, create=args.action == "enroll")
    except (GalleryError, OSError) as e:
        return error(e)
    with gallery:
        try:
            if args.action == "enroll":
                model = model_for_gallery(args, gallery)
                embedder = load_embedder(args, model)
                if isinstance(embedder, int):
                    return embedder
                report = enroll_files(gallery, embedder, args.name, paths)
                for _, reason in report.skipped:
                    print(f"facenet: skipped {reason}", file=sys.stderr)
                for d in report.duplicates:
                    print(
                        f"facenet: already enrolled: {d.path} (as {shown(d.identity)!r}, "
                        f"from {d.enrolled_path}); not stored again",
                        file=sys.stderr,
                    )
                print(
                    f"enrolled {report.added} face(s) as {report.name!r} in {directory} "
                    f"({len(report.skipped)} photo(s) skipped, {len(report.duplicates)} already "
                    "enrolled)"
                )
                return 1 if report.skipped else 0
            if args.action == "remove":
                return _remove(gallery, args, directory)
            if args.action == "rebuild":
                gallery.rebuild_index()
                print(f"rebuilt the index of {directory} ({len(gallery)} faces)")
                return 0
            if args.name is not None:
                return _list_images(gallery, args, directory)
            people = gallery.identities()
            model = gallery.model
            if args.json:
                print(
                    dumps_json(
                        {
                            "gallery": directory,
                            "model": model.to_dict() if model else None,
                            "identities": [
                                {"name": p.name, "images": p.images, "faces": p.embeddings}
                                for p in people
                            ],
                        }
                    )
                )
            else:
                print(f"{directory}: {len(people)} people, {len(gallery)} faces")
                if model:
                    print(f"model: {model.describe()}")
                for p in people:
                    # why: names from older galleries may hold control characters; never let
                    # one print a line of its own
                    print(f"  {shown(p.name)}\t{p.images} photo(s)\t{p.embeddings} face(s)")
            return 0
        except (GalleryError, OSError, ValueError) as e:
            return error(e)


def _remove(gallery: Gallery, args: argparse.Namespace, directory: str) -> int:
    if (args.name is None) == (args.image is None):
        return error("give a NAME to remove a person, or --image ID to remove one photo", 2)
    if args.image is None:
        n = gallery.remove(args.name)
        print(f"removed {shown(args.name)!r} ({n} face(s)) from {directory}")
        return 0
    removed = gallery.remove_image(args.image)
    image = removed.image
    print(
        f"removed image {image.id} ({shown(image.path)}, {image.faces} face(s)) of "
        f"{shown(image.identity)!r} from {directory}"
        + (
            f"; {shown(image.identity)!r} had no other photo and was removed"
            if removed.identity_removed
            else ""
        )
    )
    return 0


def _list_images(gallery: Gallery, args: argparse.Namespace, directory: str) -> int:
    images = gallery.images(args.name)
    if args.json:
        print(
            dumps_json(
                {
                    "gallery": directory,
                    "identity": args.name,
                    "images": [
                        {"id": i.id, "path": i.path, "sha256": i.sha256, "faces": i.faces}
                        for i in images
                    ],
                }
            )
        )
        return 0
    print(f"{shown(args.name)!r} in {directory}: {len(images)} photo(s)")
    for i in images:
        print(f"  {i.id}\t{shown(i.path)}\t{i.faces} face(s)")
    return 0
