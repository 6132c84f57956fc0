"""Operating thresholds of a model on LFW View 1 training people (``peopleDevTrain.txt``).

The shipped thresholds of ``inception_resnet_v1:casia-webface`` (``facenet.models.pretrained``)
come from this script. View 1's 1,100 listed different pairs cannot resolve FAR = 1e-3 (one false
accept is already 9e-4), so it uses every same-person pair among those people's images (all of
them) and a seeded uniform sample of different-person pairs (``--impostors``, default 1,000,000:
a FAR resolution of 1e-6, 1,000 false accepts allowed at 1e-3).

- ``accuracy``: the threshold maximising *balanced* accuracy (mean of VAL and 1 - FAR), i.e.
  accuracy at LFW's 50/50 prior, independent of how many impostor pairs were sampled;
- ``far_1e-3``: the largest threshold with FAR <= 1e-3 (``facenet.eval.verification``).

Distances are squared L2 between the L2-normalised embeddings, accept when ``d <= threshold``.
Then, as a held-out check, both thresholds are applied unchanged to ``pairsDevTest.txt`` (View 1
test people, disjoint from the training people).

    python scripts/sandberg_thresholds.py --data aligned/lfw_box160 --align box \\
        --lfw ../shared/data/lfw --cache .cache/eval --json thresholds.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def sample_pairs(
    labels: np.ndarray, n_impostors: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) person ids -> (i, j, issame): every same pair and ``n_impostors`` distinct sampled
    different pairs (i < j), seeded."""
    ii, jj = [], []
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for group in np.split(order, bounds):
        if group.size > 1:
            a, b = np.triu_indices(group.size, k=1)
            ii.append(group[a])
            jj.append(group[b])
    same_i, same_j = np.concatenate(ii), np.concatenate(jj)
    rng = np.random.default_rng(seed)
    n = labels.size
    found: set[int] = set()
    di, dj = [], []
    while len(found) < n_impostors:
        k = 2 * (n_impostors - len(found)) + 1000
        a, b = rng.integers(0, n, k), rng.integers(0, n, k)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        keep = labels[lo] != labels[hi]
        for x, y in zip(lo[keep].tolist(), hi[keep].tolist(), strict=True):
            key = x * n + y
            if key not in found:
                found.add(key)
                di.append(x)
                dj.append(y)
                if len(found) == n_impostors:
                    break
    i = np.concatenate([same_i, np.array(di)])
    j = np.concatenate([same_j, np.array(dj)])
    issame = np.r_[np.ones(same_i.size, bool), np.zeros(len(di), bool)]
    return i, j, issame


def balanced_accuracy_threshold(d: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy) maximising (VAL + 1 - FAR) / 2 over every split."""
    from facenet.eval.verification import roc_curve

    roc = roc_curve(d, issame)
    bal = (roc["tar"] + 1.0 - roc["far"]) / 2.0
    k = int(np.argmax(bal))
    thr = roc["thresholds"]
    t = float((thr[k] + thr[k + 1]) / 2) if 0 < k < thr.size - 1 else float(thr[max(k, 1)])
    return t, float(bal[k])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="inception_resnet_v1:casia-webface")
    parser.add_argument("--data", required=True, help="image folder <Name>/<Name>_NNNN.*")
    parser.add_argument("--align", default="box", choices=["center", "box", "similarity"])
    parser.add_argument("--lfw", required=True, help="LFW folder with the protocol files")
    parser.add_argument("--impostors", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="embedding cache folder (facenet eval's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from facenet.data.lfw import ImageResolver, read_pairs, read_people
    from facenet.eval.embedding import embed_paths
    from facenet.eval.verification import DEFAULT_FAR, far_key, threshold_at_far
    from facenet.models.loading import load_model

    lfw = Path(args.lfw)
    people = read_people(lfw / "peopleDevTrain.txt")
    resolve = ImageResolver(args.data)
    stems = people.stems()
    paths = [resolve(s) for s in stems]
    labels = np.array([people.names.index(s.split("/")[0]) for s in stems])
    model = load_model(args.model)

    def progress(done: int, total: int) -> None:
        print(f"\rembedding {done}/{total}", end="", file=sys.stderr, flush=True)

    emb = embed_paths(
        model, paths, args.batch_size, align=args.align, cache_dir=args.cache, progress=progress
    )
    print(file=sys.stderr)
    i, j, issame = sample_pairs(labels, args.impostors, args.seed)
    d = np.sum((emb[i] - emb[j]) ** 2, axis=1)
    t_acc, bal = balanced_accuracy_threshold(d, issame)
    op = threshold_at_far(d, issame, DEFAULT_FAR)
    thresholds = {"accuracy": round(t_acc, 6), far_key(DEFAULT_FAR): round(op.threshold, 6)}

    pairs = read_pairs(lfw / "pairsDevTest.txt")
    left, right = pairs.resolve(args.data)
    el = embed_paths(model, left, args.batch_size, align=args.align, cache_dir=args.cache)
    er = embed_paths(model, right, args.batch_size, align=args.align, cache_dir=args.cache)
    dt = np.sum((el - er) ** 2, axis=1)
    y = np.asarray(pairs.issame, bool)
    held_out = {
        name: {
            "accuracy": float(np.mean((dt <= t) == y)),
            "val": float(np.mean(dt[y] <= t)),
            "far": float(np.mean(dt[~y] <= t)),
        }
        for name, t in thresholds.items()
    }
    info = {
        "distance": "squared_l2",
        "accept": "distance <= threshold",
        "data": "LFW View 1 peopleDevTrain.txt",
        "images": len(paths),
        "people": len(people),
        "same_pairs": int(issame.sum()),
        "different_pairs": int((~issame).sum()),
        "seed": args.seed,
        "preprocessing": f"align={args.align} ({args.data})",
        "fit": {"balanced_accuracy": bal, "val_at_far": op.val, "far": op.far},
        "pairsDevTest": held_out,
    }
    print(json.dumps({"thresholds": thresholds, "thresholds_info": info}, indent=2))
    if args.json:
        from facenet.utils import write_json

        write_json(args.json, {"thresholds": thresholds, "thresholds_info": info})
    return 0


if __name__ == "__main__":
    sys.exit(main())
