"""Online semi-hard mining + triplet loss + backward: ours vs pytorch-metric-learning.

    python benchmarks/mining.py                          # B = 160 ... 7,200, table on stdout
    python benchmarks/mining.py --sizes 160 800 --json /tmp/mining.json
    python benchmarks/mining.py --device cuda --sizes 1800 7200   # on a GPU: peak GPU memory

Same inputs for both: B = P x 40 L2-normalised 128-d embeddings of P synthetic identities
(clustered so that a realistic share of pairs has semi-hard negatives), margin 0.2, squared L2.
Each (batch size, implementation) runs in a fresh subprocess, so its peak memory is its own; the
memory reported is peak RSS *above* that subprocess's baseline after importing torch and the
implementation (the kernel's peak counter is reset at that point via /proc/self/clear_refs).
On ``--device cuda`` the times end with ``torch.cuda.synchronize()`` and the memory is the peak
of PyTorch's CUDA allocator above what the inputs already held.

The peer, ``TripletMarginMiner(type_of_triplets="semihard")`` + ``TripletMarginLoss`` with
``LpDistance(power=2, normalize_embeddings=True)``, enumerates every valid triplet
(B x 39 x (B - 40): 123M at B = 1,800), so it runs under an address-space limit
(``--peer-cap-gib``, default 10) and a timeout, and is skipped when the machine has too little free
memory; such rows read "failed: reason".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from facenet.utils import write_json

SIZES = (160, 800, 1800, 3600, 7200)
PER_IDENTITY = 40  # why: the paper's ~40 faces per identity (SPEC §3)
DIM = 128  # why: the paper's embedding size
MARGIN = 0.2  # why: the paper's alpha


# ------------------------------------------------------------------------------------ worker --


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """VmHWM (peak RSS since the last reset) in MiB; ru_maxrss when /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _inputs(batch: int, seed: int = 0):
    # why: torch loads in the worker processes only: their memory baseline is taken after it
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    identities = batch // PER_IDENTITY
    labels = torch.arange(identities).repeat_interleave(PER_IDENTITY)
    centres = F.normalize(torch.randn(identities, DIM, generator=g), dim=1)
    # why: noise 0.11 per dimension (~1.24 in norm) makes about a third of the anchor-positive
    # pairs have a semi-hard negative, a mid-training state (pml's cost does not depend on it).
    x = centres[labels] + 0.11 * torch.randn(batch, DIM, generator=g)
    return F.normalize(x, dim=1), labels


def worker(args: argparse.Namespace) -> None:
    # why: a worker imports torch and then only the implementation it measures (the peak memory
    # above its baseline must be that implementation's alone)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    if args.impl == "ours":
        from facenet.losses import triplet_loss

        def step(emb, labels):
            out = triplet_loss(emb, labels, args.rule, MARGIN, torch.Generator().manual_seed(0))
            out.loss.backward()
            return out.stats.num_triplets

    else:
        from pytorch_metric_learning.distances import LpDistance
        from pytorch_metric_learning.losses import TripletMarginLoss
        from pytorch_metric_learning.miners import TripletMarginMiner

        distance = LpDistance(p=2, power=2, normalize_embeddings=True)
        miner = TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard", distance=distance)
        loss_fn = TripletMarginLoss(margin=MARGIN, distance=distance)

        def step(emb, labels):
            triplets = miner(emb, labels)
            loss_fn(emb, labels, triplets).backward()
            return int(triplets[0].numel())

    embeddings, labels = _inputs(args.size)
    cuda = args.device.startswith("cuda")
    if cuda:
        embeddings, labels = embeddings.to(args.device), labels.to(args.device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_baseline = torch.cuda.memory_allocated() / 2**20
    baseline = _rss_mib()
    if args.cap_gib:
        with open("/proc/self/statm") as f:
            vms = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = vms + int(args.cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    reset = _reset_peak()
    if not reset:
        baseline = max(baseline, _peak_mib())
    times, count = [], 0
    for i in range(args.warmup + args.repeats):
        emb = embeddings.clone().requires_grad_()
        start = time.perf_counter()
        count = step(emb, labels)
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
        del emb
    print(
        json.dumps(
            {
                "seconds_median": statistics.median(times),
                "seconds_all": times,
                # why: above the baseline; peak RSS on CPU, peak allocated GPU memory on CUDA
                "peak_mib": (
                    torch.cuda.max_memory_allocated() / 2**20 - gpu_baseline
                    if cuda
                    else _peak_mib() - baseline
                ),
                "memory": "gpu_allocated" if cuda else "rss",
                "baseline_rss_mib": baseline,
                "num_triplets": count,
                "threads": torch.get_num_threads(),
            }
        )
    )


# ------------------------------------------------------------------------------------ parent --


def _available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def run_one(size: int, impl: str, rule: str, args: argparse.Namespace) -> dict:
    row = {"batch_size": size, "implementation": impl, "rule": rule}
    small = size <= 800
    repeats = args.repeats if small else max(1, args.repeats // (2 if impl == "ours" else 5))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--impl",
        impl,
        "--rule",
        rule,
        "--size",
        str(size),
        "--repeats",
        str(repeats),
        "--warmup",
        "1" if small or impl == "ours" else "0",
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    if impl == "pml" and args.device == "cpu":
        cmd += ["--cap-gib", str(args.peer_cap_gib)]
        free = _available_gib()
        if free < args.peer_cap_gib + 2:
            return {
                **row,
                "seconds_median": None,
                "peak_mib": None,
                "status": f"failed: skipped, only {free:.1f} GiB available for a {args.peer_cap_gib} GiB cap",
            }
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {
            **row,
            "seconds_median": None,
            "peak_mib": None,
            "status": f"failed: timeout after {args.timeout} s",
        }
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        if proc.returncode < 0:
            err = f"killed by signal {-proc.returncode}"
        elif "can't allocate memory" in proc.stderr or "MemoryError" in proc.stderr:
            cap = f" within the {args.peer_cap_gib:g} GiB cap" if impl == "pml" else ""
            err = f"out of memory{cap} (CPU allocator failed)"
        return {
            **row,
            "seconds_median": None,
            "peak_mib": None,
            "status": f"failed: {err[:160]}",
        }
    return {**row, **json.loads(lines[-1]), "repeats": repeats, "status": "ok"}


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[dict], rule: str) -> str:
    by = {
        (r["batch_size"], r["implementation"]): r for r in rows if r["rule"] in (rule, "semihard")
    }
    sizes = sorted({r["batch_size"] for r in rows})
    out = [
        "| B | semi-hard triplets | ours (s) | pml (s) | speed-up | ours peak (MiB) | pml peak (MiB) | memory ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in sizes:
        ours, pml = by.get((b, "ours"), {}), by.get((b, "pml"), {})
        o_t, p_t = ours.get("seconds_median"), pml.get("seconds_median")
        o_m, p_m = ours.get("peak_mib"), pml.get("peak_mib")
        speed = _times(p_t / o_t) if o_t and p_t else "—"
        mem = "—"
        if o_m and p_m:  # ours as a fraction of the peer's memory (or a multiple when larger)
            mem = f"1/{p_m / o_m:.0f}" if p_m >= 1.5 * o_m else _times(o_m / p_m)
        p_time = _fmt(p_t, ".3f") if p_t is not None else pml.get("status", "not run")
        o_time = _fmt(o_t, ".3f") if o_t is not None else ours.get("status", "not run")
        triplets = ours.get("num_triplets")
        count = f"{triplets:,}" if isinstance(triplets, int) else "—"
        out.append(
            f"| {b:,} | {count} | {o_time} | {p_time} | {speed} | "
            f"{_fmt(o_m, ',.0f')} | {_fmt(p_m, ',.0f')} | {mem} |"
        )
    return "\n".join(out)


def _times(ratio: float) -> str:
    """``133x``, ``2.4x``, ``0.08x``: two significant digits below 10."""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--impls", nargs="+", default=["ours", "pml"], choices=["ours", "pml"])
    parser.add_argument(
        "--rule", default="semi_hard", help="our rule (the peer is always semihard)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats at B <= 800")
    parser.add_argument("--peer-cap-gib", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per subprocess")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--json", type=Path, help="write the rows here")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=160, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cap-gib", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    for size in args.sizes:
        if size % PER_IDENTITY:
            parser.error(
                f"batch size {size} is not a multiple of {PER_IDENTITY} images per identity"
            )

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# load average at start: {load:.2f}; cpus: {os.cpu_count()}; device: {args.device}"
        + (" (memory columns: peak GPU memory)" if args.device != "cpu" else ""),
        flush=True,
    )
    rows = []
    for size in args.sizes:
        for impl in args.impls:
            rule = args.rule if impl == "ours" else "semihard"
            row = run_one(size, impl, rule, args)
            rows.append(row)
            print(
                f"B={size:>5} {impl:>4}: {row['status']}"
                + (
                    f", {row['seconds_median']:.3f} s, {row['peak_mib']:.0f} MiB"
                    if row["status"] == "ok"
                    else ""
                ),
                flush=True,
            )
    print()
    print(table(rows, args.rule))
    if args.json:
        meta = {"load_average_start": load, "cpus": os.cpu_count(), "command": " ".join(sys.argv)}
        write_json(args.json, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
