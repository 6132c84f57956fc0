"""``facenet eval``: LFW-protocol verification, VAL@FAR, ROC, sweeps and identification.

Examples:
    facenet eval --model dlib-resnet --data ../shared/data/lfw/lfw-deepfunneled \\
        --pairs ../shared/data/lfw/pairs.txt --json out.json --report out_dir
    facenet eval --model runs/x/weights.safetensors --data aligned/lfw_box160 --align box \\
        --pairs pairs.txt --flip --distance cosine-centered --sweep jpeg
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from facenet.commands._apps import add_backend_argument
from facenet.commands._checks import (
    existing_dir,
    existing_file,
    float_in,
    non_empty,
    output_dir,
    output_file,
    positive_int,
    rate,
)
from facenet.commands._errors import fail
from facenet.data.images import ImageError
from facenet.data.lfw import ProtocolFileError
from facenet.eval.alignment import Alignment
from facenet.eval.embedding import EmbeddingError
from facenet.eval.int8 import CALIBRATION_IMAGES
from facenet.eval.report import write_report
from facenet.eval.robustness import LABELS
from facenet.eval.suite import EvalSettings, default_cache, run_eval
from facenet.utils import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="weights file, NAME:PRETRAINED, NAME, or a peer (dlib-resnet)",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=existing_dir,
        help="image folder: <root>/<Name>/<Name>_NNNN.*",
    )
    parser.add_argument(
        "--pairs",
        required=True,
        type=existing_file,
        help="LFW-format pairs file (e.g. pairs.txt)",
    )
    parser.add_argument(
        "--align",
        choices=("center", "box", "similarity"),
        default=None,
        help="center: centre crop of the (deep-funneled) photo; box/similarity: --data is a "
        "folder written by 'facenet align' (or use --detector to align on the fly). Default: "
        "the mode in --data/align_config.json when 'facenet align' wrote the folder, else center",
    )
    parser.add_argument(
        "--center-fraction",
        type=float_in(0.0, 1.0, low_open=True),
        default=None,
        help="fraction of the frame kept by --align center (default 0.6)",
    )
    parser.add_argument(
        "--detector",
        default=None,
        help="align on the fly with this facenet.detect detector (box/similarity only); by "
        "default a folder written by 'facenet align' (it has align_config.json) is used as is "
        "and any other folder is aligned on the fly with mtcnn",
    )
    parser.add_argument("--flip", action="store_true", help="add horizontally flipped crops")
    parser.add_argument(
        "--flip-mode", choices=("mean", "concat"), default="mean", help="how flips combine"
    )
    parser.add_argument("--distance", choices=("l2", "cosine", "cosine-centered"), default="l2")
    parser.add_argument("--far", type=rate, default=1e-3, help="FAR target for VAL (1e-3)")
    parser.add_argument("--json", type=output_file, default=None, help="write the results as JSON")
    parser.add_argument(
        "--report", type=output_dir, default=None, help="write an HTML/MD report here"
    )
    parser.add_argument(
        "--sweep",
        action="append",
        choices=("jpeg", "size"),
        default=[],
        help="robustness sweep (repeatable): JPEG quality or face size",
    )
    parser.add_argument(
        "--identification",
        action="store_true",
        help="also closed/open-set identification on every image under --data",
    )
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per pass")
    add_backend_argument(parser)
    parser.add_argument(
        "--quantize-network",
        choices=("int8",),
        default=None,
        help="int8: static int8 network in ONNX Runtime (needs --backend onnxruntime), its "
        f"activation ranges calibrated on {CALIBRATION_IMAGES} images under --data of people "
        "the pairs file never names",
    )
    parser.add_argument(
        "--gallery-model",
        default=None,
        type=non_empty,
        help="harmonic embeddings: embed each pair's left image with this model (a gallery "
        "enrolled with it) and its right image with --model (the probe), and score the "
        "mixed pairs",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="int8: also score the pairs with 128-byte embeddings (one int8 per dimension), "
        "scaled by the model's own calibration (its training faces) or, without one, "
        "calibrated on images under --data of people the pairs file never names",
    )
    parser.add_argument(
        "--cache",
        type=output_dir,
        default=None,
        help="embedding cache folder (default: $FACENET_CACHE/embeddings, else "
        "~/.cache/facenet/embeddings)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _progress(quiet: bool) -> Callable[[str], Callable[[int, int], None] | None]:
    """``progress(label)`` for ``run_eval``: a one-line counter on stderr, or nothing."""

    def for_label(label: str) -> Callable[[int, int], None] | None:
        if quiet:
            return None
        t0 = time.perf_counter()

        def show(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            print(f"\r{label}: {done}/{total} images ({rate:.1f}/s)", end="", file=sys.stderr)
            if done >= total:
                print(file=sys.stderr)

        return show

    return for_label


def run(args: argparse.Namespace) -> int:
    settings = EvalSettings(
        model=args.model,
        data=args.data,
        pairs=args.pairs,
        align=args.align,
        center_fraction=args.center_fraction,
        detector=args.detector,
        flip=args.flip,
        flip_mode=args.flip_mode,
        distance=args.distance,
        far=args.far,
        sweeps=tuple(args.sweep),
        identification=args.identification,
        batch_size=args.batch_size,
        backend=args.backend,
        quantize_network=args.quantize_network,
        quantize=args.quantize,
        gallery_model=args.gallery_model,
        cache_dir=None if args.no_cache else (args.cache or default_cache()),
    )

    def tell(alignment: Alignment) -> None:
        for note in alignment.notes:
            print(f"note: {note}", file=sys.stderr)

    try:
        result = run_eval(settings, progress=_progress(args.quiet), on_alignment=tell)
    except EmbeddingError as e:
        return fail("facenet eval", e.summary(), 1)
    except (ProtocolFileError, OSError, ImageError, ImportError) as e:
        return fail("facenet eval", e, 1)
    except (ValueError, KeyError) as e:
        return fail("facenet eval", e, 2)
    report = result.evaluation.report
    who = args.model if not args.gallery_model else f"{args.gallery_model} -> {args.model}"
    print(f"{who} on {Path(args.pairs).name}: {report.summary()}")
    for note in result.notes:
        print(f"  note: {note}")
    for kind, sweep in result.sweeps.items():
        print(f"\nRobustness, {LABELS[kind]}:\n{sweep.markdown()}")
    if result.identification is not None:
        print(f"\nIdentification:\n{result.identification.markdown()}")
    if result.int8 is not None:
        print(f"\n128-byte embeddings (int8):\n{result.int8.markdown(report)}")
    try:
        if args.json:
            verification = report.to_dict(include_roc=False)
            write_json(
                args.json, {"meta": result.meta, "verification": verification, **result.extra()}
            )
            print(f"wrote {args.json}")
        if args.report:
            ev = result.evaluation
            files = write_report(
                args.report,
                report,
                ev.distances,
                ev.issame,
                result.meta,
                result.sections(),
                result.extra(),
            )
            print(f"wrote {files['html']}")
    except OSError as e:
        return fail("facenet eval", e, 1)
    return 0
