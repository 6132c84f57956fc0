"""``facenet demo``: align, verify, identify (open set) and cluster a sample of LFW; HTML report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from facenet.apps.demo import DemoConfig, run_demo
from facenet.apps.demo_lfw import DataNotFound, download_lfw, how_to_get_lfw
from facenet.commands._checks import int_at_least, non_negative_int
from facenet.commands._errors import fail, one_line
from facenet.utils import UnsafeOutputError, default_data_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", help="data folder holding lfw/ (default: $FACENET_DATA, else ../shared/data)"
    )
    parser.add_argument(
        "--out", default="facenet-demo", help="output folder (default: facenet-demo)"
    )
    parser.add_argument(
        "--model",
        help="weights file or NAME:PRETRAINED (default: inception_resnet_v1:casia-webface)",
    )
    parser.add_argument("--detector", default="mtcnn", help="face detector (default: mtcnn)")
    parser.add_argument(
        "--download",
        action="store_true",
        help="download LFW into --data (default ~/facenet-data) when it is not there",
    )
    parser.add_argument(
        "--gallery-people", type=int_at_least(2), default=20, help="people to enrol"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="which LFW sample")


def run(args: argparse.Namespace) -> int:
    data = args.data or (str(default_data_dir()) if default_data_dir() else None)
    if args.download:
        target = Path(args.data or os.path.expanduser("~/facenet-data"))
        try:
            download_lfw(target)
        except (OSError, ValueError) as e:
            return fail("facenet demo", f"downloading LFW failed: {e}", 1)
        data = str(target)
    if data is None:
        return fail("facenet demo", one_line(how_to_get_lfw(None)), 2)
    config = DemoConfig(gallery_people=args.gallery_people, seed=args.seed)
    try:
        result = run_demo(data, args.out, args.model, config, detector=args.detector)
    except DataNotFound as e:
        return fail("facenet demo", one_line(e), 2)
    except UnsafeOutputError as e:
        return fail("facenet demo", e, 1)
    s = result.summary
    idn, cl = s["identification"], s["clustering"]
    ok = sum(v["same"] == v["truth"] for v in s["verification"])
    print(f"verification: {ok}/{len(s['verification'])} pairs right")
    print(
        f"identification: rank-1 {idn['rank1_correct']}/{idn['known_probes']}, "
        f"unknown rejected {idn['unknown_rejected']}/{idn['unknown_probes']}"
    )
    print(
        f"clustering: {cl['faces']} faces -> {cl['clusters']} clusters "
        f"(pairwise F1 {cl['pairwise_f1']:.3f}, BCubed F {cl['bcubed_f']:.3f})"
    )
    print(f"report: {result.html}  ({s['seconds']['total']:.0f} s)")
    return 0
