"""Small shared helpers: atomic file writes, data-folder lookup, a two-stage pipeline, seeded
generators."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` via a temporary file in the same folder, fsync, then rename.

    A crash at any moment leaves either the old file or the new one, never a torn mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # why: mkstemp creates 0600 files; give the result the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def immediate_transaction(db: Any) -> Iterator[Any]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on a SQLite connection opened with
    ``isolation_level=None``; ``ROLLBACK`` on any exception (or interrupt) inside the block.

    why: IMMEDIATE takes the write lock up front, so two writing processes serialise instead of
    one failing with "database is locked" halfway through."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of ``e``'s message (its type name when empty), at most ``limit`` chars:
    what a one-line error quotes from a library's multi-line exception."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def prefetched(
    work: Callable[[T], R],
    items: Sequence[T],
    name: str = "facenet-prefetch",
    workers: int = 1,
    pool: Executor | None = None,
) -> Iterator[R]:
    """``work(item)`` for each item, in order, computed ``workers`` items ahead of the caller,
    who uses each result while the next ones are worked on: a two-stage pipeline (e.g. decode
    and detect the next chunks of photos while the network embeds this one; decoding, OpenCV and
    torch release the GIL).

    The work runs in ``pool`` when given (it stays open: its threads may keep state between
    calls), else in a pool of ``workers`` threads of its own. An exception from ``work`` is
    raised where its result is taken. A caller that stops early waits only for the items
    already started; the rest never start.
    """
    workers = max(1, int(workers))
    own = pool is None
    runner = pool if pool is not None else ThreadPoolExecutor(workers, thread_name_prefix=name)
    pending: deque[Future[R]] = deque()
    try:
        pending.extend(runner.submit(work, item) for item in items[:workers])
        for n in range(workers, len(items) + workers):
            result = pending.popleft().result()
            if n < len(items):
                pending.append(runner.submit(work, items[n]))
            yield result
    finally:
        started = [f for f in pending if not f.cancel()]
        wait(started)
        if own:
            runner.shutdown(wait=True)


def open_npz(path: str | os.PathLike) -> Any:
    """``np.load(path, allow_pickle=False)`` of a NumPy ``.npz`` archive (use it in ``with``);
    ``ValueError`` naming ``path`` for any other file, instead of NumPy's advice to load it
    with pickling allowed."""
    import numpy as np

    with open(path, "rb") as f:
        head = f.read(4)
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first local header, or empty zip
        raise ValueError(f"{path}: not a NumPy .npz archive")
    return np.load(path, allow_pickle=False)


def device_problem(name: str) -> str | None:
    """Why torch device ``name`` cannot run a model on this machine, or None."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return "not a device PyTorch knows (cpu, cuda, cuda:1, ...)"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "this machine has no CUDA device PyTorch can use"
    return None


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON ``null``), recursively;
    NumPy scalars and arrays become Python numbers and lists.

    why: ``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which strict JSON parsers
    (browsers, jq, most languages) reject.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # NumPy arrays and scalars
        return json_safe(obj.tolist())
    return obj


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (no NaN/Infinity: see ``json_safe``)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, strict JSON (non-finite numbers as null)."""
    with atomic_write(path, "w") as f:
        f.write(dumps_json(obj))
        f.write("\n")


def default_data_dir() -> Path | None:
    """The face-data folder: ``$FACENET_DATA``, else ``../shared/data`` beside the checkout/cwd."""
    env = os.environ.get("FACENET_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    candidates = [Path.cwd() / "../shared/data"] + [p / "shared/data" for p in here.parents]
    for c in candidates:
        if (c / "lfw").is_dir() or (c / "orl").is_dir():
            return c.resolve()
    return None


class UnsafeOutputError(ValueError):
    """A write that would leave its output folder (through a symlink or ``..``) or replace a
    file the command did not write; ``str(e)`` names the path."""


def inside(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative``, checked so that a write there stays inside ``root``.

    Refused (``UnsafeOutputError``): an absolute ``relative`` or one with ``..``, and an existing
    folder on the way that is a symlink or not a folder (a write would follow the link out of
    ``root``). The final component itself may be anything: callers replace it atomically
    (``os.replace`` swaps a symlink, never follows it) or refuse it as a conflict.
    """
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise UnsafeOutputError(f"{relative}: not a path inside {root}")
    root = Path(root)
    here = root
    for part in rel.parts[:-1]:
        here = here / part
        if here.is_symlink():
            raise UnsafeOutputError(
                f"{here}: is a symbolic link inside the output folder; refusing to write through it"
            )
        if here.exists() and not here.is_dir():
            raise UnsafeOutputError(f"{here}: is a file where the output needs a folder")
    return root / rel


class OwnedFiles:
    """The files a command wrote into an output folder, kept in a manifest inside it.

    A rerun into the same folder replaces exactly those files: ``begin(planned)`` refuses (unless
    ``overwrite``) when a planned path exists and is not one of ours — a user's own file — then
    removes everything the previous run wrote (never following a symlink) and records the new
    plan before anything is written, so a crash leaves no file that a later run would not own.
    """

    def __init__(self, root: str | os.PathLike, manifest: str, command: str) -> None:
        self.root = Path(root)
        self.path = self.root / manifest
        self.command = command
        self.previous: set[str] = set()
        self.previous_dirs: set[str] = set()
        if self.path.is_symlink():
            raise UnsafeOutputError(f"{self.path}: is a symbolic link; refusing to use it")
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                files, dirs = data.get("files", []), data.get("dirs", [])
            except (OSError, ValueError, AttributeError) as e:
                raise UnsafeOutputError(f"{self.path}: unreadable manifest ({e})") from None
            self.previous = {f for f in files if _plain_relative(f)}
            self.previous_dirs = {d for d in dirs if _plain_relative(d)}

    def conflicts(self, planned: list[str]) -> list[str]:
        """Planned paths that exist but were not written by an earlier run of this command."""
        out = []
        for rel in planned:
            p = self.root / rel
            if (p.exists() or p.is_symlink()) and rel not in self.previous:
                out.append(rel)
        return out

    def begin(self, planned: list[str], dirs: list[str], overwrite: bool = False) -> None:
        """Check ``planned`` (file paths relative to the root), clear the previous run's files,
        record the plan. Raises ``UnsafeOutputError`` on a conflict or an unsafe path."""
        for rel in [*planned, *(f"{d}/x" for d in dirs)]:
            inside(self.root, rel)
        clash = self.conflicts(planned)
        if clash and not overwrite:
            shown = ", ".join(str(self.root / c) for c in clash[:3])
            more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
            raise UnsafeOutputError(
                f"{shown}{more}: already exist and were not written by facenet {self.command}; "
                "pass --overwrite to replace them, or choose another output folder"
            )
        for rel in sorted(self.previous | set(clash)):
            p = self.root / rel
            try:
                inside(self.root, rel)
            except UnsafeOutputError:
                continue  # a folder on the way became a link: leave whatever is behind it
            if p.is_symlink() or p.is_file():
                p.unlink()
        # folders an earlier run made, deepest first, if nothing else lives in them now
        for rel in sorted(self.previous_dirs, key=lambda d: -len(Path(d).parts)):
            p = self.root / rel
            if p.is_dir() and not p.is_symlink():
                with contextlib.suppress(OSError):
                    p.rmdir()
        self.previous = set()
        write_json(
            self.path, {"command": self.command, "files": sorted(planned), "dirs": sorted(dirs)}
        )


def _plain_relative(text: Any) -> bool:
    if not isinstance(text, str) or not text:
        return False
    rel = Path(text)
    return not rel.is_absolute() and ".." not in rel.parts
