"""``facenet models``: the model family with counted params and multiply-adds beside the paper's.

Examples:
    facenet models                      # Markdown table, every registered model
    facenet models nn2 nn4 --norm batchnorm
    facenet models --json models.json   # one object per model (also: --json - for stdout)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from facenet.commands._checks import output_file
from facenet.models import create_model, list_models
from facenet.models.flops import PAPER_COSTS, model_cost
from facenet.utils import dumps_json, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="models to list (default: all registered)")
    parser.add_argument(
        "--norm",
        choices=("lrn", "batchnorm"),
        default=None,
        help="build the paper models with this normalisation (default: each model's own)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        type=lambda v: v if v == "-" else str(output_file(v)),
        metavar="PATH",
        help="print JSON (one object per model) instead of the table; to PATH if given",
    )


def _fmt(n: float | None) -> str:
    """3 significant digits with K/M/B: 7456304 -> '7.46M', 1.6e9 -> '1.6B'."""
    if n is None:
        return "-"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"


def _delta(counted: int, paper: float | None) -> str:
    return "-" if paper is None else f"{100 * (counted - paper) / paper:+.1f}%"


def model_rows(names: list[str], norm: str | None = None) -> list[dict[str, Any]]:
    """Build each model and count it; one dict per model (the ``--json`` objects)."""

    rows = []
    for name in names:
        kwargs = {"norm": norm} if norm and name in PAPER_COSTS else {}
        model = create_model(name, **kwargs)
        paper_params, paper_flops = PAPER_COSTS.get(name, (None, None))
        rows.append(
            model_cost(model).to_dict()
            | {"norm": model.spec.extra.get("norm")}
            | {"paper_params": paper_params, "paper_flops": paper_flops}
        )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (params, FLOPS = multiply-adds, paper's figures, deltas)."""
    lines = [
        "| model | input (HxW) | dim | params | paper params | Δ | FLOPS (mult-adds) "
        "| paper FLOPS | Δ | buffers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h, w = r["input_size"]
        lines.append(
            f"| {r['name']} | {h}x{w} | {r['embedding_dim']} | {_fmt(r['params'])} "
            f"| {_fmt(r['paper_params'])} | {_delta(r['params'], r['paper_params'])} "
            f"| {_fmt(r['flops'])} | {_fmt(r['paper_flops'])} "
            f"| {_delta(r['flops'], r['paper_flops'])} | {_fmt(r['buffers'])} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    available = list_models()
    unknown = [n for n in args.names if n not in available]
    if unknown:
        print(
            f"facenet models: unknown model(s) {', '.join(unknown)}; "
            f"available: {', '.join(available)}",
            file=sys.stderr,
        )
        return 2
    rows = model_rows(args.names or available, norm=args.norm)
    if args.json is None:
        print(markdown_table(rows))
    elif args.json == "-":
        print(dumps_json(rows))
    else:
        write_json(Path(args.json), rows)
        print(f"wrote {len(rows)} models to {args.json}")
    return 0
