"""Inference speed of every model on this machine, as a fraction of its measured fp32 peak.

For each model and each way of running it (PyTorch eager NCHW, eager channels_last, ``folded``:
what the embedders run, batch norm folded into the convolutions + channels_last, see
``facenet.models.inference.inference_network``; ``torchscript``: the folded network traced and
frozen; torch.compile; ONNX Runtime) this prints images/s at batch 1 and 32, the fraction of the
machine's fp32 peak it reaches, and how far its output is from the eager model's on the same
input (max |diff|; above 1e-4 the cell is marked WRONG: a fast variant that computes something
else is no result):

    fraction = 2 x multiply-adds per image x images/s / peak FLOP/s

where the peak is measured in the same run, with the same thread count, by a large sgemm loop
(``torch.mm`` on 2048x2048 fp32 matrices; median of 7 repeats, measured at the start, before
each model and at the end; the largest is the peak, so a busy machine understates nothing). Times are medians over repeated runs of at least ``--min-time``
seconds per cell, after warm-up.

Usage:
    python benchmarks/inference.py                              # all models, all variants
    python benchmarks/inference.py --models nn4 nn2 --json out.json
    python benchmarks/inference.py --models nn4 --variants onnxruntime compile --threads 2
    python benchmarks/inference.py --models runs/distill_nns2/best.safetensors resnet_cpu:lfw-celeba
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facenet.models import create_model, list_models
from facenet.models.card import card_of
from facenet.models.flops import count_multiply_adds
from facenet.models.inference import inference_network
from facenet.models.loading import load_model

VARIANTS = ("eager", "channels_last", "folded", "torchscript", "compile", "onnxruntime")
# why: the parity bar the library holds its own backends to (tests/models/test_fold.py)
PARITY_TOLERANCE = 1e-4


def median_seconds(fn: Callable[[], object], min_time: float, min_runs: int = 3) -> float:
    """Median wall time of ``fn()`` over at least ``min_runs`` runs and ``min_time`` seconds."""
    fn()  # warm-up (allocations, lazy init, ORT/compile first-run work)
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return statistics.median(times)


def sgemm_peak(threads: int, n: int = 2048, repeats: int = 7) -> float:
    """Measured fp32 matmul throughput (FLOP/s): median of ``repeats`` n x n x n products."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    for _ in range(2):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def make_runner(
    model: nn.Module, variant: str, batch: int, threads: int, workdir: Path
) -> Callable[[], object]:
    """A zero-argument function that embeds one (batch, 3, H, W) input with ``variant``."""
    x = _input(model, batch)
    if variant == "eager":
        return lambda: _no_grad(model, x)
    if variant == "channels_last":
        m = model.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        return lambda: _no_grad(m, xc)
    if variant == "folded":
        m = inference_network(model, "torch")
        xc = x.contiguous(memory_format=torch.channels_last)
        return lambda: _no_grad(m, xc)
    if variant == "torchscript":
        folded = inference_network(model, "torch")
        xc = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(folded, xc, check_trace=False).eval())
        return lambda: _no_grad(frozen, xc)
    if variant == "compile":
        import torch._inductor.config as inductor_config

        # why: freezing folds weights into constants so inductor can pre-pack them for oneDNN.
        inductor_config.freezing = True
        m = model.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        compiled = torch.compile(m, dynamic=False)
        return lambda: _no_grad(compiled, xc)
    if variant == "onnxruntime":
        import onnxruntime as ort

        from facenet.models.export import export_onnx

        path = workdir / f"{card_of(model).name}.onnx"
        if not path.exists():
            export_onnx(model.to(memory_format=torch.contiguous_format), path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        xn = np.ascontiguousarray(x.numpy())
        return lambda: session.run(None, {name: xn})
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


def _input(model: nn.Module, batch: int) -> torch.Tensor:
    """The benchmark's (batch, 3, H, W) input for ``model``: the same for every variant."""
    h, w = model.spec.input_size
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(batch))


def max_abs_diff(out: object, reference: torch.Tensor) -> float:
    """Largest |difference| between a runner's output (a tensor, or ONNX Runtime's list of
    arrays) and the eager model's."""
    got = out[0] if isinstance(out, (list, tuple)) else out
    got = torch.as_tensor(np.asarray(got) if not isinstance(got, torch.Tensor) else got)
    return float((got.float() - reference).abs().max())


def _no_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def build(ref: str) -> nn.Module:
    """A registry name (random weights: speed does not depend on them), or a trained model by
    what ``facenet`` commands take (``NAME:PRETRAINED``, a weights file): its own kwargs."""
    if ref in list_models():
        return create_model(ref).eval()
    return load_model(ref).eval()


def benchmark(
    models: list[str],
    variants: list[str],
    batch_sizes: list[int],
    threads: int,
    min_time: float,
) -> dict:
    """Run every (model, variant, batch) cell; returns the JSON-able result."""
    torch.set_num_threads(threads)
    peak_before = sgemm_peak(threads)
    print(f"fp32 sgemm peak ({threads} threads): {peak_before / 1e9:.1f} GFLOP/s", flush=True)
    rows, peaks = [], [peak_before]
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            peaks.append(sgemm_peak(threads))  # why: load drifts; the machine's peak is the max
            torch.manual_seed(0)
            model = build(name)
            macs = count_multiply_adds(model)
            params = sum(p.numel() for p in model.parameters())
            for variant in variants:
                row = {"model": name, "variant": variant, "macs": macs, "batches": {}}
                row["params"] = params
                for batch in batch_sizes:
                    try:
                        t0 = time.perf_counter()
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            reference = _no_grad(model, _input(model, batch))
                            run = make_runner(model, variant, batch, threads, Path(tmp))
                            diff = max_abs_diff(run(), reference)
                            seconds = median_seconds(run, min_time)
                        setup = time.perf_counter() - t0
                        row["batches"][str(batch)] = {
                            "seconds": seconds,
                            "images_per_s": batch / seconds,
                            "wall_incl_setup_s": setup,
                            "max_abs_diff": diff,
                        }
                    except Exception as e:  # a variant that fails is reported, not fatal
                        row["batches"][str(batch)] = {"error": f"{type(e).__name__}: {e}"[:200]}
                    finally:
                        torch._dynamo.reset() if variant == "compile" else None
                rows.append(row)
                print(_row_text(row, max(peaks), batch_sizes), flush=True)
            del model
    peak_after = sgemm_peak(threads)
    peaks.append(peak_after)
    peak = max(peaks)
    for row in rows:
        for cell in row["batches"].values():
            if "images_per_s" in cell:
                cell["fraction_of_peak"] = 2 * row["macs"] * cell["images_per_s"] / peak
    return {
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "threads": threads,
            "torch": torch.__version__,
            "onnxruntime": _ort_version(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "peak_flops": peak,
        "peak_flops_before": peak_before,
        "peak_flops_after": peak_after,
        "peak_flops_all": peaks,
        "rows": rows,
    }


def _row_text(row: dict, peak: float, batch_sizes: list[int]) -> str:
    parts = [f"{row['model']:<20} {row['variant']:<14}"]
    for b in batch_sizes:
        cell = row["batches"].get(str(b), {})
        if "images_per_s" in cell:
            frac = 2 * row["macs"] * cell["images_per_s"] / peak
            parts.append(
                f"b{b}: {cell['images_per_s']:9.1f} img/s {100 * frac:5.1f}% |diff| {_parity(cell)}"
            )
        else:
            parts.append(f"b{b}: {cell.get('error', '-')[:60]}")
    return "  ".join(parts)


def markdown(result: dict, batch_sizes: list[int]) -> str:
    """The result as a Markdown table (images/s and % of the measured peak)."""
    head = "| model | params | GMAC/img | variant | " + " | ".join(
        f"b{b} img/s | b{b} % peak | b{b} max abs diff" for b in batch_sizes
    )
    lines = [head + " |", "|---|---|---|---|" + "---|---|---|" * len(batch_sizes)]
    for row in result["rows"]:
        params = f"{row['params'] / 1e6:.2f}M" if "params" in row else "-"
        cells = [row["model"], params, f"{row['macs'] / 1e9:.3f}", row["variant"]]
        for b in batch_sizes:
            c = row["batches"].get(str(b), {})
            if "images_per_s" in c:
                cells += [
                    f"{c['images_per_s']:.1f}",
                    f"{100 * c['fraction_of_peak']:.1f}%",
                    _parity(c),
                ]
            else:
                cells += ["error", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parity(cell: dict) -> str:
    """A cell's max |diff| from the eager model, marked WRONG above ``PARITY_TOLERANCE``."""
    diff = cell.get("max_abs_diff")
    if diff is None:
        return "-"
    return f"{diff:.1e}" + ("" if diff <= PARITY_TOLERANCE else " WRONG")  # NaN is WRONG


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _ort_version() -> str | None:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="intra-op threads (default: cores)"
    )
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per cell (median)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    models = args.models or [m for m in list_models() if m != "tiny"]
    unknown = {
        m for m in models if m not in list_models() and ":" not in m and not Path(m).exists()
    }
    if unknown:
        print(
            f"unknown model(s): {sorted(unknown)}; available: {list_models()}, NAME:PRETRAINED "
            "or a weights file",
            file=sys.stderr,
        )
        return 2
    print(f"load average before: {os.getloadavg()}", flush=True)
    result = benchmark(models, args.variants, args.batch_sizes, args.threads, args.min_time)
    print()
    all_peaks = ", ".join(f"{p / 1e9:.1f}" for p in result["peak_flops_all"])
    print(
        f"peak fp32 sgemm: {result['peak_flops'] / 1e9:.1f} GFLOP/s (max of {all_peaks}), "
        f"{args.threads} threads, "
        f"{result['machine']['cpu']}; load average after: {os.getloadavg()}"
    )
    print(markdown(result, args.batch_sizes))
    if args.json:
        from facenet.utils import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
