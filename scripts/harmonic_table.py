"""The paper's harmonic-embedding table (SPEC §6): an old model v1, a new model v2 trained to be
compatible with it (``harmonic.model``), and the pairs scored three ways on the same protocol:
v1/v1, v2/v2, and a v1 gallery queried with v2 probes (``facenet eval --gallery-model``); the ROC
curves in one figure.

    python scripts/harmonic_table.py --v1 resnet_cpu:lfw-celeba --v2 runs/harmonic/best.safetensors \\
        --data aligned/lfw_box160 --pairs ../shared/data/lfw/pairsDevTest.txt --out runs/harmonic_table
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facenet.eval.report import LFW_TABLE_HEAD, lfw_table_row, plot_rocs
from facenet.eval.suite import EvalSettings, run_eval


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--v1", required=True, help="the old model (its gallery)")
    ap.add_argument("--v2", required=True, help="the new, harmonic model")
    ap.add_argument("--data", required=True, help="aligned image folder of the pairs")
    ap.add_argument("--pairs", required=True, help="LFW-format pairs file")
    ap.add_argument("--out", type=Path, required=True, help="folder for table.md, roc.png, json")
    ap.add_argument("--both-ways", action="store_true", help="also a v2 gallery with v1 probes")
    args = ap.parse_args(argv)
    rows = {
        "v1 / v1": (args.v1, None),
        "v2 / v2": (args.v2, None),
        "v1 gallery / v2 probe": (args.v2, args.v1),
    }
    if args.both_ways:
        rows["v2 gallery / v1 probe"] = (args.v1, args.v2)
    reports = {}
    for name, (probe, gallery) in rows.items():
        settings = EvalSettings(probe, args.data, args.pairs, gallery_model=gallery)
        reports[name] = run_eval(settings).evaluation.report
    args.out.mkdir(parents=True, exist_ok=True)
    head = LFW_TABLE_HEAD.replace("| model |", "| pairing |", 1)
    table = "\n".join([head, *(lfw_table_row(n, r) for n, r in reports.items())])
    (args.out / "table.md").write_text(table + "\n")
    title = f"v1 {args.v1} / v2 {Path(args.v2).name}, {Path(args.pairs).name}"
    plot_rocs(reports, args.out / "roc.png", title)
    summary = {n: r.to_dict(include_roc=False) for n, r in reports.items()}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    print(table)
    print(f"wrote {args.out / 'roc.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
