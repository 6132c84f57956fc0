"""Folder-per-identity datasets and person-disjoint splits.

A root holds one folder per identity (``root/<identity>/<image>``), as ``facenet align`` writes.
Several roots are merged; an identity name that appears in two roots is the same person.
Splits are by *person* (never by image) so that test people are never seen in training:
LFW View 1 (``peopleDevTrain.txt`` / ``peopleDevTest.txt``) or the ten folds of ``people.txt``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet.data.images import is_image_file


@dataclass(frozen=True)
class FolderDataset:
    """Image paths with integer identity labels.

    Attributes:
        paths: (N,) image paths, grouped by identity, sorted within.
        labels: (N,) int64 index into ``identities``.
        identities: identity names (folder names), sorted.
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    identities: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> np.ndarray:
        """(num_identities,) images per identity."""
        return np.bincount(self.labels, minlength=len(self.identities))


def scan_roots(
    roots: Sequence[str | os.PathLike],
    min_images_per_identity: int = 1,
    exclude: Iterable[str] = (),
    include: Iterable[str] | None = None,
    max_identities: int = 0,
) -> FolderDataset:
    """Index one or more folder-per-identity roots.

    Args:
        roots: folders whose sub-folders are identities.
        min_images_per_identity: identities with fewer images (after merging roots) are dropped.
        exclude: identity names to drop (e.g. the test people of a split).
        include: if given, keep only these identity names.
        max_identities: keep the first this many identities in sorted order (0 = all).

    Raises:
        FileNotFoundError: a root does not exist.
        ValueError: nothing is left after filtering.
    """
    exclude = set(exclude)
    include = None if include is None else set(include)
    by_identity: dict[str, list[str]] = {}
    for root in roots:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: dataset root is not a folder")
        with os.scandir(root) as it:
            for entry in it:
                if not entry.is_dir() or entry.name.startswith("."):
                    continue
                name = entry.name
                if name in exclude or (include is not None and name not in include):
                    continue
                files = [
                    os.path.join(entry.path, f)
                    for f in os.listdir(entry.path)
                    if not f.startswith(".") and is_image_file(f)
                ]
                by_identity.setdefault(name, []).extend(files)
    names = sorted(n for n, fs in by_identity.items() if len(fs) >= min_images_per_identity)
    if max_identities > 0:
        names = names[:max_identities]
    if not names:
        raise ValueError(
            f"no identity with >= {min_images_per_identity} images in {', '.join(map(str, roots))}"
        )
    paths: list[str] = []
    labels: list[int] = []
    for i, name in enumerate(names):
        files = sorted(by_identity[name])
        paths.extend(files)
        labels.extend([i] * len(files))
    return FolderDataset(tuple(paths), np.asarray(labels, dtype=np.int64), tuple(names))


def read_people_list(path: str | os.PathLike) -> list[str]:
    """Names in an LFW people list (``peopleDevTrain.txt``, ``peopleDevTest.txt``).

    Format: a count line, then ``Name<TAB>num_images`` lines.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a people list file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a people list (not UTF-8 text)") from None
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty people list")
    body = lines[1:] if len(lines[0]) == 1 and lines[0][0].isdigit() else lines
    names = [parts[0] for parts in body if parts]
    return names


def read_people_folds(path: str | os.PathLike) -> list[list[str]]:
    """The person-disjoint folds of LFW's ``people.txt``.

    Format: number of folds, then per fold a count line followed by that many
    ``Name<TAB>num_images`` lines.
    """
    path = Path(path)
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    try:
        num_folds = int(lines[0][0])
        folds: list[list[str]] = []
        i = 1
        for _ in range(num_folds):
            count = int(lines[i][0])
            folds.append([lines[j][0] for j in range(i + 1, i + 1 + count)])
            i += 1 + count
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}: not an LFW people.txt folds file ({e})") from e
    return folds


def split_excluded_people(
    split: str, lfw_dir: str | os.PathLike | None, test_fold: int = 0
) -> set[str]:
    """Names that a person-disjoint split keeps out of training.

    Args:
        split: ``"none"``; ``"lfw_view1"`` (the people of ``peopleDevTest.txt``); or
            ``"lfw_folds"`` (the people of fold ``test_fold`` of ``people.txt``).
        lfw_dir: folder holding the LFW protocol files.
        test_fold: held-out fold for ``"lfw_folds"`` (0-based).
    """
    if split == "none":
        return set()
    if lfw_dir is None:
        raise ValueError(f"split {split!r} needs the LFW protocol files (data.lfw_dir)")
    lfw_dir = Path(lfw_dir)
    if split == "lfw_view1":
        return set(read_people_list(lfw_dir / "peopleDevTest.txt"))
    if split == "lfw_folds":
        folds = read_people_folds(lfw_dir / "people.txt")
        if not 0 <= test_fold < len(folds):
            raise ValueError(f"test_fold {test_fold} out of range 0..{len(folds) - 1}")
        return set(folds[test_fold])
    raise ValueError(f"unknown split {split!r}; choose none, lfw_view1 or lfw_folds")


def pairs_people(path: str | os.PathLike) -> set[str]:
    """Every name that appears in an LFW pairs file (to check training excludes them)."""
    names: set[str] = set()
    lines = Path(path).read_text().splitlines()[1:]
    for ln in lines:
        parts = ln.split()
        if len(parts) == 3:
            names.add(parts[0])
        elif len(parts) == 4:
            names.update((parts[0], parts[2]))
    return names
