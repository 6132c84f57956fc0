"""``facenet embed`` at growing sizes: peak memory and photos/s, one file vs shards vs Ray.

For each ``--sizes`` count of LFW photos (a seeded sample of the deep-funneled set, repeated when
asked for more than LFW has), runs ``facenet embed`` as a fresh process and reports its wall
time, photos/s and peak RSS (``ru_maxrss`` of the child; for Ray, the driver plus its workers as
sampled by psutil every 0.2 s):

- ``file``: ``--out F.npz`` (every face in memory until the end, as before streaming);
- ``shards``: ``--out DIR/`` (one shard of ``--shard-photos`` in memory);
- ``ray``: ``--out DIR/ --engine ray --workers W`` (a local Ray started for the run).

    python benchmarks/embed_scale.py [--sizes 1000 10000] [--model resnet_cpu:lfw-celeba]
        [--crop none] [--modes file shards ray] [--workers 2] [--json out.json]

``--crop none`` embeds each photo whole (no detection): the memory question does not depend on
the detector and the run takes minutes instead of an hour; pass ``--crop box`` for the full path.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACENET_DATA", ROOT.parent / "shared" / "data"))


def sample(n: int, seed: int) -> list[str]:
    photos = sorted(str(p) for p in (DATA / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))
    if not photos:
        raise SystemExit(f"LFW not found under {DATA} (set FACENET_DATA)")
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        out.extend(rng.sample(photos, min(n - len(out), len(photos))))
    return out


def peak_tree_rss(proc: subprocess.Popen, stop: threading.Event, peak: list[float]) -> None:
    import psutil

    try:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                rss = root.memory_info().rss + sum(
                    c.memory_info().rss for c in root.children(recursive=True)
                )
                peak[0] = max(peak[0], rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.2)
    except psutil.Error:
        pass


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the process tree)."""
    peak = [0.0]
    stop = threading.Event()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=peak_tree_rss, args=(proc, stop, peak), daemon=True)
    watcher.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    watcher.join()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, peak[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--model", default="resnet_cpu:lfw-celeba")
    ap.add_argument("--crop", default="none", choices=["none", "box", "similarity"])
    ap.add_argument("--modes", nargs="+", default=["file", "shards", "ray"],
                    choices=["file", "shards", "ray"])  # fmt: skip
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-photos", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    rows = []
    print(f"# facenet embed, model {args.model}, --crop {args.crop}, {os.cpu_count()} CPUs")
    for n in args.sizes:
        photos = sample(n, args.seed)
        work = Path(tempfile.mkdtemp(prefix="facenet-embed-scale-"))
        listing = work / "photos"
        listing.mkdir()
        for i, p in enumerate(photos):  # why: repeated photos need distinct names
            (listing / f"{i:06d}.jpg").symlink_to(p)
        base = [sys.executable, "-m", "facenet", "embed", str(listing), "--model", args.model,
                "--crop", args.crop, "--no-progress"]  # fmt: skip
        for mode in args.modes:
            if mode == "file":
                cmd = [*base, "--out", str(work / "faces.npz")]
            else:
                cmd = [*base, "--out", f"{work}/{mode}/", "--shard-photos", str(args.shard_photos)]
                if mode == "ray":
                    cmd += ["--engine", "ray", "--workers", str(args.workers)]
            wall, rss = run(cmd, env)
            rows.append({"photos": n, "mode": mode, "wall_s": wall, "photos_per_s": n / wall,
                         "peak_rss_mib": rss})  # fmt: skip
            print(f"  {n} photos, {mode}: {n / wall:.1f} photos/s, peak RSS {rss:.0f} MiB",
                  flush=True)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    print("\n| photos | output | photos/s | wall s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['photos']:,} | {r['mode']} | {r['photos_per_s']:.1f} | {r['wall_s']:.0f} "
              f"| {r['peak_rss_mib']:.0f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
