"""Align a whole photo collection: folder-per-identity in, the same layout of face crops out.

Parallel (one detector per worker process), resumable (a rerun skips files already done), and
never silent: every input file gets a manifest record with its status and, if it failed, why.

Files written under DST:

- ``<identity>/<name>.png``: the crops (each written atomically);
- ``.align_journal.jsonl``: one JSON record per finished file, appended as the run goes (a crash
  loses at most the torn last line); the basis of resuming;
- ``align_config.json``: the settings, so a rerun with different settings is refused instead of
  mixing two kinds of crop in one folder;
- ``manifest.csv`` and ``manifest.json`` (records + summary), written atomically at the end.

``detections=`` an earlier run's ``manifest.csv`` re-crops from the faces it recorded (box and
landmarks in photo pixels) without running a detector again, e.g. similarity crops from a box run
in seconds per thousand photos instead of minutes.

This module is the driver (walk SRC, plan, run the chunks, summarise); the per-image work is in
``facenet.detect.align_worker``, the files kept in DST (settings, journal, manifest) and the
checks on them in ``facenet.detect.manifest``.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from facenet.data.images import is_image_file
from facenet.detect.align import AlignConfig
from facenet.detect.align_worker import init_worker, process_chunk
from facenet.detect.manifest import (
    CONFIG_FILE,
    JOURNAL,
    MANIFEST_CSV,
    Item,
    check_outputs,
    check_settings,
    journal_pending,
    read_detections,
    read_journal,
    record,
    resume_plan,
    write_manifest,
)
from facenet.utils import write_json


@dataclass
class AlignSummary:
    """What a run did; ``exit_code`` is 0 only when every image got a real detection."""

    total: int  # image files found under SRC (by extension)
    counts: dict[str, int]  # status -> files: ok, fallback, no_face, error
    resumed: int  # files skipped because an earlier run finished them
    seconds: float  # wall time of this run
    processed: int  # files processed in this run
    ignored: int  # files under SRC without an image extension (not processed)
    manifest: str  # path of manifest.csv
    errors: list[dict[str, Any]] = field(default_factory=list)  # first few error records

    @property
    def detection_rate(self) -> float:
        """Share of readable images with a real detection (not the centre-crop fallback)."""
        readable = sum(self.counts.get(s, 0) for s in ("ok", "fallback", "no_face"))
        return self.counts.get("ok", 0) / readable if readable else 0.0

    @property
    def exit_code(self) -> int:
        return 0 if self.counts.get("ok", 0) == self.total else 1

    def format(self) -> str:
        """Human-readable summary lines."""
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        c = self.counts
        lines = [
            f"{self.total:,} images: {c.get('ok', 0):,} face detected, "
            f"{c.get('fallback', 0):,} centre-crop fallback, {c.get('no_face', 0):,} no face "
            f"(skipped), {c.get('error', 0):,} unreadable",
            f"detection rate {100 * self.detection_rate:.2f}% of readable images; "
            f"this run processed {self.processed:,} in {self.seconds:.1f} s ({rate:.1f} images/s), "
            f"{self.resumed:,} already done",
        ]
        if self.ignored:
            lines.append(f"{self.ignored:,} files without an image extension were ignored")
        for e in self.errors[:10]:
            lines.append(f"  {e['status']}: {e['source']}: {e['reason']}")
        if c.get("error", 0) > 10:
            lines.append(f"  ... {c['error'] - 10:,} more errors in the manifest")
        lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- walking SRC


def find_images(src: Path) -> tuple[list[str], list[dict[str, Any]], int]:
    """Image files under ``src`` as sorted relative POSIX paths, plus error records for
    unreadable folders and the count of ignored non-image files.

    Linked folders are followed (a collection of per-person links is a common layout), each
    real folder once: a link back up the tree is not walked again.
    """
    files: list[str] = []
    errors: list[dict[str, Any]] = []
    ignored = 0
    seen: set[str] = set()

    def onerror(e: OSError) -> None:
        rel = os.path.relpath(e.filename, src) if e.filename else "."
        errors.append(record(rel, "error", reason=f"cannot list folder ({e.strerror or e})"))

    for root, dirs, names in os.walk(src, onerror=onerror, followlinks=True):
        seen.add(os.path.realpath(root))
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) not in seen
        )
        for name in names:
            if name.startswith("."):
                continue
            rel = Path(root, name).relative_to(src).as_posix()
            if is_image_file(name):
                files.append(rel)
            else:
                ignored += 1
    return sorted(files), errors, ignored


def output_names(files: Sequence[str], ext: str = ".png") -> dict[str, str]:
    """Source -> output relative path with ``ext``; ``a.jpg`` and ``a.png`` in one folder become
    ``a.jpg.png`` and ``a.png.png`` instead of overwriting each other."""
    stems = Counter(str(Path(f).with_suffix("")) for f in files)
    out = {}
    for f in files:
        stem = str(Path(f).with_suffix(""))
        out[f] = (f + ext) if stems[stem] > 1 else stem + ext
    return out


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception so the worker pool is torn down (workers would outlive a
    plain kill of the parent); the journal keeps what was finished."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _check_folders(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[Path, Path]:
    """``src`` and ``dst`` resolved, after checking ``src`` is a folder not holding ``dst``."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if dst == src or src in dst.parents:
        raise ValueError(f"output folder {dst} must not be inside the source folder {src}")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"output folder {dst} is a file")
    return src, dst


def _run_chunks(
    chunks: list[Sequence[Item]],
    workers: int,
    init_args: tuple[Any, ...],
    collect: Callable[[list[dict[str, Any]]], None],
) -> None:
    """``process_chunk`` on every chunk, here (``workers <= 1``) or in a pool of spawned
    processes; ``collect`` gets each chunk's records as they finish."""
    if workers <= 1:
        init_worker(*init_args)
        for chunk in chunks:
            collect(process_chunk(chunk))
    elif chunks:
        ctx = mp.get_context("spawn")  # why: never fork a process that may hold torch threads
        with (
            _terminate_raises(),
            ctx.Pool(workers, initializer=init_worker, initargs=init_args) as pool,
        ):
            for records in pool.imap_unordered(process_chunk, chunks):
                collect(records)


def _process(
    todo: list[Item],
    final: dict[str, dict[str, Any]],
    journal_path: Path,
    workers: int,
    batch_size: int,
    init_args: tuple[Any, ...],
    bar: Any,
) -> None:
    """Process ``todo`` in chunks of ``batch_size``, recording each finished file in ``final``
    and the journal (flushed per chunk) and advancing ``bar``."""
    chunks = list(_chunks(todo, batch_size))
    with open(journal_path, "a", encoding="utf-8") as journal_file:

        def collect(records: list[dict[str, Any]]) -> None:
            for rec in records:
                final[rec["source"]] = rec
                journal_file.write(json.dumps(rec) + "\n")
            journal_file.flush()
            if bar is not None:
                bar.update(len(records))

        _run_chunks(chunks, workers, init_args, collect)


def _summarize(
    src: Path,
    dst: Path,
    records: list[dict[str, Any]],
    settings: dict[str, Any],
    *,
    total: int,
    resumed: int,
    seconds: float,
    processed: int,
    ignored: int,
) -> AlignSummary:
    """The run's ``AlignSummary`` from all its ``records`` (see ``AlignSummary`` for the
    counts); also written, with the records, as the manifest."""
    by_status = Counter(r["status"] for r in records)
    summary = AlignSummary(
        counts={s: by_status.get(s, 0) for s in ("ok", "fallback", "no_face", "error")},
        manifest=str(dst / MANIFEST_CSV),
        errors=[r for r in records if r["status"] == "error"][:10],
        total=total,
        resumed=resumed,
        seconds=seconds,
        processed=processed,
        ignored=ignored,
    )
    summary_dict = {
        **{k: v for k, v in asdict(summary).items() if k != "errors"},
        "detection_rate": summary.detection_rate,
        "exit_code": summary.exit_code,
        "settings": settings,
        "source_folder": str(src),
    }
    write_manifest(dst, records, summary_dict)
    return summary


def align_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config: AlignConfig | None = None,
    detector: str = "mtcnn",
    workers: int = 1,
    batch_size: int = 16,
    max_side: int | None = 1280,
    overwrite: bool = False,
    progress: bool = True,
    detections: str | os.PathLike | None = None,
) -> AlignSummary:
    """Detect and crop the face of every image under ``src`` into ``dst`` (same layout, PNG).

    Args:
        src: folder of photos, usually one sub-folder per identity.
        dst: output folder (created); must not lie inside ``src``.
        config: crop settings (default ``AlignConfig()``).
        detector: name for ``create_detector``.
        workers: processes; 1 runs in this process (with all torch threads).
        batch_size: images per detector call (and per task sent to a worker).
        max_side: photos larger than this are detected on a shrunk copy.
        overwrite: redo every file even when an earlier run finished it, accept changed
            settings, and replace files in ``dst`` that no align run wrote (without it such
            files, and symlinks where an output goes, stop the run before anything is written).
        progress: show a tqdm progress bar on stderr.
        detections: an earlier run's ``manifest.csv`` (see ``read_detections``): crop the faces
            it recorded instead of detecting again; files it does not cover are detected.

    Returns:
        The run's ``AlignSummary`` (also written into ``dst/manifest.json``).

    Raises:
        FileNotFoundError: ``src`` is not a folder.
        ValueError: ``dst`` inside ``src``, ``dst`` holds crops made with other settings or
            files align did not write, a folder inside ``dst`` is a symlink, or ``detections``
            is not an align manifest.
    """
    config = AlignConfig() if config is None else config
    known = None if detections is None else read_detections(detections)
    src, dst = _check_folders(src, dst)
    settings: dict[str, Any] = {"detector": detector, "max_side": max_side, **asdict(config)}
    if detections is not None:
        settings["detections"] = str(Path(detections).resolve())
    ours = check_settings(dst, settings, overwrite)  # an earlier align made dst

    t0 = time.perf_counter()
    files, walk_errors, ignored = find_images(src)
    names = output_names(files)
    journal_path = dst / JOURNAL
    journal = read_journal(journal_path) if ours and not overwrite else {}
    check_outputs(dst, names, journal, ours, overwrite)
    dst.mkdir(parents=True, exist_ok=True)
    if overwrite and journal_path.exists():
        journal_path.unlink()
    write_json(dst / CONFIG_FILE, settings)
    final, todo = resume_plan(src, dst, files, names, journal)
    resumed = len(final)
    journal_pending(journal_path, todo)

    bar = None
    if progress:
        bar = tqdm(total=len(files), initial=resumed, unit="img", desc="align", file=sys.stderr)
    threads = 1 if workers > 1 else max(1, os.cpu_count() or 1)
    init_args = (detector, config, max_side, threads, known)
    _process(todo, final, journal_path, workers, batch_size, init_args, bar)
    if bar is not None:
        bar.close()

    return _summarize(
        src,
        dst,
        [final[rel] for rel in files] + walk_errors,
        settings,
        total=len(files) + len(walk_errors),
        resumed=resumed,
        seconds=time.perf_counter() - t0,
        processed=len(todo),
        ignored=ignored,
    )
