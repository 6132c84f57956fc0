"""``facenet eval`` wall time, before vs after: the same command in two checkouts, side by side.

Runs ``facenet eval --model M --data D --pairs P --no-cache --json F [EXTRA...]`` as a fresh
process in ``--before`` (another checkout, e.g. a git worktree of an older main, through
``PYTHONPATH``) and in this checkout, alternately ``--runs`` times, and prints wall time, images
per second and the accuracy each reported (which must agree to the reported digit).

    python benchmarks/eval_speed.py --before /work/wt_before \\
        [--model inception_resnet_v1:casia-webface] [--pairs .../pairs.txt] [--runs 1] \\
        [--after-args "--backend onnxruntime"] [-- --align center]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACENET_DATA", ROOT.parent / "shared" / "data"))


def run_eval(src: Path, argv: list[str], out: Path) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-m", "facenet", "eval", *argv, "--no-cache", "--quiet", "--json",
           str(out)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"eval in {src} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, json.loads(out.read_text())


def accuracy_of(report: dict) -> str:
    v = report.get("verification", report)
    acc, std = v.get("accuracy"), v.get("accuracy_std")
    return f"{100 * acc:.2f}% ± {100 * std:.2f}" if acc is not None and std is not None else "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="the other checkout")
    ap.add_argument("--model", default="inception_resnet_v1:casia-webface")
    ap.add_argument("--data", type=Path, default=DATA / "lfw" / "lfw-deepfunneled")
    ap.add_argument("--pairs", type=Path, default=DATA / "lfw" / "pairs.txt")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--after-args", default="",
                    help="arguments for this checkout only, e.g. '--backend onnxruntime'")  # fmt: skip
    ap.add_argument("extra", nargs="*", help="more facenet eval arguments (after --)")
    args = ap.parse_args(argv)
    base = ["--model", args.model, "--data", str(args.data), "--pairs", str(args.pairs),
            *args.extra]  # fmt: skip
    images = len({ln for ln in _pair_images(args.pairs)})
    sides = {"before": args.before.resolve() / "src", "after": ROOT / "src"}
    only = {"before": [], "after": args.after_args.split()}
    walls: dict[str, list[float]] = {k: [] for k in sides}
    reports: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.runs):
            for name, src in sides.items():
                wall, report = run_eval(src, base + only[name], Path(tmp) / f"{name}{r}.json")
                walls[name].append(wall)
                reports[name] = report
                print(f"  run {r + 1} {name}: {wall:.0f} s, {accuracy_of(report)}", flush=True)
    print(f"\n`facenet eval {' '.join(base)}`, {images:,} images, median of {args.runs}; after "
          f"also: `{args.after_args or '-'}`\n")  # fmt: skip
    print("| checkout | wall s | images/s | accuracy |")
    print("|---|---|---|---|")
    for name in sides:
        w = statistics.median(walls[name])
        print(f"| {name} | {w:.0f} | {images / w:.1f} | {accuracy_of(reports[name])} |")
    ratio = statistics.median(walls["before"]) / statistics.median(walls["after"])
    print(f"\nspeed-up (before / after): {ratio:.2f}x")
    return 0


def _pair_images(pairs: Path) -> list[str]:
    """The image names a pairs file refers to (LFW format)."""
    out = []
    for line in pairs.read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            out += [f"{f[0]}/{int(f[1])}", f"{f[0]}/{int(f[2])}"]
        elif len(f) == 4:
            out += [f"{f[0]}/{int(f[1])}", f"{f[2]}/{int(f[3])}"]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
