"""``facenet align SRC DST``: detect and crop the face in every photo, same folder layout out."""

from __future__ import annotations

import argparse

from facenet.commands._checks import (
    existing_dir,
    existing_file,
    int_at_least,
    non_negative_float,
    non_negative_int,
    output_dir,
    positive_int,
)
from facenet.commands._errors import fail
from facenet.detect.align import AlignConfig
from facenet.detect.base import DEFAULT_DETECTOR, DETECTORS
from facenet.detect.pipeline import align_folder
from facenet.models.registry import create_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src", type=existing_dir, help="folder of photos (one sub-folder per identity)"
    )
    parser.add_argument(
        "dst",
        type=output_dir,
        help="output folder for the crops, manifest.csv and manifest.json",
    )
    parser.add_argument(
        "--size",
        type=int_at_least(8),
        default=None,
        help="crop side in pixels (default: the --model's input size, else 160)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="take the crop size from this registered model's ModelSpec",
    )
    parser.add_argument(
        "--margin",
        type=non_negative_float,
        default=32.0,
        help="pixels added around the face box, half per side (default 32, Sandberg's LFW "
        "protocol at 160)",
    )
    parser.add_argument(
        "--margin-unit",
        choices=["source", "output"],
        default="source",
        help="box mode: margin in photo pixels (source; Sandberg's align_dataset_mtcnn) or in "
        "crop pixels (output; independent of photo resolution)",
    )
    parser.add_argument(
        "--mode",
        choices=["box", "similarity"],
        default="box",
        help="box: scaled and translated detector box (the paper); similarity: 5-point "
        "similarity transform to a canonical template",
    )
    parser.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=list(DETECTORS),
        help=f"face detector (default {DEFAULT_DETECTOR})",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="parallel processes (default 1: all threads)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="images per detector call"
    )
    parser.add_argument(
        "--detections",
        type=existing_file,
        default=None,
        metavar="MANIFEST",
        help="re-crop from the faces an earlier run recorded in its manifest.csv (no detector "
        "run for those files), e.g. similarity crops from a box run's landmarks",
    )
    parser.add_argument(
        "--max-side",
        type=non_negative_int,
        default=1280,
        help="detect on a copy shrunk to this many pixels on the longer side (0: never shrink)",
    )
    parser.add_argument(
        "--no-fallback",
        action="store_true",
        help="when no face is found, write nothing instead of a flagged centre crop",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every file (default: a rerun skips files an earlier run finished) and "
        "replace files in DST that facenet align did not write (default: refuse)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    size = args.size
    if args.model is not None:
        spec = create_model(args.model).spec
        h, w = spec.input_size
        if h != w:
            return fail(
                "facenet align", f"model {args.model} wants {h}x{w} input; only square crops", 2
            )
        if size is not None and size != h:
            return fail("facenet align", f"--size {size} contradicts --model {args.model}", 2)
        size = h
    size = 160 if size is None else size
    config = AlignConfig(
        size=size,
        margin=args.margin,
        margin_unit=args.margin_unit,
        mode=args.mode,
        fallback_fraction=None if args.no_fallback else AlignConfig.fallback_fraction,
    )
    try:
        summary = align_folder(
            args.src,
            args.dst,
            config,
            detector=args.detector,
            workers=args.workers,
            batch_size=args.batch_size,
            max_side=args.max_side or None,
            overwrite=args.overwrite,
            progress=not args.quiet,
            detections=args.detections,
        )
    except (OSError, ValueError, ImportError) as e:
        return fail("facenet align", e, 2)
    print(summary.format())
    return summary.exit_code
