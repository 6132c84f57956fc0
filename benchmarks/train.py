"""Training throughput (images/s) of `facenet train` on this machine, beside a peer loop.

    python benchmarks/train.py                                  # the default model list
    python benchmarks/train.py --models resnet_cpu tiny:input_size=64,width=32 --steps 40
    python benchmarks/train.py --models resnet_cpu:widths=40/80/160/320,stem_width=32,head=gdc
    python benchmarks/train.py --threads 1 --json /tmp/train.json
    python benchmarks/train.py --config configs/cpu.yaml --models resnet_cpu   # a recipe's batch,
                                                                              # augmentation, cache size
    python benchmarks/train.py --device cuda --precision bf16 --batch 45 40 --models nn4:norm=batchnorm

"Ours" is the real training loop, ``facenet.train.loop.train``, run for ``--steps`` optimiser
steps on synthetic faces held in memory (the same uint8 arrays the decoded-image cache hands the
loop): identity-balanced P x K batch, augmentation (random crop, flip, colour jitter), forward,
online semi-hard mining + triplet loss, backward, gradient clipping, AdamW; logging every step.
Its figure is the median of the per-step images/s the loop itself logs, after ``--warmup`` steps.

The peer is the loop a PyTorch user writes with pytorch-metric-learning (the most used triplet
library): the same model, batches, augmentation and optimiser, with
``TripletMarginMiner(type_of_triplets="semihard")`` + ``TripletMarginLoss`` (margin 0.2, squared
L2 on unit vectors). Its figure is the median per-step images/s after the same warm-up.

On ``--device cuda`` both loops move the batch to the GPU after the same CPU augmentation, run
the model under the same autocast (``--precision``; fp16 with a ``GradScaler``) and mine on the
GPU; the per-step times include the synchronising read of the loss that both loops do.

Each (model, implementation) runs in a fresh subprocess with the same thread count. The
machine's load average is printed with the table: on a shared machine the numbers are lower
bounds, the ratio is the figure to compare.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from facenet.config import load_config

# why: the models `facenet train` recipes train on a CPU (the paper's networks run at 1-10
# images/s here; pass e.g. nns2:norm=batchnorm to measure them).
DEFAULT_MODELS = ("resnet_cpu", "tiny:input_size=64,width=32")
MARGIN = 0.2  # why: the paper's alpha (SPEC §2)


def _parse_value(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def parse_model(text: str) -> tuple[str, dict[str, Any]]:
    """``name[:key=value,...]`` -> (name, kwargs); values parsed as int, float or str, and
    ``a/b/c`` as a list (``resnet_cpu:widths=40/80/160/320,head=gdc``)."""
    name, _, rest = text.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if "/" in value:
            kwargs[key] = [_parse_value(v) for v in value.split("/")]
        else:
            kwargs[key] = _parse_value(value)
    return name, kwargs


def _config(name: str, kwargs: dict[str, Any], args: argparse.Namespace, run_dir: str):
    p, k = args.batch
    return load_config(
        args.config,
        [
            f"model.name={name}",
            f"model.kwargs={json.dumps(kwargs)}",
            f"max_steps={args.steps}",
            f"threads={args.threads}",
            f"device={args.device}",
            f"precision={args.precision}",
            f"sampler.identities_per_batch={p}",
            f"sampler.images_per_identity={k}",
            "data.roots=[]",
            "data.split=none",
            f"data.synthetic_identities={max(2 * p, 32)}",
            f"data.synthetic_images_per_identity={2 * k}",
            "mining.rule=semi_hard",
            f"mining.margin={MARGIN}",
            "optimiser.name=adamw",
            "optimiser.lr=0.001",
            "optimiser.grad_clip=5.0",
            "optimiser.ema_decay=0",  # why: the peer keeps no weight average
            "validation.every=0",
            "validation.pairs=synthetic",
            "time_limit_minutes=0",
            f"output.dir={run_dir}",
            "output.log_every=1",
            f"output.checkpoint_every={args.steps}",
            "output.tensorboard=false",
            "output.progress=false",
            "output.weights=false",
        ],
    )


def run_ours(name: str, kwargs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    # why: each implementation runs in its own worker process, which imports only its own loop
    # (the parent that starts the workers never loads torch)
    from facenet.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        config = _config(name, kwargs, args, tmp)
        train(config)
        with open(Path(tmp) / "train_log.csv") as f:
            rows = list(csv.DictReader(f))
    rates = [float(r["images_per_s"]) for r in rows[args.warmup :]]
    return {"images_per_s": statistics.median(rates), "steps_timed": len(rates)}


def run_peer(name: str, kwargs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    # why: as in run_ours, only this worker loads torch and the peer library (a test extra)
    import torch
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.miners import TripletMarginMiner

    from facenet.data.augment import augment_batch, step_rng
    from facenet.data.sampler import IdentityBalancedSampler
    from facenet.data.synthetic import make_synthetic
    from facenet.models import create_model
    from facenet.preprocess import normalize
    from facenet.train.data import stored_size

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = _config(name, kwargs, args, run_dir="unused")  # the peer writes no run folder
    device = torch.device(args.device)
    model = create_model(name, **kwargs).to(device, memory_format=torch.channels_last)
    cuda = device.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and args.precision == "fp16")
    model.train()
    spec = model.spec
    size = stored_size(config, spec.input_size)
    faces = make_synthetic(
        config.data.synthetic_identities, config.data.synthetic_images_per_identity, size, 0
    )
    p, k = args.batch
    sampler = IdentityBalancedSampler(faces.labels, p, k, seed=0)

    def batches():
        epoch = 0
        while True:  # the sampler ends each epoch; the loop reshuffles and goes on, as ours does
            sampler.set_epoch(epoch)
            yield from sampler
            epoch += 1

    stream = batches()
    distance = LpDistance(p=2, power=2, normalize_embeddings=True)
    miner = TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard", distance=distance)
    loss_fn = TripletMarginLoss(margin=MARGIN, distance=distance)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rates = []
    for step in range(args.steps):
        t = time.perf_counter()
        idx = next(stream)
        x = augment_batch(
            faces.images[idx], spec.input_size, config.data.augment, step_rng(0, step)
        )
        x = normalize(x, spec).to(device).contiguous(memory_format=torch.channels_last)
        labels = torch.from_numpy(faces.labels[idx]).to(device)
        with torch.autocast("cuda", dtype=dtype, enabled=cuda and dtype is not None):
            emb = model(x)
        emb = emb.float()
        loss = loss_fn(emb, labels, miner(emb, labels))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        float(loss)  # why: ours reads its loss every step too (a device sync)
        rates.append(len(idx) / (time.perf_counter() - t))
    rates = rates[args.warmup :]
    return {"images_per_s": statistics.median(rates), "steps_timed": len(rates)}


def _worker(args: argparse.Namespace) -> None:
    name, kwargs = parse_model(args.worker_model)
    fn = run_ours if args.worker_impl == "ours" else run_peer
    result = fn(name, kwargs, args)
    # why: worker process only (see run_ours)
    from facenet.models import create_model
    from facenet.models.flops import count_multiply_adds

    model = create_model(name, **kwargs)
    result["params"] = sum(p.numel() for p in model.parameters())
    result["input"] = model.spec.input_size[0]
    result["macs"] = count_multiply_adds(model)
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(model: str, impl: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker-model",
        model,
        "--worker-impl",
        impl,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--batch",
        *map(str, args.batch),
        "--device",
        args.device,
        "--precision",
        args.precision,
        *(["--config", args.config] if args.config else []),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {proc.returncode}: {tail[0][:120]}"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="name[:k=v,...]")
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps per run")
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the median")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs=2, default=(64, 4), metavar=("P", "K"))
    ap.add_argument(
        "--config",
        help="take augmentation, cached-image size and the rest from this training config "
        "(model, batch, optimiser, data source and logging are still set here)",
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="autocast dtype on CUDA (ignored on CPU)",
    )
    ap.add_argument("--no-peer", action="store_true", help="only our loop")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--worker-model", help=argparse.SUPPRESS)
    ap.add_argument("--worker-impl", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps <= args.warmup:
        ap.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    if args.worker_model:
        _worker(args)
        return

    impls = ("ours",) if args.no_peer else ("ours", "peer")
    rows = []
    for model in args.models:
        row: dict[str, Any] = {"model": model}
        for impl in impls:
            r = _spawn(model, impl, args)
            row[impl] = r
            print(f"  {model} {impl}: {r}", file=sys.stderr, flush=True)
        rows.append(row)

    p, k = args.batch
    where = args.device if args.device == "cpu" else f"{args.device} ({args.precision})"
    print(
        f"\nTraining throughput on {where}, batch {p}x{k}={p * k}, {args.threads} thread(s), median of "
        f"{args.steps - args.warmup} steps after {args.warmup}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
    )
    print("| model | params | input | MACs/img | ours img/s | pml loop img/s | ours / pml |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ours, peer = row["ours"], row.get("peer", {})
        info = ours if "params" in ours else peer
        params = f"{info['params'] / 1e6:.2f}M" if "params" in info else "-"
        size = info.get("input", "-")
        macs = f"{info['macs'] / 1e6:.0f}M" if "macs" in info else "-"
        o = f"{ours['images_per_s']:.1f}" if "images_per_s" in ours else f"failed: {ours['error']}"
        if not peer:
            q, ratio = "-", "-"
        elif "images_per_s" in peer:
            q = f"{peer['images_per_s']:.1f}"
            ratio = (
                f"{ours['images_per_s'] / peer['images_per_s']:.2f}x"
                if "images_per_s" in ours
                else "-"
            )
        else:
            q, ratio = f"failed: {peer['error']}", "-"
        print(f"| {row['model']} | {params} | {size} | {macs} | {o} | {q} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
