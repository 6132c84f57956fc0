"""Small shared helpers: atomic file writes, data-folder lookup, seeded generators."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
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
