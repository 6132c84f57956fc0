"""Pairs accuracy of several checkpoints alone and as an ensemble (mean squared distance, i.e. their
unit embeddings concatenated and scaled by 1/sqrt(n)): how much of one run's error is its own.

    python scripts/ensemble_pairs.py runs/cpu/best.pt runs/cpu_2h/best.pt \
        --data aligned/lfw_box160 --pairs ../shared/data/lfw/pairsDevTest.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facenet.data.lfw import read_pairs
from facenet.eval.distances import squared_l2
from facenet.eval.protocol import embed_pairs
from facenet.eval.report import LFW_TABLE_HEAD, lfw_table_row
from facenet.eval.verification import evaluate_verification
from facenet.models.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoints or model references")
    parser.add_argument("--data", required=True, help="folder of aligned faces")
    parser.add_argument("--pairs", required=True, help="LFW pairs file")
    parser.add_argument("--align", default="box", choices=["box", "similarity", "center"])
    parser.add_argument("--cache", default=str(Path.home() / ".cache/facenet/embeddings"))
    args = parser.parse_args()

    pairs = read_pairs(args.pairs)
    distances = []
    print(LFW_TABLE_HEAD)
    for ref in args.checkpoints:
        model = load_model(ref)
        left, right = embed_pairs(model, pairs, args.data, align=args.align, cache_dir=args.cache)
        d = squared_l2(left, right)
        distances.append(d)
        print(lfw_table_row(ref, evaluate_verification(d, pairs.issame, pairs.folds)))
    d = np.mean(distances, axis=0)
    r = evaluate_verification(d, pairs.issame, pairs.folds)
    print(lfw_table_row(f"ensemble of {len(distances)}", r, "mean squared distance"))


if __name__ == "__main__":
    main()
