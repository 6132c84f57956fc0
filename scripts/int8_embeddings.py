"""128-byte faces on LFW: float vs int8 embeddings (``facenet.quantize.Int8Codec``), same pairs.

The codec is calibrated on embeddings of photos of LFW's DevTrain people (``peopleDevTrain.txt``,
the first ``--calibration`` photos in name order), never of a person in the evaluated pairs file;
the pairs are then scored with float embeddings and with their int8 round trip, same folds, same
protocol (``facenet.eval.protocol``).

    python scripts/int8_embeddings.py [--model resnet_cpu:lfw-celeba] \\
        [--pairs ../shared/data/lfw/pairsDevTest.txt] [--align box] [--calibration 1000]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from facenet.data.lfw import read_pairs, read_people
from facenet.eval.alignment import make_aligner
from facenet.eval.embedding import embed_paths
from facenet.eval.protocol import embed_pairs, verify_embeddings
from facenet.models.loading import load_model
from facenet.quantize import Int8Codec

ROOT = Path(__file__).resolve().parents[1]
LFW = Path(os.environ.get("FACENET_DATA", ROOT.parent / "shared" / "data")) / "lfw"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet_cpu:lfw-celeba")
    ap.add_argument("--data", type=Path, default=LFW / "lfw-deepfunneled")
    ap.add_argument("--pairs", type=Path, default=LFW / "pairsDevTest.txt")
    ap.add_argument("--people", type=Path, default=LFW / "peopleDevTrain.txt")
    ap.add_argument("--align", default="box", choices=["center", "box", "similarity"])
    ap.add_argument("--detector", default="mtcnn", help="for --align box/similarity")
    ap.add_argument("--calibration", type=int, default=1000, help="calibration photos")
    ap.add_argument("--cache", default=None, help="embedding cache folder (default: none)")
    args = ap.parse_args(argv)

    model = load_model(args.model)
    pairs = read_pairs(args.pairs)
    evaluated = {s.split("/")[0] for s in pairs.stems()}
    people = [p for p in read_people(args.people).names if p not in evaluated]
    photos = sorted(q for p in people for q in (args.data / p).glob("*.jpg"))[: args.calibration]
    kw = {"align": args.align, "cache_dir": args.cache}
    if args.align != "center":  # raw LFW photos: detect and crop on the fly, as facenet eval does
        aligner, name = make_aligner(args.detector, args.align, model)
        kw |= {"aligner": aligner, "aligner_name": name}
    codec = Int8Codec.calibrate(embed_paths(model, photos, **kw))
    left, right = embed_pairs(model, pairs, args.data, **kw)
    rows = []
    for name, (a, b) in {
        "float32": (left, right),
        "int8 (128 B/face at 128-d)": (codec.roundtrip(left), codec.roundtrip(right)),
    }.items():
        _, rep = verify_embeddings(a, b, pairs.issame, pairs.folds)
        rows.append((name, rep))
    dim = left.shape[1]
    print(f"{args.model}, {args.pairs.name}, --align {args.align}, {len(pairs.issame)} pairs, "
          f"codec calibrated on {len(photos)} DevTrain photos of people not in the pairs\n")  # fmt: skip
    print("| embeddings | bytes/face | accuracy | VAL @ FAR | AUC |")
    print("|---|---:|---|---|---|")
    for name, rep in rows:
        size = dim if name.startswith("int8") else 4 * dim
        print(f"| {name} | {size} | {100 * rep.accuracy:.2f}% ± {100 * rep.accuracy_std:.2f} | "
              f"{100 * rep.val:.2f}% @ {rep.far:.1e} | {rep.auc:.4f} |")  # fmt: skip
    drop = 100 * (rows[0][1].accuracy - rows[1][1].accuracy)
    print(f"\naccuracy drop (float - int8): {drop:+.2f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
