"""``facenet export``: write a model or checkpoint as ONNX or TorchScript, checked against PyTorch.

Examples:
    facenet export nn4 --format onnx nn4.onnx
    facenet export runs/x/weights.safetensors --format torchscript model.pt
    facenet export inception_resnet_v1:casia-webface casia.onnx     # format from the suffix
    facenet export runs/cpu/best.safetensors model.safetensors --half --data-terms "LFW: research use"

A run's ``best.safetensors`` / ``last.safetensors`` carry what training measured at its end (the
int8 scales, harmonic compatibility and mixed-pair thresholds); its ``.pt`` checkpoints do not,
so exporting from a ``.pt`` whose run wrote those says so. The output may not be the input, nor a
training checkpoint (a run's ``last.pt`` / ``best.pt``): ``--resume`` and the run need them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facenet.commands._checks import non_negative_float, output_file
from facenet.commands._errors import fail
from facenet.models.export import ExportParityError, export_model
from facenet.models.loading import (
    ModelFileError,
    load_model,
    read_metadata,
    safe_torch_load,
    training_metadata,
)

# why: the suffixes users give each format; anything else needs --format.
_SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".jit": "torchscript",
    ".safetensors": "safetensors",
}
HALF_ATOL = 1e-2  # why: fp16 weights move unit-vector embeddings by ~1e-3
# why: what a run's exported weights add to the card at the end of training (train.loop._annotate)
_END_OF_RUN_FIELDS = ("int8", "compatible_with", "mixed_thresholds")


def _refuse_output(source: str, out: Path, end_of_run_note: str | None) -> str | None:
    """Why writing ``out`` would destroy something the user needs, or None
    (``end_of_run_note``: ``_end_of_run_note(source)``)."""
    if not out.exists():
        return None
    if Path(source).exists() and Path(source).resolve() == out.resolve():
        return f"{out}: is the model being exported; give another output file"
    sibling = Path(source).with_suffix(".safetensors")
    if end_of_run_note and out.resolve() == sibling.resolve():
        return (
            f"{out}: is the weights file the run wrote, with what it measured at the end "
            f"(int8 scales, harmonic fields) that {source} lacks; give another output file"
        )
    if out.suffix.lower() == ".pt":
        try:
            held = safe_torch_load(out)
        except ModelFileError:
            return None  # not a checkpoint of ours (e.g. an earlier TorchScript export)
        if isinstance(held, dict) and "model_state" in held:
            return (
                f"{out}: is a facenet training checkpoint (a run's --resume and best model); "
                "give another output file"
            )
    return None


def _end_of_run_note(source: str) -> str | None:
    """For a run's ``.pt``: what its sibling ``.safetensors`` (written by the run) carries that
    this export will not, and where to export from instead."""
    path = Path(source)
    sibling = path.with_suffix(".safetensors")
    if path.suffix.lower() != ".pt" or not sibling.is_file():
        return None
    try:
        info = read_metadata(sibling)
    except (ModelFileError, OSError, ValueError):
        return None
    lost = [k for k in _END_OF_RUN_FIELDS if info.get(k)]
    if not lost:
        return None
    return (
        f"{source} lacks what its run measured at the end ({', '.join(lost)}); "
        f"export from {sibling} to keep it"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="weights file (.safetensors/.pt), NAME:PRETRAINED or NAME")
    parser.add_argument("out", type=output_file, help="output file")
    parser.add_argument(
        "--format",
        choices=("onnx", "torchscript", "safetensors"),
        default=None,
        help="output format (default: from OUT's suffix: .onnx, .pt/.ts for TorchScript, "
        ".safetensors for facenet's self-describing weights file)",
    )
    parser.add_argument(
        "--half", action="store_true", help="safetensors: store the weights as fp16 (half size)"
    )
    parser.add_argument(
        "--data-terms",
        default="",
        help="safetensors: the training data's terms of use, stored in the file's metadata",
    )
    parser.add_argument(
        "--no-check", action="store_true", help="skip the parity check against PyTorch"
    )
    parser.add_argument(
        "--atol",
        type=non_negative_float,
        default=None,
        help=f"largest allowed max abs difference of embeddings (default 1e-4; {HALF_ATOL:g} "
        "with --half)",
    )


def run(args: argparse.Namespace) -> int:
    fmt = args.format or _SUFFIX_FORMATS.get(args.out.suffix.lower())
    if fmt is None:
        return fail(
            "facenet export",
            f"cannot tell the format from {args.out.name!r}; pass --format "
            "onnx|torchscript|safetensors",
            2,
        )

    if fmt == "torchscript" and args.out.suffix.lower() == ".safetensors":
        return fail("facenet export", f"{args.out}: TorchScript does not go in a .safetensors", 2)
    note = _end_of_run_note(args.model)
    refused = _refuse_output(args.model, args.out, note)
    if refused:
        return fail("facenet export", refused, 2)
    try:
        model = load_model(args.model)
    except (KeyError, OSError, ValueError) as e:
        return fail("facenet export", e, 2)
    if note and fmt == "safetensors":  # a .pt never carries them (train.loop._annotate)
        print(f"facenet export: warning: {note}", file=sys.stderr)
    if (args.half or args.data_terms) and fmt != "safetensors":
        return fail("facenet export", "--half and --data-terms need the safetensors format", 2)
    extra = None
    if fmt == "safetensors":
        is_file = Path(args.model).is_file()
        extra = {"training": training_metadata(args.model) if is_file else {}}
        if args.data_terms:
            extra["data_terms"] = args.data_terms
    atol = args.atol if args.atol is not None else (HALF_ATOL if args.half else 1e-4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = export_model(
            model, args.out, fmt, check=not args.no_check, atol=atol, half=args.half, extra=extra
        )
    except ExportParityError as e:
        return fail("facenet export", f"parity check failed: {e}", 1)
    h, w = model.spec.input_size
    check = (
        f"max |diff| vs PyTorch {report.max_abs_diff:.2e} on batches {report.batch_sizes}"
        if not args.no_check
        else "not checked"
    )
    print(
        f"wrote {report.path} ({report.format}, {report.bytes / 1e6:.1f} MB): "
        f"input (B, 3, {h}, {w}) -> (B, {model.spec.embedding_dim}); {check}"
    )
    return 0
