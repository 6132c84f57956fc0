"""``facenet gallery enroll NAME IMAGES... | remove NAME | list | rebuild`` (``--gallery DIR``)."""

from __future__ import annotations

import argparse
import json
import sys

from facenet.commands._apps import add_model_arguments, build_embedder, error, gallery_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    enroll = sub.add_parser("enroll", help="add photos of one person")
    enroll.add_argument("name", metavar="NAME")
    enroll.add_argument("images", nargs="+", metavar="IMAGE", help="photos or folders of photos")
    add_model_arguments(enroll, model_default=None)
    remove = sub.add_parser("remove", help="delete a person and their photos' embeddings")
    remove.add_argument("name", metavar="NAME")
    lst = sub.add_parser("list", help="enrolled people with photo counts")
    lst.add_argument("--json", action="store_true")
    sub.add_parser("rebuild", help="rebuild the search index from the database")
    for p in (enroll, remove, lst, sub.choices["rebuild"]):
        p.add_argument(
            "--gallery",
            default=None,
            help="gallery folder (default: $FACENET_GALLERY or ./facenet-gallery)",
        )


def run(args: argparse.Namespace) -> int:
    from facenet.apps.embedder import expand_paths
    from facenet.apps.gallery import Gallery, GalleryError, enroll_files

    directory = gallery_dir(args.gallery)
    try:
        gallery = Gallery(directory, create=args.action == "enroll")
    except GalleryError as e:
        return error(str(e))
    with gallery:
        try:
            if args.action == "enroll":
                paths = expand_paths(args.images)
                if not paths:
                    return error(f"no image files in {' '.join(args.images)}")
                model = args.model or (gallery.model.ref if gallery.model else None)
                try:
                    embedder = build_embedder(args, model)
                except Exception as e:  # noqa: BLE001 - any load failure becomes one clear line
                    return error(f"cannot load model {model!r}: {e}")
                report = enroll_files(gallery, embedder, args.name, paths)
                for _, reason in report.skipped:
                    print(f"facenet: skipped {reason}", file=sys.stderr)
                print(
                    f"enrolled {report.added} face(s) as {report.name!r} in {directory} "
                    f"({len(report.skipped)} photo(s) skipped)"
                )
                return 1 if report.skipped else 0
            if args.action == "remove":
                n = gallery.remove(args.name)
                print(f"removed {args.name!r} ({n} face(s)) from {directory}")
                return 0
            if args.action == "rebuild":
                gallery.rebuild_index()
                print(f"rebuilt the index of {directory} ({len(gallery)} faces)")
                return 0
            people = gallery.identities()
            if args.json:
                model = gallery.model
                print(
                    json.dumps(
                        {
                            "gallery": directory,
                            "model": model.to_dict() if model else None,
                            "identities": [
                                {"name": p.name, "images": p.images, "faces": p.embeddings}
                                for p in people
                            ],
                        },
                        indent=2,
                    )
                )
            else:
                model = gallery.model
                print(f"{directory}: {len(people)} people, {len(gallery)} faces")
                if model:
                    print(f"model: {model.describe()}")
                for p in people:
                    print(f"  {p.name}\t{p.images} photo(s)\t{p.embeddings} face(s)")
            return 0
        except (GalleryError, FileNotFoundError) as e:
            return error(str(e))
