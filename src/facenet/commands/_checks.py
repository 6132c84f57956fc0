"""Argument checks at the CLI edge: ``type=`` functions for argparse.

Each returns the parsed value or raises ``argparse.ArgumentTypeError`` with a message that says
what is wrong with the value; argparse prefixes the option's name, so the user reads one line such
as ``facenet eval: error: argument --batch-size: must be at least 1 (got 0)``. Nothing here
touches the file system beyond ``stat`` calls.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{'an integer' if kind is int else 'a number'} expected (got {text!r})"
        ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text!r})")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= ``low``."""

    def check(text: str) -> int:
        value = int(_number(text, int))
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low} (got {value})")
        return value

    check.__name__ = f"integer >= {low}"
    return check


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def float_in(
    low: float, high: float, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """A finite number in the interval, ends open or closed as given."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(text: str) -> float:
        value = float(_number(text, float))
        if (
            value < low
            or value > high
            or (low_open and value == low)
            or (high_open and value == high)
        ):
            raise argparse.ArgumentTypeError(f"must be in {shown} (got {text})")
        return value

    check.__name__ = f"number in {shown}"
    return check


# why: squared L2 between unit vectors lies in [0, 4]
squared_distance = float_in(0.0, 4.0)
# a false-accept rate: a probability strictly between 0 and 1
rate = float_in(0.0, 1.0, low_open=True, high_open=True)
positive_float = float_in(0.0, math.inf, low_open=True)
non_negative_float = float_in(0.0, math.inf)


def non_empty(text: str) -> str:
    """A value that must say something (an empty one would silently mean "off")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty")
    return text


def existing_file(text: str) -> Path:
    """A path to an existing file (not a folder)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable")
    return path


def existing_dir(text: str) -> Path:
    """A path to an existing folder."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, not a folder")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return path


def _creatable_parent(text: str, path: Path) -> None:
    """Raise unless every existing ancestor of ``path`` is a folder (so it can be created)."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: cannot be created, {parent} is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"{text}: cannot write in {parent}")
            return


def output_file(text: str) -> Path:
    """A file to write: not a folder, not a symlink, its folder creatable and writable.

    why: the write is atomic (temporary file + rename), so an existing regular file the user
    named is replaced whole; a symlink is refused rather than replaced or followed.
    """
    path = Path(text)
    if path.is_symlink():
        raise argparse.ArgumentTypeError(
            f"{text}: is a symbolic link; refusing to write through it"
        )
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name")
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text}: names a folder; give a file name")
    _creatable_parent(text, path)
    return path


def output_dir(text: str) -> Path:
    """A folder to write into: not a file, creatable and writable."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{text}: folder not writable")
        return path
    _creatable_parent(text, path)
    return path
