"""Embeddings of the same photos through every embedding path, saved to compare two checkouts.

    # in the old checkout, then in the new one
    PYTHONPATH=OLD/src python scripts/embedding_parity.py save old.npz
    python scripts/embedding_parity.py save new.npz
    python scripts/embedding_parity.py compare old.npz new.npz

Paths: the applications' ``Embedder`` (MTCNN box and similarity crops, and ``crop="none"``) and
training validation's ``embed_images`` (with and without flips), for the two shipped models, on
100 LFW photos (every 130th deep-funneled photo). Only APIs both sides have are used. For
``facenet eval`` compare its embedding caches instead (``--cache DIR`` in each checkout).
"""

from __future__ import annotations

import argparse
import glob
import os

import cv2
import numpy as np
import torch

MODELS = ("resnet_cpu:lfw-celeba", "inception_resnet_v1:casia-webface")


def save(out: str, data: str) -> None:
    # why: imported here so `compare` runs without loading either checkout
    from facenet.apps.embedder import Embedder
    from facenet.data.images import load_image
    from facenet.models.loading import load_model
    from facenet.train.validate import embed_images

    torch.set_num_threads(1)
    paths = sorted(glob.glob(os.path.join(data, "lfw", "lfw-deepfunneled", "*", "*.jpg")))[::130][
        :100
    ]
    result = {}
    for ref in MODELS:
        model = load_model(ref)
        tag = ref.split(":")[0]
        for crop in ("box", "similarity", "none"):
            e = Embedder(model, detector=None if crop == "none" else "mtcnn", crop=crop)
            nan = np.full(e.embedding_dim, np.nan, np.float32)
            rows = [r.faces[0].embedding if r.faces else nan for r in e.embed_files(paths, True)]
            result[f"{tag}_{crop}"] = np.stack(rows)
        h, w = model.spec.input_size
        side = round(h * 8 / 7)  # cached faces: the input size plus room for random crops
        cached = np.stack(
            [
                cv2.resize(
                    load_image(p)[60:190, 60:190], (side, side), interpolation=cv2.INTER_AREA
                )
                for p in paths
            ]
        )
        for flip in (False, True):
            emb = embed_images(model, cached, (h, w), torch.device("cpu"), 64, flip)
            result[f"{tag}_validate_flip{int(flip)}"] = emb.numpy()
    np.savez(out, **result)
    print(f"saved {out}: {len(paths)} photos, {len(result)} paths")


def compare(a: str, b: str) -> None:
    x, y = np.load(a), np.load(b)
    print("| path | photos | max abs difference |\n|---|---|---|")
    for key in x.files:
        ok = np.isfinite(x[key]).all(1) & np.isfinite(y[key]).all(1)
        print(f"| {key} | {int(ok.sum())} | {np.abs(x[key][ok] - y[key][ok]).max():.3g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("out")
    s.add_argument("--data", default=os.environ.get("FACENET_DATA", "../shared/data"))
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = parser.parse_args()
    if args.cmd == "save":
        save(args.out, args.data)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
