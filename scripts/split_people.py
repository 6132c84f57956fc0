"""Split a folder-per-identity photo collection into held-out and training people.

``--test`` identities (drawn with ``--seed`` from the sorted folder names) are held out; the rest
are for training. Writes ``<name>_test.txt`` and ``<name>_train.txt``: LFW-style people lists
(a count line, then ``name<TAB>images``), which ``data.exclude_people`` reads. The CelebA-wild
split of the fine-tuning and distillation runs (49 of 249 identities held out):

    python scripts/split_people.py ../shared/data/celeba-wild/images configs/splits --name celeba_wild
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facenet.data.images import IMAGE_EXTENSIONS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", type=Path, help="folder-per-identity images")
    ap.add_argument("out", type=Path, help="folder for NAME_test.txt / NAME_train.txt")
    ap.add_argument("--name", default="people", help="file name prefix (default people)")
    ap.add_argument("--test", type=int, default=49, help="identities held out (default 49)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    people = sorted(p.name for p in args.images.iterdir() if p.is_dir())
    counts = {
        p: sum(1 for f in (args.images / p).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        for p in people
    }
    test = set(np.random.default_rng(args.seed).choice(people, size=args.test, replace=False))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, chosen in (("test", sorted(test)), ("train", [p for p in people if p not in test])):
        lines = [str(len(chosen))] + [f"{p}\t{counts[p]}" for p in chosen]
        path = args.out / f"{args.name}_{name}.txt"
        path.write_text("\n".join(lines) + "\n")
        print(f"{path}: {len(chosen)} identities, {sum(counts[p] for p in chosen)} images")


if __name__ == "__main__":
    main()
