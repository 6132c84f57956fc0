"""An LFW-style verification protocol on held-out people (``scripts/split_people.py``), for
``facenet eval`` and training validation.

Collections rarely name photos ``Name_NNNN`` as LFW does (CelebA-wild uses CelebA file numbers);
this writes, under OUT:
- ``<id>/<id>_NNNN.png``: links to the aligned crops of every held-out identity (``facenet align``
  output), numbered in file-name order, and ``align_config.json`` copied from the aligned folder
  so that ``facenet eval`` knows their framing;
- ``pairs.txt``: 10 person-disjoint folds (each identity in one fold), each with ``--pairs``
  same-person and as many different-person pairs drawn with ``--seed`` from its own people.

    python scripts/held_out_pairs.py aligned/celeba_box160 configs/splits/celeba_wild_test.txt \\
        aligned/celeba_test
    facenet eval --model MODEL --data aligned/celeba_test --pairs aligned/celeba_test/pairs.txt
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facenet.data.folder import read_people_list
from facenet.data.images import IMAGE_EXTENSIONS


def person_disjoint_pairs(
    counts: dict[str, int], folds: int, per_fold: int, seed: int
) -> list[list[tuple]]:
    """Per fold, ``per_fold`` same pairs ``(name, i, j)`` then ``per_fold`` different pairs
    ``(name1, i, name2, j)`` (1-based image numbers), among that fold's people only.

    People are dealt to folds round-robin in a seeded random order; same pairs are drawn
    without repetition (as many as a fold has, if fewer), different pairs likewise.
    """
    rng = np.random.default_rng(seed)
    people = sorted(p for p, n in counts.items() if n >= 1)
    order = [people[i] for i in rng.permutation(len(people))]
    out = []
    for f in range(folds):
        mine = sorted(order[f::folds])
        same = [
            (p, i, j) for p in mine for i, j in itertools.combinations(range(1, counts[p] + 1), 2)
        ]
        diff = [
            (a, i, b, j)
            for a, b in itertools.combinations(mine, 2)
            for i in range(1, counts[a] + 1)
            for j in range(1, counts[b] + 1)
        ]
        pick_same = rng.choice(len(same), size=min(per_fold, len(same)), replace=False)
        pick_diff = rng.choice(len(diff), size=min(per_fold, len(diff)), replace=False)
        out.append([same[k] for k in sorted(pick_same)] + [diff[k] for k in sorted(pick_diff)])
    return out


def write_pairs(path: Path, folds: Sequence[Sequence[tuple]], per_fold: int) -> None:
    lines = [f"{len(folds)}\t{per_fold}"]
    for fold in folds:
        lines += ["\t".join(str(x) for x in pair) for pair in fold]
    path.write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("aligned", type=Path, help="facenet align output of the collection")
    ap.add_argument("people", type=Path, help="people list of the held-out identities")
    ap.add_argument("out", type=Path)
    ap.add_argument("--folds", type=int, default=10, help="at most this many (2 people a fold)")
    ap.add_argument(
        "--pairs", type=int, default=150, help="same (and different) pairs per fold, at most"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    counts = {}
    for person in read_people_list(args.people):
        photos = sorted(
            f for f in (args.aligned / person).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS
        )
        dest = args.out / person
        dest.mkdir(parents=True, exist_ok=True)
        for k, photo in enumerate(photos, start=1):
            link = dest / f"{person}_{k:04d}{photo.suffix}"
            if not link.is_symlink():
                os.symlink(os.path.relpath(photo.resolve(), dest), link)
        counts[person] = len(photos)
    for name in ("align_config.json",):
        if (args.aligned / name).is_file():
            shutil.copyfile(args.aligned / name, args.out / name)
    # why: a fold needs two people for its different pairs, and LFW's format one pair count for
    # every fold: a small held-out group gets fewer folds and as many pairs as its smallest fold has
    n_folds = min(args.folds, len(counts) // 2)
    if n_folds < 2:
        raise SystemExit(
            f"{args.people}: {len(counts)} held-out people; person-disjoint folds need at least 4"
        )
    folds = person_disjoint_pairs(counts, n_folds, args.pairs, args.seed)
    per_fold = min(min(sum(len(p) == 3 for p in f), sum(len(p) == 4 for p in f)) for f in folds)
    if per_fold < 1:
        raise SystemExit(f"{args.people}: a fold has no same-person pair (one photo per person?)")
    if per_fold < args.pairs:
        folds = person_disjoint_pairs(counts, n_folds, per_fold, args.seed)
    write_pairs(args.out / "pairs.txt", folds, per_fold)
    print(f"{args.out / 'pairs.txt'}: {len(counts)} people, {n_folds} folds x "
          f"{per_fold} same + {per_fold} different pairs")  # fmt: skip


if __name__ == "__main__":
    main()
