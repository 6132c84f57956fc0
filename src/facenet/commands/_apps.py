"""Arguments shared by the application commands (embed, verify, gallery, identify, cluster):
which model, which detector, how to crop. Adapts argv to ``facenet.apps``; holds no logic."""

from __future__ import annotations

import argparse
import os
import sys

from facenet.apps.embedder import CROP_MODES, DEFAULT_MODEL, Embedder

DEFAULT_GALLERY = "facenet-gallery"


def add_model_arguments(
    parser: argparse.ArgumentParser, model_default: str | None = DEFAULT_MODEL
) -> None:
    """``--model``, ``--detector``, ``--crop``, ``--batch-size``, ``--device``."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        default=model_default,
        help="weights file (.safetensors/.pt), NAME:PRETRAINED or NAME "
        f"(default: {model_default or 'the model the gallery was built with, else ' + DEFAULT_MODEL})",
    )
    g.add_argument("--detector", default="mtcnn", help="face detector (default: mtcnn)")
    g.add_argument(
        "--crop",
        choices=CROP_MODES,
        default="box",
        help="box: detector box + margin; similarity: 5-point alignment; none: the photos "
        "already are tight face crops (no detection)",
    )
    g.add_argument("--batch-size", type=int, default=32, help="faces per forward pass")
    g.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, help="squared-L2 distance threshold")
    g.add_argument(
        "--far", type=float, help="use the model's threshold calibrated for this false-accept rate"
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
    )


def error(message: str) -> int:
    """Print ``facenet: error: message`` to stderr; returns exit code 1."""
    print(f"facenet: error: {message}", file=sys.stderr)
    return 1
