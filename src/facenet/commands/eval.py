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
from pathlib import Path
from typing import Any

from facenet.commands._checks import (
    existing_dir,
    existing_file,
    float_in,
    output_dir,
    output_file,
    positive_int,
    rate,
)
from facenet.commands._errors import fail
from facenet.models.card import card_of

DEFAULT_CACHE = Path.home() / ".cache" / "facenet" / "embeddings"


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
    parser.add_argument(
        "--cache", type=output_dir, default=DEFAULT_CACHE, help="embedding cache folder"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _progress(quiet: bool, label: str):
    if quiet:
        return None
    t0 = time.perf_counter()

    def show(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9)
        print(f"\r{label}: {done}/{total} images ({rate:.1f}/s)", end="", file=sys.stderr)
        if done >= total:
            print(file=sys.stderr)

    return show


def _load(model_ref: str) -> Any:
    from facenet.eval.peers import is_peer, load_peer

    if is_peer(model_ref):
        return load_peer(model_ref)
    from facenet.models.loading import load_model

    return load_model(model_ref)


def _aligner(detector_name: str, align: str, model: Any):
    from facenet.detect.align import AlignConfig, align_detections
    from facenet.detect.base import create_detector

    detector = create_detector(detector_name)
    size = int(model.spec.input_size[0])
    config = AlignConfig(size=size, mode=align)

    def aligner(image):
        return align_detections(image, detector.detect(image), config).crop

    return aligner, f"{detector_name}:{align}:{size}:{config.margin}:{config.margin_unit}"


def run(args: argparse.Namespace) -> int:
    from facenet.data.images import ImageError
    from facenet.data.lfw import ProtocolFileError, read_pairs
    from facenet.eval.embedding import DEFAULT_CENTER_FRACTION, EmbeddingError
    from facenet.eval.peers import is_peer
    from facenet.eval.protocol import evaluate_pairs
    from facenet.utils import write_json

    try:
        pairs = read_pairs(args.pairs)
        data = Path(args.data)
        if not data.is_dir():
            raise FileNotFoundError(f"{data}: image folder not found")
        model = _load(args.model)
        peer = is_peer(args.model)
        # why: an explicit --align center never reads the folder's config
        folder_config = None if peer or args.align == "center" else _aligned_folder_config(data)
        if args.align is None:
            args.align = _default_align(data, folder_config)
        embed_kw: dict[str, Any] = {
            "batch_size": args.batch_size,
            "flip": args.flip,
            "flip_mode": args.flip_mode,
            "align": args.align,
            "center_fraction": args.center_fraction or DEFAULT_CENTER_FRACTION,
            "cache_dir": None if args.no_cache else args.cache,
        }
        aligned_by = None
        if not peer and args.align != "center":
            aligned_by = folder_config
            if aligned_by is not None and not args.detector:
                mode = aligned_by.get("mode", args.align)
                if mode != args.align:
                    raise ValueError(
                        f"{data} was aligned with mode {mode!r} (align_config.json), "
                        f"not {args.align!r}"
                    )
            elif not args.detector:
                # why: not written by `facenet align`: detect and crop on the fly instead
                args.detector = "mtcnn"
                print(
                    f"note: {data} has no align_config.json (not written by 'facenet align'); "
                    f"aligning on the fly with detector {args.detector}",
                    file=sys.stderr,
                )
        if args.detector and not peer:
            if args.align == "center":
                raise ValueError("--detector needs --align box or --align similarity")
            embed_kw["aligner"], embed_kw["aligner_name"] = _aligner(
                args.detector, args.align, model
            )
        setting = (
            "own HOG detection + 5-point alignment"
            if peer
            else f"align={args.align}"
            + (f" (fraction {embed_kw['center_fraction']})" if args.align == "center" else "")
            + (f", detector {args.detector}" if args.detector else "")
        )
        setting += f", {args.distance}" + (f", flip ({args.flip_mode})" if args.flip else "")
        ev = evaluate_pairs(
            model,
            pairs,
            data,
            args.distance,
            args.far,
            progress=_progress(args.quiet, "embedding"),
            **embed_kw,
        )
        rep = ev.report
        print(f"{args.model} on {Path(args.pairs).name}: {rep.summary()}")
        for note in rep.notes:
            print(f"  note: {note}")
        if peer and getattr(model, "n_fallback", 0):
            print(f"  note: HOG found no face in {model.n_fallback} computed images (centre box)")

        meta: dict[str, Any] = {
            "model": args.model,
            "model_identity": model.identity if peer else card_of(model).name,
            "data": str(data),
            "pairs": str(args.pairs),
            "pairs_name": Path(args.pairs).name,
            "folds": pairs.fold_source,
            "person_disjoint_folds": pairs.person_disjoint,
            "align": "dlib-hog-5pt" if peer else args.align,
            "distance": args.distance,
            "flip": args.flip,
            "aligned_folder_config": aligned_by,
            "setting": setting,
            "images": ev.stats.n_images,
            "images_from_cache": ev.stats.n_cached,
            "images_computed": ev.stats.n_computed,
            "embedding_seconds_this_run": round(ev.stats.seconds, 1),
            "command": _command_line(args),
        }
        extra: dict[str, Any] = {}
        sections: dict[str, str] = {}
        if peer:
            from facenet.eval.peers import PUBLISHED_LFW

            if args.model in PUBLISHED_LFW:
                meta["published_lfw"] = PUBLISHED_LFW[args.model]
                sections["Published figure for this peer"] = (
                    "| peer | reported LFW accuracy |\n|---|---|\n"
                    f"| {args.model} | {PUBLISHED_LFW[args.model]} |"
                )
        from facenet.eval.robustness import LABELS, run_sweep

        for kind in dict.fromkeys(args.sweep):
            sweep = run_sweep(
                model,
                pairs,
                data,
                kind,
                distance=args.distance,
                far_target=args.far,
                baseline=rep,
                progress=_progress(args.quiet, f"sweep {kind}"),
                **embed_kw,
            )
            extra.setdefault("sweeps", {})[kind] = sweep.to_dict()
            sections[f"Robustness: {LABELS[kind]}"] = sweep.markdown()
            print(f"\nRobustness, {LABELS[kind]}:\n{sweep.markdown()}")
        if args.identification:
            ident = _identification(model, data, args, embed_kw)
            extra["identification"] = ident.to_dict()
            sections["Identification (LFW gallery/probe split)"] = ident.markdown()
            print(f"\nIdentification:\n{ident.markdown()}")

        if args.json:
            write_json(
                args.json, {"meta": meta, "verification": rep.to_dict(include_roc=False), **extra}
            )
            print(f"wrote {args.json}")
        if args.report:
            from facenet.eval.report import write_report

            files = write_report(args.report, rep, ev.distances, ev.issame, meta, sections, extra)
            print(f"wrote {files['html']}")
    except EmbeddingError as e:
        return fail("facenet eval", e.summary(), 1)
    except (ProtocolFileError, OSError, ImageError, ImportError) as e:
        return fail("facenet eval", e, 1)
    except (ValueError, KeyError) as e:
        return fail("facenet eval", e, 2)
    return 0


def _default_align(data: Path, folder_config: dict[str, Any] | None) -> str:
    """``--align`` when not given: the folder's own mode when ``facenet align`` wrote it.

    why: a centre crop of an already aligned face (the centre 60% of a face box) scores some 8
    points lower on LFW without any error; peers (no folder config read) keep ``center``.
    """
    mode = (folder_config or {}).get("mode")
    if mode in ("box", "similarity"):
        print(
            f"note: {data} was written by 'facenet align' (mode {mode}): --align {mode}",
            file=sys.stderr,
        )
        return str(mode)
    return "center"


def _aligned_folder_config(data: Path) -> dict[str, Any] | None:
    """The settings ``facenet align`` left in ``data/align_config.json``, or None."""
    import json

    path = data / "align_config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    return config if isinstance(config, dict) else {"config": config}


def _command_line(args: argparse.Namespace) -> str:
    """The options that change results, as a reproducible command line."""
    parts = [
        "facenet eval",
        f"--model {args.model}",
        f"--data {args.data}",
        f"--pairs {args.pairs}",
    ]
    if args.align != "center":
        parts.append(f"--align {args.align}")
    if args.center_fraction:
        parts.append(f"--center-fraction {args.center_fraction}")
    if args.detector:
        parts.append(f"--detector {args.detector}")
    if args.flip:
        parts.append(f"--flip --flip-mode {args.flip_mode}")
    if args.distance != "l2":
        parts.append(f"--distance {args.distance}")
    if args.far != 1e-3:
        parts.append(f"--far {args.far:g}")
    parts += [f"--sweep {k}" for k in dict.fromkeys(args.sweep)]
    if args.identification:
        parts.append("--identification")
    return " ".join(parts)


def _identification(model: Any, data: Path, args: argparse.Namespace, embed_kw: dict[str, Any]):
    """Every image under ``data`` (folder per identity), LFW gallery/probe split."""
    from facenet.data.images import is_image_file
    from facenet.eval.embedding import embed_paths
    from facenet.eval.identification import evaluate_identification, gallery_probe_split

    paths = sorted(p for p in data.glob("*/*") if p.is_file() and is_image_file(p))
    if not paths:
        raise FileNotFoundError(f"{data}: no images in identity folders")
    labels = [p.parent.name for p in paths]
    split = gallery_probe_split(labels, [str(p.relative_to(data)) for p in paths])
    emb = embed_paths(model, paths, progress=_progress(args.quiet, "identification"), **embed_kw)
    metric = "cosine" if args.distance.startswith("cosine") else "l2"
    return evaluate_identification(
        emb[split.gallery],
        [labels[i] for i in split.gallery],
        emb[split.probes],
        [labels[i] for i in split.probes],
        emb[split.unknown],
        far_targets=(args.far, 1e-2, 1e-1),
        metric=metric,
    )
