"""What an align run keeps beside its crops in DST, and the checks built on it.

- ``align_config.json``: the settings, so a rerun with different settings is refused instead of
  mixing two kinds of crop in one folder (``check_settings``);
- ``.align_journal.jsonl``: one JSON record per finished file, appended as the run goes (a crash
  loses at most the torn last line); the basis of resuming (``read_journal``, ``resume_plan``)
  and of knowing which files an earlier run wrote (``check_outputs``);
- ``manifest.csv`` and ``manifest.json`` (records + summary), written atomically at the end
  (``write_manifest``); an earlier run's ``manifest.csv`` can also be read back as detections
  (``read_detections``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facenet.detect.base import Detection
from facenet.utils import UnsafeOutputError, atomic_write, inside, write_json

JOURNAL = ".align_journal.jsonl"
CONFIG_FILE = "align_config.json"
MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
MANIFEST_FIELDS = ("source", "output", "status", "box", "landmarks", "score", "num_faces", "reason")
DONE_STATUSES = ("ok", "fallback")

# One work item: (source path, output path, source relative to SRC, output relative to DST).
Item = tuple[str, str, str, str]


def record(source: str, status: str, **kw: Any) -> dict[str, Any]:
    """A manifest record: every ``MANIFEST_FIELDS`` key, empty unless given."""
    r = {k: "" for k in MANIFEST_FIELDS}
    r.update(source=source, status=status, **kw)
    return r


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


def check_settings(dst: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """Whether an earlier align run made ``dst`` (its settings file is a plain file there).

    Raises:
        ValueError: without ``overwrite``, that run's settings differ from ``settings`` or cannot
            be read.
    """
    config_path = dst / CONFIG_FILE
    ours = config_path.is_file() and not config_path.is_symlink()
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
    return ours


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Source -> its last journal record (a torn last line is skipped); empty if no journal."""
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


def check_outputs(
    dst: Path,
    names: dict[str, str],
    journal: dict[str, dict[str, Any]],
    ours: bool,
    overwrite: bool,
) -> None:
    """Refuse, before anything is written, a run that would write through a symlink out of
    ``dst`` or replace a file that no align run into ``dst`` wrote (unless ``overwrite``)."""
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


def resume_plan(
    src: Path,
    dst: Path,
    files: Sequence[str],
    names: dict[str, str],
    journal: dict[str, dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], list[Item]]:
    """Split ``files`` into those an earlier run finished (journal record done, same output,
    output present): source -> record, and the work items still to do."""
    done: dict[str, dict[str, Any]] = {}
    todo: list[Item] = []
    for rel in files:
        rec = journal.get(rel)
        if (
            rec is not None
            and rec["status"] in DONE_STATUSES
            and rec.get("output") == names[rel]
            and (dst / names[rel]).exists()
        ):
            done[rel] = rec
        else:
            todo.append((str(src / rel), str(dst / names[rel]), rel, names[rel]))
    return done, todo


def journal_pending(path: Path, todo: Sequence[Item]) -> None:
    """Append a ``pending`` record naming the output of every item in ``todo``."""
    # why: the journal names every file this run may write before it is written, so a run
    # killed midway still owns its files and a rerun may replace them
    with open(path, "a", encoding="utf-8") as journal_file:
        for _, _, rel, out_rel in todo:
            journal_file.write(json.dumps(record(rel, "pending", output=out_rel)) + "\n")


def write_manifest(dst: Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """``manifest.csv`` (the records) and ``manifest.json`` (summary + records), atomically."""
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
