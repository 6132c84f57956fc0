"""``facenet gallery enroll NAME IMAGES... | remove NAME | remove --image ID | list [NAME] |
rebuild [--index KIND] [--nlist N] [--nprobe N]`` (``--gallery DIR``)."""

from __future__ import annotations

import argparse
import sys

from facenet.apps.embedder import expand_paths
from facenet.apps.gallery import (
    Gallery,
    GalleryError,
    SqliteGallery,
    check_identity_name,
    enroll_files,
)
from facenet.apps.gallery import printable as shown
from facenet.apps.gallery_index import INDEX_KINDS, IVF_MIN_TRAIN
from facenet.commands import _errors
from facenet.commands._apps import (
    add_model_arguments,
    error,
    gallery_dir,
    load_embedder,
    model_for_gallery,
)
from facenet.commands._checks import non_empty, non_negative_int
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
        "--image",
        type=non_negative_int,
        metavar="ID",
        help="delete this one photo (ids: gallery list NAME)",
    )
    lst = sub.add_parser("list", help="enrolled people with photo counts, or one person's photos")
    lst.add_argument("name", metavar="NAME", nargs="?", help="list this person's photos, with ids")
    lst.add_argument("--json", action="store_true")
    rebuild = sub.add_parser(
        "rebuild",
        help="rebuild the search index from the database, optionally of another kind",
        description="Rebuild the search index of an embedded gallery from its database. "
        "--index/--nlist/--nprobe are stored in the gallery and used from then on (a Milvus "
        "location takes them in its query string instead: milvus-lite:///g.db?index=ivf_sq8).",
    )
    rebuild.add_argument(
        "--index",
        choices=("auto", *INDEX_KINDS),
        help="auto: exact up to 100,000 faces, IVF-Flat above; flat: exact; sq8: exact scan "
        "over one byte per dimension (int8, a quarter of the memory); hnsw: graph; "
        "ivf_flat: k-means cells; ivf_sq8: the same cells, one byte per dimension",
    )
    rebuild.add_argument("--nlist", type=_positive, metavar="N", help="IVF cells (4*sqrt(N))")
    rebuild.add_argument(
        "--nprobe", type=_positive, metavar="N", help="IVF cells searched per query"
    )
    for p in (enroll, remove, lst, sub.choices["rebuild"]):
        p.add_argument(
            "--gallery",
            default=None,
            type=non_empty,
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
        if args.action == "rebuild":
            _choose_index(gallery, args)
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
                    print(f"{_errors.PROG}: skipped {reason}", file=sys.stderr)
                for d in report.duplicates:
                    print(
                        f"{_errors.PROG}: already enrolled: {d.path} (as {shown(d.identity)!r}, "
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
                kind = ""
                if isinstance(gallery, SqliteGallery):
                    spec = gallery.index_spec
                    built = gallery.index_spec.built(len(gallery))
                    kind = f", index {built['kind']}" + (
                        f" (nlist {built['nlist']}, nprobe {spec.nprobe_for(built['nlist'])})"
                        if "nlist" in built
                        else ""
                    )
                    if spec.kind == "auto":
                        kind += " (chosen by the gallery's size)"
                    elif spec.kind != built["kind"]:
                        kind += (
                            f" until it holds {IVF_MIN_TRAIN:,} faces: {spec.kind} is trained on "
                            "the gallery's vectors, and fewer are searched exactly"
                        )
                print(f"rebuilt the index of {directory} ({len(gallery)} faces{kind})")
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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def _choose_index(gallery: Gallery, args: argparse.Namespace) -> None:
    """Store ``rebuild``'s index choice in an embedded gallery (the rebuild then uses it)."""
    if args.index is None and args.nlist is None and args.nprobe is None:
        return
    if not isinstance(gallery, SqliteGallery):
        gallery.close()
        raise GalleryError(
            f"{args.gallery}: --index/--nlist/--nprobe are for gallery folders; a Milvus "
            "location takes them in its query string (?index=ivf_sq8&nlist=1024&nprobe=32)"
        )
    try:
        gallery.set_index(args.index, args.nlist, args.nprobe)
    except GalleryError:
        gallery.close()
        raise


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
