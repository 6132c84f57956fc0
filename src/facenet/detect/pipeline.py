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
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facenet.data.images import ImageError, is_image_file, load_image
from facenet.detect.align import AlignConfig, align_detections, detect_resized
from facenet.detect.base import Detection
from facenet.utils import atomic_write, write_json

JOURNAL = ".align_journal.jsonl"
CONFIG_FILE = "align_config.json"
MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
MANIFEST_FIELDS = ("source", "output", "status", "box", "landmarks", "score", "num_faces", "reason")
DONE_STATUSES = ("ok", "fallback")


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
    unreadable folders and the count of ignored non-image files."""
    files: list[str] = []
    errors: list[dict[str, Any]] = []
    ignored = 0

    def onerror(e: OSError) -> None:
        rel = os.path.relpath(e.filename, src) if e.filename else "."
        errors.append(_record(rel, "error", reason=f"cannot list folder ({e.strerror or e})"))

    for root, dirs, names in os.walk(src, onerror=onerror):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
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


def read_detections(manifest: str | os.PathLike) -> dict[str, tuple[list[Detection], int]]:
    """The subject faces an earlier ``align_folder`` run recorded in its ``manifest.csv``.

    Returns:
        source relative path -> (detections, faces found): one ``Detection`` for ``ok`` rows, none
        for ``fallback``/``no_face`` rows (so they fall back exactly as before). ``error`` rows are
        left out: those files are read (and, if readable, detected) afresh.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an align manifest, or a row whose box/landmarks cannot be read (named by
            file and line).
    """
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"detections manifest not found: {path}")
    out: dict[str, tuple[list[Detection], int]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"source", "status", "box", "landmarks", "score"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path} is not an align manifest (no column {', '.join(sorted(missing))})"
            )
        for line, row in enumerate(reader, start=2):
            status = row["status"]
            faces = int(row.get("num_faces") or 0)
            if status == "ok":
                try:
                    box = tuple(float(v) for v in json.loads(row["box"]))
                    landmarks = np.asarray(json.loads(row["landmarks"]), dtype=np.float64)
                    score = float(row["score"])
                    if len(box) != 4 or landmarks.shape != (5, 2):
                        raise ValueError(f"box {len(box)} values, landmarks {landmarks.shape}")
                except (ValueError, TypeError) as e:
                    raise ValueError(f"{path} line {line} ({row['source']}): bad face: {e}") from e
                out[row["source"]] = ([Detection(box, landmarks, score)], faces)  # type: ignore[arg-type]
            elif status in ("fallback", "no_face"):
                out[row["source"]] = ([], faces)
    return out


# --------------------------------------------------------------------------- one worker


def _record(source: str, status: str, **kw: Any) -> dict[str, Any]:
    r = {k: "" for k in MANIFEST_FIELDS}
    r.update(source=source, status=status, **kw)
    return r


_WORKER: dict[str, Any] = {}


def _init_worker(
    detector: str,
    config: AlignConfig,
    max_side: int | None,
    threads: int,
    known: dict[str, tuple[list[Detection], int]] | None = None,
) -> None:
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    _WORKER.update(
        detector_name=detector,
        detector=None,  # made on first need: a re-crop from known faces may never need one
        config=config,
        max_side=max_side,
        threads=threads,
        known=known or {},
    )


def _detector() -> Any:
    if _WORKER["detector"] is None:
        from facenet.detect.base import create_detector

        _WORKER["detector"] = create_detector(_WORKER["detector_name"])
    return _WORKER["detector"]


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _detect(images: list[np.ndarray]) -> list[Any]:
    """The worker's detector on ``images``, batched; per image a list of ``Detection`` or the
    exception it raised (one bad image must not sink the chunk: on failure, retry one by one)."""
    try:
        return detect_resized(_detector(), images, _WORKER["max_side"])
    except Exception:
        found: list[Any] = []
        for im in images:
            try:
                found.append(detect_resized(_detector(), [im], _WORKER["max_side"])[0])
            except Exception as e:
                found.append(e)
        return found


def _process_chunk(chunk: Sequence[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    """Load, detect (batched), align and write one chunk of (src_abs, dst_abs, rel, out_rel)."""
    config, known = _WORKER["config"], _WORKER["known"]
    records: dict[int, dict[str, Any]] = {}
    images, slots = [], []
    for i, (src_abs, _, rel, _) in enumerate(chunk):
        try:
            images.append(load_image(src_abs))
            slots.append(i)
        except ImageError as e:
            records[i] = _record(rel, "error", reason=e.reason)
    # per image: (detections, faces found) recorded by an earlier run, else detected now
    faces_of: list[Any] = [known.get(chunk[i][2]) for i in slots]
    unknown = [j for j, f in enumerate(faces_of) if f is None]
    if unknown:
        for j, dets in zip(unknown, _detect([images[j] for j in unknown]), strict=True):
            faces_of[j] = dets if isinstance(dets, Exception) else (dets, None)
    for i, image, found in zip(slots, images, faces_of, strict=True):
        src_abs, dst_abs, rel, out_rel = chunk[i]
        try:
            if isinstance(found, Exception):
                raise found
            dets, faces = found
            result = align_detections(image, dets, config)
            rec = _record(
                rel,
                result.status,
                num_faces=result.num_faces if faces is None else faces,
                reason=result.reason,
            )
            if result.detection is not None:
                d = result.detection.to_dict()
                rec.update(box=d["box"], landmarks=d["landmarks"], score=d["score"])
            if result.crop is not None:
                with atomic_write(dst_abs, "wb") as f:
                    f.write(_encode_png(result.crop))
                rec["output"] = out_rel
            records[i] = rec
        except Exception as e:  # keep the batch going; the manifest says what happened
            records[i] = _record(rel, "error", reason=f"processing failed: {type(e).__name__}: {e}")
    return [records[i] for i in range(len(chunk))]


# --------------------------------------------------------------------------- the run


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a crash
            done[rec["source"]] = rec
    return done


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


def _check_outputs(
    dst: Path,
    names: dict[str, str],
    journal: dict[str, dict[str, Any]],
    ours: bool,
    overwrite: bool,
) -> None:
    """Refuse, before anything is written, a run that would write through a symlink out of
    ``dst`` or replace a file that no align run into ``dst`` wrote (unless ``overwrite``)."""
    from facenet.utils import UnsafeOutputError, inside

    owned = {r.get("output") for r in journal.values() if r.get("output")}
    fixed = [CONFIG_FILE, JOURNAL, MANIFEST_CSV, MANIFEST_JSON]
    clash: list[str] = []
    for out_rel in [*fixed, *names.values()]:
        try:
            target = inside(dst, out_rel)
        except UnsafeOutputError as e:
            raise ValueError(str(e)) from None
        if not (target.exists() or target.is_symlink()):
            continue
        mine = ours if out_rel in fixed else out_rel in owned
        # why: a link is never followed nor replaced silently, even where a file of ours was
        if target.is_symlink() or target.is_dir() or not mine:
            clash.append(out_rel)
    if clash and not overwrite:
        shown = ", ".join(str(dst / c) for c in clash[:3])
        more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
        raise ValueError(
            f"{shown}{more}: already exist and were not written by facenet align into {dst}; "
            "pass --overwrite to replace them, or choose another output folder"
        )
    for out_rel in clash:  # overwrite: make way without following links
        target = dst / out_rel
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            raise ValueError(f"{target}: is a folder where a file must be written")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _write_manifest(dst: Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = dict(r)
        for key in ("box", "landmarks"):
            row[key] = json.dumps(row[key]) if row[key] != "" else ""
        writer.writerow({k: row.get(k, "") for k in MANIFEST_FIELDS})
    with atomic_write(dst / MANIFEST_CSV, "w") as f:
        f.write(buf.getvalue())
    write_json(dst / MANIFEST_JSON, {"summary": summary, "records": records})


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
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if dst == src or src in dst.parents:
        raise ValueError(f"output folder {dst} must not be inside the source folder {src}")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"output folder {dst} is a file")
    settings: dict[str, Any] = {"detector": detector, "max_side": max_side, **asdict(config)}
    if detections is not None:
        settings["detections"] = str(Path(detections).resolve())
    config_path = dst / CONFIG_FILE
    journal_path = dst / JOURNAL
    ours = config_path.is_file() and not config_path.is_symlink()  # an earlier align made dst
    if ours and not overwrite:
        try:
            previous = json.loads(config_path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{config_path}: unreadable ({e}); use --overwrite") from None
        if previous != settings:
            changed = sorted(
                k for k in settings.keys() | previous.keys() if settings.get(k) != previous.get(k)
            )
            raise ValueError(
                f"{dst} holds crops made with other settings ({', '.join(changed)} differ: "
                f"{ {k: previous.get(k) for k in changed} }); use another output folder or "
                "--overwrite"
            )

    t0 = time.perf_counter()
    files, walk_errors, ignored = find_images(src)
    names = output_names(files)
    journal = _read_journal(journal_path) if ours and not overwrite else {}
    _check_outputs(dst, names, journal, ours, overwrite)
    dst.mkdir(parents=True, exist_ok=True)
    if overwrite and journal_path.exists():
        journal_path.unlink()
    write_json(config_path, settings)
    final: dict[str, dict[str, Any]] = {}
    todo = []
    for rel in files:
        rec = journal.get(rel)
        if (
            rec is not None
            and rec["status"] in DONE_STATUSES
            and rec.get("output") == names[rel]
            and (dst / names[rel]).exists()
        ):
            final[rel] = rec
        else:
            todo.append((str(src / rel), str(dst / names[rel]), rel, names[rel]))
    resumed = len(final)
    # why: the journal names every file this run may write before it is written, so a run
    # killed midway still owns its files and a rerun may replace them
    with open(journal_path, "a", encoding="utf-8") as journal_file:
        for _, _, rel, out_rel in todo:
            journal_file.write(json.dumps(_record(rel, "pending", output=out_rel)) + "\n")

    chunks = list(_chunks(todo, batch_size))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), initial=resumed, unit="img", desc="align", file=sys.stderr)
    init_args = (
        detector,
        config,
        max_side,
        1 if workers > 1 else max(1, os.cpu_count() or 1),
        known,
    )
    with open(journal_path, "a", encoding="utf-8") as journal_file:

        def collect(records: list[dict[str, Any]]) -> None:
            for rec in records:
                final[rec["source"]] = rec
                journal_file.write(json.dumps(rec) + "\n")
            journal_file.flush()
            if bar is not None:
                bar.update(len(records))

        if workers <= 1:
            _init_worker(*init_args)
            for chunk in chunks:
                collect(_process_chunk(chunk))
        elif chunks:
            ctx = mp.get_context("spawn")  # why: never fork a process that may hold torch threads
            with (
                _terminate_raises(),
                ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool,
            ):
                for records in pool.imap_unordered(_process_chunk, chunks):
                    collect(records)
    if bar is not None:
        bar.close()

    records = [final[rel] for rel in files] + walk_errors
    counts = Counter(r["status"] for r in records)
    summary = AlignSummary(
        total=len(files) + len(walk_errors),
        counts={s: counts.get(s, 0) for s in ("ok", "fallback", "no_face", "error")},
        resumed=resumed,
        seconds=time.perf_counter() - t0,
        processed=len(todo),
        ignored=ignored,
        manifest=str(dst / MANIFEST_CSV),
        errors=[r for r in records if r["status"] == "error"][:10],
    )
    summary_dict = {
        **{k: v for k, v in asdict(summary).items() if k != "errors"},
        "detection_rate": summary.detection_rate,
        "exit_code": summary.exit_code,
        "settings": settings,
        "source_folder": str(src),
    }
    _write_manifest(dst, records, summary_dict)
    return summary
