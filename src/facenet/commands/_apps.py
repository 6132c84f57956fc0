"""Arguments shared by the application commands (embed, verify, gallery, identify, cluster):
which model, which detector, how to crop. Adapts argv to ``facenet.apps``; holds no logic."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from facenet.apps.embedder import CROP_MODES, Embedder
from facenet.apps.photos import EmbeddedPhotos, embed_table
from facenet.apps.thresholds import DEFAULT_MODEL, DEFAULT_OPERATING_POINT
from facenet.commands import _errors
from facenet.commands._checks import positive_int, rate, squared_distance
from facenet.commands._errors import describe_error, fail
from facenet.models.inference import BACKENDS
from facenet.models.loading import check_trained, recorded_model_ref
from facenet.utils import device_problem

DEFAULT_GALLERY = "facenet-gallery"


def add_model_arguments(
    parser: argparse.ArgumentParser,
    model_default: str | None = DEFAULT_MODEL,
    default_text: str | None = None,
) -> None:
    """``--model``, ``--detector``, ``--crop``, ``--batch-size``, ``--device``, ``--backend``
    (``default_text``: what the help says ``--model`` defaults to, when not ``model_default``)."""
    g = parser.add_argument_group("model")
    shown = (
        default_text
        or model_default
        or ("the model the gallery was built with, else " + DEFAULT_MODEL)
    )
    g.add_argument(
        "--model",
        default=model_default,
        help=f"weights file (.safetensors/.pt), NAME:PRETRAINED or NAME (default: {shown})",
    )
    g.add_argument("--detector", default="mtcnn", help="face detector (default: mtcnn)")
    g.add_argument(
        "--crop",
        choices=CROP_MODES,
        default="box",
        help="box: detector box + margin; similarity: 5-point alignment; none: the photos "
        "already are tight face crops (no detection)",
    )
    g.add_argument("--batch-size", type=positive_int, default=32, help="faces per forward pass")
    g.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    add_backend_argument(g)
    g.add_argument(
        "--allow-untrained",
        action="store_true",
        help="accept a bare architecture name (random weights; for tests only)",
    )


def add_backend_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--backend torch|onnxruntime`` (what runs the embedding network)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="what runs the embedding network: torch (batch norm folded into the convolutions, "
        "channels-last) or onnxruntime (the model's ONNX export, CPU; cached in "
        "$FACENET_CACHE/onnx; needs the 'export' extra). Default: torch",
    )


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    """The one operating-point policy's options (``facenet.apps.thresholds``)."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument(
        "--operating-point",
        metavar="NAME",
        default=None,
        help=f"the model's calibrated threshold to use (default {DEFAULT_OPERATING_POINT}, the "
        "same in verify, identify and cluster; 'accuracy' = best accuracy on balanced pairs)",
    )
    g.add_argument(
        "--threshold", type=squared_distance, help="squared-L2 distance threshold, in [0, 4]"
    )
    g.add_argument(
        "--far", type=rate, help="use the model's threshold calibrated for this false-accept rate"
    )


def gallery_dir(value: str | None) -> str:
    return value or os.environ.get("FACENET_GALLERY") or DEFAULT_GALLERY


def build_embedder(args: argparse.Namespace, model: str | None = None) -> Embedder:
    """The embedder the arguments describe."""
    return Embedder.from_ref(
        model or args.model or DEFAULT_MODEL,
        detector=args.detector,
        crop=args.crop,
        batch_size=args.batch_size,
        device=args.device,
        backend=getattr(args, "backend", "torch"),
    )


def error(message: object, code: int = 1) -> int:
    """Print ``facenet <command>: error: message`` (one line) to stderr; returns ``code``."""
    return fail(None, message, code)


def load_embedder(
    args: argparse.Namespace, model: str | None = None, code: int = 1
) -> Embedder | int:
    """``build_embedder``, or ``code`` after a one-line error naming the model."""
    ref = model or args.model or DEFAULT_MODEL
    bad_device = device_problem(getattr(args, "device", "cpu"))
    if bad_device:
        return error(f"--device {args.device!r}: {bad_device}", 2)
    try:
        check_trained(ref, args.allow_untrained)
        return build_embedder(args, ref)
    except Exception as e:  # noqa: BLE001 - any load failure becomes one clear line
        text = describe_error(e)
        return error(text if ref in text else f"cannot load model {ref!r}: {text}", code)


def model_for_gallery(args: argparse.Namespace, gallery: Any) -> str | None:
    """The model to use with ``gallery``: ``--model``, else the one the gallery records. Either is
    loaded by the safe loader (no code runs) and must have the gallery's weights hash
    (``Gallery.check_model``), so a swapped model file is refused, never used."""
    if args.model or gallery.model is None:
        return args.model
    return recorded_model_ref(gallery.model.ref, f"gallery {gallery.location}")


def embed_photos(
    embedder: Embedder, paths: list, subject_only: bool = False, progress: bool = False
) -> EmbeddedPhotos | int:
    """Every face of ``paths`` (``facenet.apps.photos.embed_table``), reporting problems the way
    every command does: when some photos gave faces, each unreadable or faceless photo is one
    ``skipped`` line on stderr and the batch goes on; when none did, one error line (the first
    problem and the counts) and the exit code are returned instead.

    Returns:
        the embedded photos (at least one face), or an exit code.
    """
    embedded = embed_table(embedder, paths, subject_only=subject_only, progress=progress)
    problems = [p.message for p in embedded.problems]
    if not len(embedded.table):
        if len(problems) == 1:
            return error(problems[0])
        return error(
            f"no face in any of {len(paths)} photos ({embedded.unreadable} unreadable, "
            f"{embedded.faceless} without a face; first: {problems[0]})"
        )
    for problem in problems:
        print(f"{_errors.PROG}: skipped {problem}", file=sys.stderr)
    return embedded
