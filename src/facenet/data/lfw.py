"""LFW protocol files: ``pairs*.txt`` and ``people*.txt``, with their fold structure.

Pairs files (``pairs.txt``, ``pairsDevTrain.txt``, ``pairsDevTest.txt`` and any benchmark shipped
in the same format) hold one pair per line, tab- or space-separated:

- ``Name  i  j``          a *same* pair: images i and j of one person;
- ``Name1 i Name2 j``     a *different* pair.

The header decides the folds:

- ``K M`` (View 2, ``10 300``): K consecutive folds of 2M pairs, each M same then M different
  pairs, exactly as the file lists them. LFW built these folds from ``people.txt``, so they are
  person-disjoint.
- ``M`` (View 1): M same then M different pairs and no folds. We make a seeded 10-fold split that
  is **person-disjoint**: pairs are grouped into connected components of the graph whose nodes are
  people and whose edges are pairs, and whole components are dealt to folds (largest first, each
  to the fold where it keeps same and different pairs most balanced, ties broken by a seeded
  shuffle). Whole components never straddle folds, so no person appears in two folds; folds are
  as even as the components allow (LFW's View 1 files split into exactly equal folds of 50/50
  same/different pairs). ``Pairs.person_disjoint`` re-checks the property from the pairs.

People files (``people.txt``, ``peopleDevTrain.txt``, ``peopleDevTest.txt``) hold ``Name  count``
lines. ``people.txt`` starts with the number of folds, then each fold starts with its number of
people; the Dev files start with the number of people (one set).

Images are found at ``<root>/<Name>/<Name>_<NNNN>.<ext>`` with the extension looked up on disk,
so aligned copies written as ``.png`` work as well as the original ``.jpg``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# why: the order extensions are tried in; LFW ships .jpg, aligned copies are often .png.
SEARCH_EXTENSIONS = (".jpg", ".png", ".jpeg", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
DEFAULT_FOLDS = 10  # why: the LFW protocol's 10-fold cross-validation
DEFAULT_SEED = 0


class ProtocolFileError(ValueError):
    """A malformed protocol file; ``str(e)`` names the file, the line number and the problem."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


def image_stem(name: str, index: int) -> str:
    """``Name/Name_NNNN`` (no extension): LFW's relative name for image ``index`` of ``name``."""
    return f"{name}/{name}_{index:04d}"


@dataclass(frozen=True)
class Pairs:
    """A parsed pairs file. N = number of pairs.

    Attributes:
        path: the file read.
        left, right: (N,) relative image names ``Name/Name_NNNN`` without extension.
        issame: (N,) bool, True for same-person pairs.
        folds: (N,) int fold id in ``0..n_folds-1``.
        n_folds: number of folds.
        fold_source: ``"file"`` (the header's K folds) or ``"person-disjoint-random"`` (View 1).
        seed: seed of the random split (None when the folds come from the file).
    """

    path: str
    left: tuple[str, ...]
    right: tuple[str, ...]
    issame: np.ndarray
    folds: np.ndarray
    n_folds: int
    fold_source: str
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.left)

    @property
    def left_people(self) -> tuple[str, ...]:
        return tuple(s.split("/", 1)[0] for s in self.left)

    @property
    def right_people(self) -> tuple[str, ...]:
        return tuple(s.split("/", 1)[0] for s in self.right)

    @property
    def person_disjoint(self) -> bool:
        """True when no person appears in pairs of two different folds."""
        return _people_fold_conflicts(self.left_people, self.right_people, self.folds) == 0

    def stems(self) -> list[str]:
        """Every image the file names, once each, in first-appearance order."""
        return list(
            dict.fromkeys(s for pair in zip(self.left, self.right, strict=True) for s in pair)
        )

    def resolve(self, root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
        """(left paths, right paths) under ``root``; raises ``FileNotFoundError`` naming the first
        missing image."""
        resolver = ImageResolver(root)
        return [resolver(s) for s in self.left], [resolver(s) for s in self.right]


@dataclass(frozen=True)
class People:
    """A parsed people file. P = number of people.

    Attributes:
        path: the file read.
        names: (P,) person names.
        counts: (P,) int number of images of each person.
        folds: (P,) int fold (set) id of each person.
        n_folds: number of folds (1 for the Dev files).
    """

    path: str
    names: tuple[str, ...]
    counts: np.ndarray
    folds: np.ndarray
    n_folds: int

    def __len__(self) -> int:
        return len(self.names)

    def fold_names(self, fold: int) -> list[str]:
        return [n for n, f in zip(self.names, self.folds, strict=True) if f == fold]

    def stems(self, fold: int | None = None) -> list[str]:
        """``Name/Name_NNNN`` of every image (of one fold if ``fold`` is given)."""
        return [
            image_stem(n, i)
            for n, c, f in zip(self.names, self.counts, self.folds, strict=True)
            if fold is None or f == fold
            for i in range(1, int(c) + 1)
        ]


class ImageResolver:
    """Maps ``Name/Name_NNNN`` to the file on disk, trying ``SEARCH_EXTENSIONS`` in order.

    Each identity folder is listed once, so resolving all 13,233 LFW names costs ~5,749 listings.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: image folder not found")
        self._listing: dict[str, dict[str, str]] = {}

    def _files(self, name: str) -> dict[str, str]:
        if name not in self._listing:
            folder = self.root / name
            files: dict[str, str] = {}
            if folder.is_dir():
                for entry in os.listdir(folder):
                    stem, ext = os.path.splitext(entry)
                    if ext.lower() in SEARCH_EXTENSIONS:
                        # why: keep the first extension in SEARCH_EXTENSIONS order on a clash
                        old = files.get(stem)
                        rank = SEARCH_EXTENSIONS.index(ext.lower())
                        if old is None or rank < SEARCH_EXTENSIONS.index(
                            os.path.splitext(old)[1].lower()
                        ):
                            files[stem] = entry
            self._listing[name] = files
        return self._listing[name]

    def __call__(self, stem: str) -> Path:
        name, _, base = stem.partition("/")
        entry = self._files(name).get(base)
        if entry is None:
            raise FileNotFoundError(
                f"{self.root / stem}.jpg: image not found (also tried "
                f"{', '.join(SEARCH_EXTENSIONS[1:])})"
            )
        return self.root / name / entry


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) for every non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtocolFileError(path, None, "file not found") from None
    except UnicodeDecodeError as e:
        raise ProtocolFileError(path, None, f"not a UTF-8 text file ({e})") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            out.append((number, fields))
    if not out:
        raise ProtocolFileError(path, None, "empty file")
    return out


def _int_field(path: Path, line: int, value: str, what: str, minimum: int = 1) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ProtocolFileError(path, line, f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ProtocolFileError(path, line, f"{what} must be >= {minimum}, got {number}")
    return number


def read_pairs(
    path: str | os.PathLike, n_folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
) -> Pairs:
    """Parse an LFW-format pairs file.

    Args:
        path: ``pairs.txt``-format file.
        n_folds: folds for a one-number (View 1) header; ignored when the header gives folds.
        seed: seed of the View 1 person-disjoint random split.

    Returns:
        ``Pairs`` with (N,) ``left``, ``right``, ``issame``, ``folds``.

    Raises:
        ProtocolFileError: malformed header or line (file and line number in the message), or a
            count that disagrees with the header.
    """
    path = Path(path)
    lines = _read_lines(path)
    header_line, header = lines[0]
    body = lines[1:]
    if len(header) == 2:
        k = _int_field(path, header_line, header[0], "number of folds")
        m = _int_field(path, header_line, header[1], "pairs per class per fold")
    elif len(header) == 1:
        k, m = 1, _int_field(path, header_line, header[0], "pairs per class")
    else:
        raise ProtocolFileError(
            path,
            header_line,
            f"header must be 'FOLDS PAIRS_PER_CLASS' or 'PAIRS_PER_CLASS', got {' '.join(header)!r}",
        )
    left, right, same = [], [], []
    for number, fields in body:
        if len(fields) == 3:
            name, i, j = fields
            left.append(image_stem(name, _int_field(path, number, i, "image number")))
            right.append(image_stem(name, _int_field(path, number, j, "image number")))
            same.append(True)
        elif len(fields) == 4:
            n1, i, n2, j = fields
            left.append(image_stem(n1, _int_field(path, number, i, "image number")))
            right.append(image_stem(n2, _int_field(path, number, j, "image number")))
            same.append(False)
        else:
            raise ProtocolFileError(
                path,
                number,
                f"expected 'NAME I J' (same) or 'NAME1 I NAME2 J' (different), "
                f"got {len(fields)} fields: {' '.join(fields)!r}",
            )
    expected = 2 * k * m
    if len(same) != expected:
        raise ProtocolFileError(
            path,
            None,
            f"header promises {k} x 2 x {m} = {expected} pairs, the file has {len(same)}",
        )
    issame = np.asarray(same, dtype=bool)
    # why: every block of 2m lines must be m same then m different pairs, as in LFW's files.
    for f in range(k):
        block = issame[f * 2 * m : (f + 1) * 2 * m]
        if not (block[:m].all() and not block[m:].any()):
            bad = f * 2 * m + int(np.flatnonzero(block != np.repeat([True, False], m))[0])
            line = body[bad][0]
            raise ProtocolFileError(
                path,
                line,
                f"fold {f + 1} must list {m} same pairs then {m} different pairs; this line "
                f"breaks that order",
            )
    if k > 1:
        folds = np.repeat(np.arange(k), 2 * m)
        return Pairs(str(path), tuple(left), tuple(right), issame, folds, k, "file", None)
    folds = person_disjoint_folds(
        [s.split("/", 1)[0] for s in left], [s.split("/", 1)[0] for s in right], n_folds, seed
    )
    return Pairs(
        str(path),
        tuple(left),
        tuple(right),
        issame,
        folds,
        n_folds,
        "person-disjoint-random",
        seed,
    )


def person_disjoint_folds(
    left_people: Sequence[str], right_people: Sequence[str], n_folds: int, seed: int = 0
) -> np.ndarray:
    """Split N pairs into ``n_folds`` folds so that no person appears in two folds.

    Pairs are grouped into connected components (people = nodes, pairs = edges); components are
    dealt largest first to the fold that stays most balanced (the fold minimising the larger of
    its same-pair and different-pair counts relative to an even share); the seed shuffles
    components before the (stable) sort by size, so ties are broken at random but reproducibly.

    Returns:
        (N,) int fold ids in ``0..n_folds-1``.
    """
    n = len(left_people)
    if n_folds < 2 or n_folds > n:
        raise ValueError(f"need 2 <= n_folds <= number of pairs ({n}), got {n_folds}")
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(left_people, right_people, strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    components: dict[str, list[int]] = {}
    for idx, a in enumerate(left_people):
        components.setdefault(find(a), []).append(idx)
    groups = list(components.values())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    groups = sorted((groups[i] for i in order), key=len, reverse=True)  # stable: seeded ties
    folds = np.empty(n, dtype=np.int64)
    # (n_folds, 2) pairs per fold: [same-looking, different-looking] = [left == right, else]
    counts = np.zeros((n_folds, 2), dtype=np.int64)
    same = np.array([a == b for a, b in zip(left_people, right_people, strict=True)])
    target = np.maximum(np.array([same.sum(), (~same).sum()]) / n_folds, 1.0)
    for g in groups:
        add = np.array([same[g].sum(), (~same[g]).sum()])
        # why: keep both classes balanced: the fold whose fuller class stays emptiest wins
        load = ((counts + add) / target).max(axis=1)
        f = int(np.argmin(load))
        folds[g] = f
        counts[f] += add
    return folds


def _people_fold_conflicts(
    left_people: Sequence[str], right_people: Sequence[str], folds: np.ndarray
) -> int:
    """Number of people who appear in pairs of more than one fold."""
    seen: dict[str, set[int]] = {}
    for a, b, f in zip(left_people, right_people, folds.tolist(), strict=True):
        seen.setdefault(a, set()).add(f)
        seen.setdefault(b, set()).add(f)
    return sum(len(v) > 1 for v in seen.values())


def read_people(path: str | os.PathLike) -> People:
    """Parse an LFW-format people file (``people.txt`` with folds, or a Dev file without).

    Returns:
        ``People`` with (P,) ``names``, ``counts``, ``folds``.

    Raises:
        ProtocolFileError: malformed line or counts that disagree with the headers.
    """
    path = Path(path)
    lines = _read_lines(path)
    first_line, first = lines[0]
    if len(first) != 1:
        raise ProtocolFileError(
            path, first_line, f"first line must be one integer, got {' '.join(first)!r}"
        )
    first_n = _int_field(path, first_line, first[0], "count")
    # why: people.txt = n_folds, then per fold a count line; the Dev files = count, then names.
    multi_fold = len(lines) > 1 and len(lines[1][1]) == 1
    names: list[str] = []
    counts: list[int] = []
    folds: list[int] = []
    pos = 1

    def read_block(n_people: int, fold: int) -> None:
        nonlocal pos
        for _ in range(n_people):
            if pos >= len(lines):
                raise ProtocolFileError(
                    path, None, f"fold {fold + 1} promises {n_people} people; file ended early"
                )
            number, fields = lines[pos]
            if len(fields) != 2:
                raise ProtocolFileError(
                    path,
                    number,
                    f"expected 'NAME COUNT', got {len(fields)} fields: {' '.join(fields)!r}",
                )
            names.append(fields[0])
            counts.append(_int_field(path, number, fields[1], "image count"))
            folds.append(fold)
            pos += 1

    if multi_fold:
        n_folds = first_n
        for fold in range(n_folds):
            if pos >= len(lines):
                raise ProtocolFileError(path, None, f"promises {n_folds} folds, has {fold}")
            number, fields = lines[pos]
            if len(fields) != 1:
                raise ProtocolFileError(
                    path, number, f"expected the number of people in fold {fold + 1}"
                )
            n_people = _int_field(path, number, fields[0], "number of people")
            pos += 1
            read_block(n_people, fold)
    else:
        n_folds = 1
        read_block(first_n, 0)
    if pos != len(lines):
        raise ProtocolFileError(
            path, lines[pos][0], "extra lines after the counts the headers promise"
        )
    return People(
        str(path),
        tuple(names),
        np.asarray(counts, dtype=np.int64),
        np.asarray(folds, dtype=np.int64),
        n_folds,
    )
