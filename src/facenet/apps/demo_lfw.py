"""LFW for ``facenet demo``: find a copy on disk, say how to get one, download it (checksummed),
and read its people and its ``pairs.txt``.

Data: ``--data DIR`` or ``$FACENET_DATA`` (or ``../shared/data``), holding ``lfw/`` (or an LFW
folder itself). With no data, ``how_to_get_lfw`` explains, and ``download_lfw`` fetches LFW from
scikit-learn's public figshare mirror (checksummed), or accepts a folder you already have.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

from facenet.fingerprint import file_sha256

# why: scikit-learn's fetch_lfw_* mirror (figshare); the UMass site is often unreachable.
# The SHA-256 sums are scikit-learn's; pairs.txt's equals our copy of LFW's pairs.txt.
LFW_FILES: dict[str, tuple[str, str]] = {
    "lfw-funneled.tgz": (
        "https://ndownloader.figshare.com/files/5976015",
        "b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a",
    ),
    "pairs.txt": (
        "https://ndownloader.figshare.com/files/5976006",
        "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592",
    ),
}
# folders that hold LFW's <Name>/<Name>_NNNN.jpg, best first
LFW_IMAGE_FOLDERS = ("lfw-deepfunneled", "lfw_funneled", "lfw-funneled", "lfw")


class DataNotFound(FileNotFoundError):
    """No LFW under the given folder; ``str(e)`` says how to get it."""


def find_lfw(data: str | os.PathLike | None) -> tuple[Path, Path | None] | None:
    """``(image folder, pairs.txt or None)`` of an LFW copy under ``data`` (``data/lfw/...``,
    ``data/...``, or ``data`` itself being the image folder), else None."""
    if data is None:
        return None
    data = Path(data)
    for base in (data / "lfw", data):
        for name in LFW_IMAGE_FOLDERS:
            images = base / name
            if images.is_dir() and any(images.iterdir()):
                pairs = base / "pairs.txt"
                return images, pairs if pairs.is_file() else None
    # the image folder itself: <Name>/<Name>_0001.jpg
    if data.is_dir():
        for sub in data.iterdir():
            if sub.is_dir() and (sub / f"{sub.name}_0001.jpg").is_file():
                pairs = data.parent / "pairs.txt"
                return data, pairs if pairs.is_file() else None
    return None


def how_to_get_lfw(data: str | os.PathLike | None) -> str:
    where = f"under {data}" if data else "(no --data given, $FACENET_DATA unset, no ../shared/data)"
    return (
        f"No LFW photos found {where}.\n"
        "The demo needs Labeled Faces in the Wild (13,233 photos of 5,749 people, ~240 MB):\n"
        "  * with internet:   facenet demo --download --data ~/facenet-data\n"
        "    (fetches lfw-funneled.tgz + pairs.txt from scikit-learn's figshare mirror,\n"
        "     SHA-256 checked: " + LFW_FILES["lfw-funneled.tgz"][0] + ")\n"
        "  * already have it: facenet demo --data DIR   (DIR/lfw/lfw-deepfunneled/<Name>/..., \n"
        "    DIR/lfw-funneled/..., or the image folder itself), or set FACENET_DATA=DIR.\n"
        "LFW is for research only; its authors warn it is no evidence of fitness for commercial use."
    )


def download_lfw(
    dest: str | os.PathLike,
    files: dict[str, tuple[str, str]] = LFW_FILES,
    quiet: bool = False,
) -> Path:
    """LFW under ``dest/lfw``: reuse what is there, else download, check SHA-256, extract.

    Args:
        dest: data folder; the result is ``dest/lfw/<image folder>`` and ``dest/lfw/pairs.txt``.
        files: name -> (url, sha256); tests pass ``file://`` URLs.

    Returns:
        the image folder.

    Raises:
        ValueError: a download whose checksum does not match (the file is deleted).
        OSError / urllib.error.URLError: no network or a failed transfer.
    """
    found = find_lfw(dest)
    if found is not None and found[1] is not None:
        return found[0]
    root = Path(dest) / "lfw"
    root.mkdir(parents=True, exist_ok=True)
    for name, (url, sha) in files.items():
        target = root / name
        if name.endswith(".tgz") and find_lfw(dest) is not None:
            continue  # images already extracted
        if not (target.is_file() and file_sha256(target) == sha):
            part = root / (name + ".part")
            if not quiet:
                print(f"downloading {url} -> {target}")
            with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:  # noqa: S310
                shutil.copyfileobj(r, f, 1 << 20)
            got = file_sha256(part)
            if got != sha:
                part.unlink()
                raise ValueError(f"{url}: SHA-256 {got} does not match the expected {sha}")
            os.replace(part, target)
        if name.endswith(".tgz"):
            if not quiet:
                print(f"extracting {target}")
            with tarfile.open(target) as tar:
                try:
                    tar.extractall(root, filter="data")
                except TypeError:  # Python < 3.12 without extraction filters
                    tar.extractall(root)  # noqa: S202
    found = find_lfw(dest)
    if found is None:
        raise ValueError(f"{root}: downloaded archive did not contain an LFW image folder")
    return found[0]


def lfw_people(images: Path) -> dict[str, list[Path]]:
    """Each person's photos (sorted) in an LFW image folder, people by name."""
    out = {}
    for d in sorted(p for p in images.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".png", ".jpeg"))
        if files:
            out[d.name] = files
    return out


def lfw_pairs(pairs_file: Path | None, images: Path, n: int) -> list[tuple[Path, Path, bool]]:
    """The first ``n`` same and ``n`` different pairs of ``pairs.txt`` whose photos exist."""
    if pairs_file is None:
        return []
    same, diff = [], []
    for line in pairs_file.read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            a = images / f[0] / f"{f[0]}_{int(f[1]):04d}.jpg"
            b = images / f[0] / f"{f[0]}_{int(f[2]):04d}.jpg"
            if len(same) < n and a.is_file() and b.is_file():
                same.append((a, b, True))
        elif len(f) == 4:
            a = images / f[0] / f"{f[0]}_{int(f[1]):04d}.jpg"
            b = images / f[2] / f"{f[2]}_{int(f[3]):04d}.jpg"
            if len(diff) < n and a.is_file() and b.is_file():
                diff.append((a, b, False))
        if len(same) >= n and len(diff) >= n:
            break
    return same + diff
