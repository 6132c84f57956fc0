"""Writing a clustering of a photo collection to a folder: a folder per cluster with links to
the photos, ``clusters.csv`` and an ``index.html`` contact sheet."""

from __future__ import annotations

import csv
import hashlib
import html as html_lib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from facenet.data.images import ImageError, load_image
from facenet.utils import OwnedFiles, UnsafeOutputError, atomic_write


@dataclass(frozen=True)
class ClusterOutput:
    """Where ``write_clusters`` put things."""

    directory: str
    csv: str
    html: str | None
    n_faces: int
    n_clusters: int  # clusters of at least min_cluster_size faces
    n_singletons: int  # faces left unclustered (smaller clusters, HDBSCAN noise)


def cluster_folder_name(label: int, size: int, min_size: int = 2) -> str:
    # why: -1 is any face left out of the clusters (smaller than the minimum size, or HDBSCAN's
    # noise); one folder for those and for clusters under ``min_size`` faces (1: every face)
    return f"cluster_{label:04d}" if label >= 0 and size >= min_size else "unclustered"


MANIFEST = ".facenet-cluster.json"  # the files a run wrote; a rerun replaces exactly those


def write_clusters(
    out_dir: str | os.PathLike,
    paths: Sequence[str],
    boxes: np.ndarray,
    face_index: Sequence[int],
    labels: np.ndarray,
    crops: Sequence[np.ndarray | None] | None = None,
    link: Literal["symlink", "copy", "none"] = "symlink",
    html: bool = True,
    max_faces_per_cluster: int = 60,
    title: str = "facenet clusters",
    overwrite: bool = False,
    min_cluster_size: int = 2,
) -> ClusterOutput:
    """Write a clustering of faces: a folder per cluster with links to the source photos,
    ``clusters.csv`` (photo, face index, box, cluster) and ``index.html``, a contact sheet of the
    face crops of each cluster (largest cluster first).

    The folder may be reused: what an earlier run wrote (listed in ``.facenet-cluster.json``) is
    replaced as a whole, so no old link or thumbnail survives under a new caption. A file the
    command did not write is never replaced unless ``overwrite``, and no write follows a symlink
    out of the folder (``facenet.utils.UnsafeOutputError``; nothing is changed then).

    Args:
        paths: (N,) photo of each face.
        boxes: (N, 4) face boxes in photo pixels.
        labels: (N,) cluster labels (0 = largest; -1 = noise).
        crops: optional (N,) uint8 face crops for the contact sheet (re-cut from the photos
            when None).
        overwrite: replace files in the way that an earlier run did not write.
        min_cluster_size: clusters with fewer faces go to ``unclustered`` (1: none do).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UnsafeOutputError(f"{out}: is a file, not a folder")
    owned = OwnedFiles(out, MANIFEST, "cluster")
    labels = np.asarray(labels)
    sizes = {
        int(lab): int(c) for lab, c in zip(*np.unique(labels, return_counts=True), strict=True)
    }
    least = max(1, min_cluster_size)
    folder = [cluster_folder_name(int(lab), sizes[int(lab)], least) for lab in labels]
    # the plan: every file this run writes, relative to ``out``
    links = _photo_links(paths, folder) if link != "none" else []
    groups = _groups(labels, folder)
    thumbs = (
        {
            i: f"faces/{i:06d}.jpg"
            for members in groups.values()
            for i in members[:max_faces_per_cluster]
        }
        if html
        else {}
    )
    planned = ["clusters.csv", *(rel for _, rel in links)]
    if html:
        planned += ["index.html", *thumbs.values()]
    dirs = sorted({rel.split("/")[0] for _, rel in links} | ({"faces"} if html else set()))
    owned.begin(planned, dirs, overwrite=overwrite)
    # folders of photos
    for src, rel in links:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if link == "symlink":
            os.symlink(src, target)
        else:
            shutil.copy2(src, target)
    csv_path = _write_table(out / "clusters.csv", paths, face_index, boxes, labels, folder)
    html_path = None
    if html:
        html_path = str(
            _contact_sheet(
                out, paths, boxes, groups, thumbs, crops, max_faces_per_cluster, title, len(labels)
            )
        )
    n_clusters = sum(1 for lab, c in sizes.items() if lab >= 0 and c >= least)
    n_single = sum(c for lab, c in sizes.items() if lab < 0 or c < least)
    return ClusterOutput(str(out), str(csv_path), html_path, len(labels), n_clusters, n_single)


def _photo_links(paths: Sequence[str], folder: Sequence[str]) -> list[tuple[Path, str]]:
    """(source photo, link path relative to the output folder) of each photo in each of its
    clusters' folders; a second photo of the same name in one folder gets a hash prefix."""
    links: list[tuple[Path, str]] = []
    taken: set[str] = set()
    for p, f in dict.fromkeys(zip(paths, folder, strict=True)):
        src = Path(p).resolve()
        rel = f"{f}/{src.name}"
        if rel in taken:
            rel = f"{f}/{hashlib_short(str(src))}_{src.name}"
        if rel in taken:
            continue  # the same photo twice in one cluster
        taken.add(rel)
        links.append((src, rel))
    return links


def _write_table(
    csv_path: Path,
    paths: Sequence[str],
    face_index: Sequence[int],
    boxes: np.ndarray,
    labels: np.ndarray,
    folder: Sequence[str],
) -> Path:
    """``clusters.csv``: one row per face (photo, face index, box, cluster, folder)."""
    with atomic_write(csv_path, "w") as fh:
        w = csv.writer(fh)
        w.writerow(["photo", "face_index", "x1", "y1", "x2", "y2", "cluster", "folder"])
        for p, i, b, lab, f in zip(paths, face_index, boxes, labels, folder, strict=True):
            w.writerow([p, int(i), *(f"{v:.1f}" for v in b), int(lab), f])
    return csv_path


def _groups(labels: np.ndarray, folder: Sequence[str]) -> dict[str, list[int]]:
    """Face indices per cluster folder: largest cluster first, singletons and noise last."""
    order = np.lexsort(
        (np.arange(len(labels)), np.where(labels < 0, np.iinfo(np.int64).max, labels))
    )
    groups: dict[str, list[int]] = {}
    for i in order.tolist():
        groups.setdefault(folder[i], []).append(i)
    return groups


def hashlib_short(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _contact_sheet(
    out: Path,
    paths: Sequence[str],
    boxes: np.ndarray,
    groups: dict[str, list[int]],
    thumbs: dict[int, str],
    crops: Sequence[np.ndarray | None] | None,
    per_cluster: int,
    title: str,
    n_faces: int,
) -> Path:
    """``index.html`` with up to ``per_cluster`` face thumbnails per cluster (``thumbs``: face ->
    its file under ``faces/``)."""
    (out / "faces").mkdir(exist_ok=True)
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html_lib.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}h2{font-size:1em;margin:1.2em 0 .3em}"
        "img{width:80px;height:80px;object-fit:cover;margin:1px;border-radius:3px}</style>",
        f"<h1>{html_lib.escape(title)}</h1>",
        f"<p>{n_faces} faces, {sum(1 for g in groups if g.startswith('cluster_'))} clusters."
        " Open a cluster's folder for its photos; <code>clusters.csv</code> has every face.</p>",
    ]
    cache: dict[str, np.ndarray | None] = {}
    for name, members in groups.items():
        parts.append(f"<h2>{name} — {len(members)} face(s)</h2><div>")
        for i in members[:per_cluster]:
            thumb = out / thumbs[i]
            crop = None if crops is None else crops[i]
            if crop is None:
                p = paths[i]
                if p not in cache:
                    try:
                        cache = {p: load_image(p)}  # keep one photo in memory
                    except ImageError:
                        cache = {p: None}
                img = cache[p]
                if img is not None:
                    x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
                    crop = img[max(0, y1) : max(y1 + 1, y2), max(0, x1) : max(x1 + 1, x2)]
            if crop is None or crop.size == 0:
                continue
            im = Image.fromarray(np.ascontiguousarray(crop)).convert("RGB")
            im.thumbnail((96, 96))
            with atomic_write(thumb) as fh:
                im.save(fh, format="JPEG", quality=85)
            alt = html_lib.escape(f"{paths[i]} face {i}")
            parts.append(f"<img src='{thumbs[i]}' title='{alt}' alt='{alt}'>")
        if len(members) > per_cluster:
            parts.append(f" … and {len(members) - per_cluster} more")
        parts.append("</div>")
    page = out / "index.html"
    with atomic_write(page, "w") as fh:
        fh.write("\n".join(parts))
    return page
