"""Pairs accuracy of several checkpoints alone and as an ensemble (mean squared distance, i.e. their
unit embeddings concatenated and scaled by 1/sqrt(n)): how much of one run's error is its own.

    python scripts/ensemble_pairs.py runs/cpu/best.pt runs/cpu_2h/best.pt \
        --data aligned/lfw_box160 --pairs ../shared/data/lfw/pairsDevTest.txt

``--project-to 128`` also reports the ensemble brought back to one D-d unit vector: a PCA of the
concatenated embeddings fitted on training people's faces (``--fit-people``, e.g. LFW's
peopleDevTrain.txt: never the people of the pairs), then L2-normalised.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facenet.data.lfw import ImageResolver, Pairs, image_stem, read_pairs, read_people
from facenet.eval.distances import squared_l2
from facenet.eval.embedding import embed_paths
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
    parser.add_argument("--project-to", type=int, default=0, help="PCA dimension (0: off)")
    parser.add_argument("--fit-people", default="", help="people file whose faces fit the PCA")
    parser.add_argument("--fit-max-images", type=int, default=4, help="per person, for the PCA")
    args = parser.parse_args()
    if args.project_to and not args.fit_people:
        parser.error("--project-to needs --fit-people (faces of training people only)")

    pairs = read_pairs(args.pairs)
    fit_paths = _fit_paths(args, pairs) if args.project_to else []
    distances, lefts, rights, fits = [], [], [], []
    print(LFW_TABLE_HEAD)
    for ref in args.checkpoints:
        model = load_model(ref)
        left, right = embed_pairs(model, pairs, args.data, align=args.align, cache_dir=args.cache)
        d = squared_l2(left, right)
        distances.append(d)
        lefts.append(left)
        rights.append(right)
        if fit_paths:
            fits.append(embed_paths(model, fit_paths, align=args.align, cache_dir=args.cache))
        print(lfw_table_row(ref, evaluate_verification(d, pairs.issame, pairs.folds)))
    d = np.mean(distances, axis=0)
    r = evaluate_verification(d, pairs.issame, pairs.folds)
    print(lfw_table_row(f"ensemble of {len(distances)}", r, "mean squared distance"))
    if fit_paths:
        from sklearn.decomposition import PCA

        pca = PCA(args.project_to).fit(np.concatenate(fits, axis=1))

        def project(parts: list[np.ndarray]) -> np.ndarray:
            z = pca.transform(np.concatenate(parts, axis=1))
            return z / np.linalg.norm(z, axis=1, keepdims=True)

        d = squared_l2(project(lefts), project(rights))
        r = evaluate_verification(d, pairs.issame, pairs.folds)
        note = f"PCA to {args.project_to}-d fitted on {len(fit_paths):,} faces of {args.fit_people}"
        print(lfw_table_row(f"ensemble of {len(distances)}, {args.project_to}-d", r, note))


def _fit_paths(args: argparse.Namespace, pairs: Pairs) -> list[Path]:
    """Up to ``--fit-max-images`` aligned faces of each person in ``--fit-people``."""
    people = read_people(args.fit_people)
    held_out = {name.split("/")[0] for name in (*pairs.left, *pairs.right)}
    if held_out & set(people.names):
        raise SystemExit(f"{args.fit_people}: shares people with {args.pairs}; fit elsewhere")
    resolve = ImageResolver(args.data)
    return [
        resolve(image_stem(name, index))
        for name, count in zip(people.names, people.counts, strict=True)
        for index in range(1, min(int(count), args.fit_max_images) + 1)
    ]


if __name__ == "__main__":
    main()
