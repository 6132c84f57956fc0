"""Where our MTCNN's time goes: each cascade stage and network as a share of the whole, and the
torch operators by self time, on the sample ``benchmarks/detect.py`` uses (LFW + CelebA-wild,
seed 0, decoded beforehand), at one thread by default.

    python benchmarks/detect_stages.py                 # 160 + 160 images, batch 16, 1 thread
    python benchmarks/detect_stages.py --n 300 --threads 2

Why: the detection bar of the photo-to-embedding issue (2x at unchanged output) depends on how
much of the time is the networks' arithmetic, which only another kind of arithmetic (int8)
shortens, and how much is around it. Timings wrap the detector's own methods; nothing changes
its output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="face-data folder (default ../shared/data)")
    parser.add_argument("--n", type=int, default=160, help="images per set (LFW, CelebA-wild)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # why: before torch/cv2 start their thread pools

    import cv2
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from facenet.data.images import load_image
    from facenet.detect.mtcnn import MTCNN
    from facenet.utils import default_data_dir

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    root = Path(args.data or default_data_dir() or "")
    images = []
    for pattern in ("lfw/lfw-deepfunneled/*/*.jpg", "celeba-wild/images/*/*.jpg"):
        files = sorted(root.glob(pattern))
        if not files:
            print(f"no images at {root / pattern}: pass --data", file=sys.stderr)
            return 2
        pick = np.random.default_rng(args.seed).choice(len(files), min(args.n, len(files)), False)
        images += [load_image(files[i]) for i in sorted(pick)]

    detector = MTCNN(device="cpu")
    seconds: dict[str, float] = {}

    def timed(name: str, fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t

        return run

    for stage in ("_stage1", "_stage2", "_stage3", "_canvas", "_crops"):
        setattr(detector, stage, timed(stage, getattr(detector, stage)))
    for net in ("pnet", "rnet", "onet"):
        module = getattr(detector, net)
        module.forward = timed(net, module.forward)

    def detect_all() -> None:
        for i in range(0, len(images), args.batch_size):
            detector.detect_batch(images[i : i + args.batch_size])

    detect_all()  # warm-up
    seconds.clear()
    start = time.perf_counter()
    detect_all()
    total = time.perf_counter() - start
    print(
        f"{len(images)} images, batch {args.batch_size}, {args.threads} thread(s): "
        f"{total:.2f} s, {len(images) / total:.1f} images/s"
    )
    print("| part | s | share |\n|---|---:|---:|")
    labels = {
        "_stage1": "stage 1 (pyramid + P-Net + NMS)",
        "_stage2": "stage 2 (crops + R-Net + NMS)",
        "_stage3": "stage 3 (crops + O-Net + NMS)",
        "pnet": "P-Net forward",
        "rnet": "R-Net forward",
        "onet": "O-Net forward",
        "_canvas": "pyramid canvases (resize, place)",
        "_crops": "candidate crops",
    }
    for key, label in labels.items():
        print(
            f"| {label} | {seconds.get(key, 0.0):.2f} | {100 * seconds.get(key, 0.0) / total:.0f}% |"
        )

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        detect_all()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:6]
    whole = sum(e.self_cpu_time_total for e in prof.key_averages())
    print("\n| torch operator | self share |\n|---|---:|")
    for e in ops:
        print(f"| {e.key} | {100 * e.self_cpu_time_total / whole:.0f}% |")
    slopes = [
        (type(net).__name__, name, float(p.min()))
        for net in (detector.pnet, detector.rnet, detector.onet)
        for name, p in net.named_parameters()
        if "prelu" in name
    ]
    negative = sum(s < 0 for *_, s in slopes)
    print(
        f"\nPReLU layers with a negative slope (pool-before-PReLU not exact): {negative} of {len(slopes)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
