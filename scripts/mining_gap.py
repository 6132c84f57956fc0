"""What the semi-hard rule would do with a trained model's batches: training people vs unseen people.

    python scripts/mining_gap.py runs/cpu/last.pt runs/cpu_wide_gdc/last.pt

For each checkpoint, draws identity-balanced batches (128 identities x 4 faces, no augmentation,
framed as validation frames them) from the training people (LFW View 1 ``peopleDevTrain.txt``
people + CelebA-wild, as ``configs/cpu.yaml`` trains on) and from the held-out people of
``peopleDevTest.txt``, and sorts every anchor-positive pair into:

- *semi-hard*: some negative lies in (d(a, p), d(a, p) + margin) — the pair yields a triplet;
- *satisfied*: every negative is beyond d(a, p) + margin — zero loss, nothing to learn;
- *hard only*: some negative is closer than the positive but none is semi-hard — the rule drops
  a pair that still violates the margin.

A model that satisfies far more pairs of its training people than of unseen people has learnt
its training set rather than faces; a large "hard only" share would call for a fallback negative.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch

from facenet.data.folder import (
    FolderDataset,
    read_people_list,
    scan_roots,
    split_excluded_people,
)
from facenet.eval.embedding import embed_paths
from facenet.losses.distances import pairwise_squared_distances
from facenet.models.loading import load_weights_file


def identity_files(dataset: FolderDataset) -> list[list[str]]:
    """The image paths of each identity of ``dataset``."""
    bounds = np.cumsum(dataset.counts())[:-1]
    return [list(files) for files in np.split(np.asarray(dataset.paths), bounds)]


def pair_kinds(sq_dist: torch.Tensor, labels: torch.Tensor, margin: float) -> np.ndarray:
    """Shares of anchor-positive pairs that are (semi-hard, satisfied, hard only)."""
    same = labels[:, None] == labels[None, :]
    a, p = torch.nonzero(same & ~torch.eye(len(labels), dtype=torch.bool), as_tuple=True)
    d_ap = sq_dist[a, p][:, None]
    d_an = sq_dist[a].masked_fill(same[a], float("inf"))  # (pairs, B): negatives only
    closer = (d_an <= d_ap).any(1)
    band = ((d_an > d_ap) & (d_an < d_ap + margin)).any(1)
    kinds = torch.stack([band, ~closer & ~band, closer & ~band], 1).float().mean(0)
    return kinds.numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="training checkpoints or weights files")
    ap.add_argument("--lfw", default="../shared/data/lfw", help="LFW folder (people lists)")
    ap.add_argument("--lfw-aligned", default="aligned/lfw_box160")
    ap.add_argument("--extra-aligned", nargs="*", default=["aligned/celeba_box160"])
    ap.add_argument("--batches", type=int, default=3, help="batches per checkpoint and side")
    ap.add_argument("--batch", type=int, nargs=2, default=(128, 4), metavar=("P", "K"))
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    p, k = args.batch
    lfw = Path(args.lfw)
    # the training people exactly as `facenet train` with data.split=lfw_view1 selects them
    held_out = split_excluded_people("lfw_view1", lfw)
    roots = [args.lfw_aligned, *args.extra_aligned]
    sides = {
        "training people": identity_files(scan_roots(roots, k, exclude=held_out)),
        "unseen people (peopleDevTest)": identity_files(
            scan_roots([args.lfw_aligned], k, include=read_people_list(lfw / "peopleDevTest.txt"))
        ),
    }
    print(
        f"| checkpoint | people | identities with >= {k} faces | semi-hard | satisfied | "
        "hard only |"
    )
    print("|---|---|---|---|---|---|")
    for ckpt in args.checkpoints:
        model = load_weights_file(ckpt)
        for side, pool in sides.items():
            rng = random.Random(args.seed)  # the same batches for every checkpoint
            shares = []
            for _ in range(args.batches):
                chosen = rng.sample(pool, min(p, len(pool)))
                paths = [f for files in chosen for f in rng.sample(files, k)]
                emb = torch.from_numpy(embed_paths(model, paths, align="box", batch_size=128))
                labels = torch.arange(len(chosen)).repeat_interleave(k)
                shares.append(pair_kinds(pairwise_squared_distances(emb), labels, args.margin))
            s = np.mean(shares, 0)
            print(
                f"| {ckpt} | {side} | {len(pool)} | {s[0]:.1%} | {s[1]:.1%} | {s[2]:.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
