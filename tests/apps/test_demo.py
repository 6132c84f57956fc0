"""The demo's data handling (offline): finding LFW, the checksummed download, no-data message;
and the whole demo on a miniature LFW made of ORL photos."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from facenet.apps.demo_lfw import LFW_FILES, download_lfw, find_lfw, how_to_get_lfw
from facenet.cli import main


def fake_lfw_archive(tmp_path, people=3, per=2):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(people):
            for k in range(1, per + 1):
                img = io.BytesIO()
                Image.new("RGB", (50, 50), (i * 60, k * 40, 0)).save(img, format="JPEG")
                info = tarfile.TarInfo(f"lfw_funneled/Person_{i}/Person_{i}_{k:04d}.jpg")
                info.size = img.tell()
                img.seek(0)
                tar.addfile(info, img)
    archive = tmp_path / "served" / "lfw-funneled.tgz"
    archive.parent.mkdir()
    archive.write_bytes(buf.getvalue())
    pairs = tmp_path / "served" / "pairs.txt"
    pairs.write_text("1 1\nPerson_0\t1\t2\nPerson_0\t1\tPerson_1\t1\n")
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    return {
        "lfw-funneled.tgz": (archive.as_uri(), sha(archive)),
        "pairs.txt": (pairs.as_uri(), sha(pairs)),
    }


def test_lfw_mirror_checksum_matches_our_pairs_file(lfw_dir):
    sha = hashlib.sha256((lfw_dir / "pairs.txt").read_bytes()).hexdigest()
    assert sha == LFW_FILES["pairs.txt"][1]


def test_download_verifies_extracts_and_reuses(tmp_path):
    files = fake_lfw_archive(tmp_path)
    images = download_lfw(tmp_path / "data", files, quiet=True)
    assert images.name == "lfw_funneled" and len(list(images.iterdir())) == 3
    assert find_lfw(tmp_path / "data") == (images, tmp_path / "data" / "lfw" / "pairs.txt")
    # second call: nothing downloaded (the URLs are gone)
    broken = {k: ("file:///nonexistent/" + k, v[1]) for k, v in files.items()}
    assert download_lfw(tmp_path / "data", broken, quiet=True) == images


def test_download_rejects_a_wrong_checksum(tmp_path):
    files = fake_lfw_archive(tmp_path)
    files["lfw-funneled.tgz"] = (files["lfw-funneled.tgz"][0], "0" * 64)
    with pytest.raises(ValueError, match="does not match"):
        download_lfw(tmp_path / "data", files, quiet=True)
    assert not list((tmp_path / "data" / "lfw").glob("*.tgz*"))


def test_existing_local_folder_is_accepted(tmp_path):
    (tmp_path / "lfw-deepfunneled" / "A_B").mkdir(parents=True)
    Image.new("RGB", (10, 10)).save(tmp_path / "lfw-deepfunneled" / "A_B" / "A_B_0001.jpg")
    assert find_lfw(tmp_path)[0] == tmp_path / "lfw-deepfunneled"
    assert find_lfw(tmp_path / "lfw-deepfunneled")[0] == tmp_path / "lfw-deepfunneled"


def test_demo_without_data_says_how_to_get_lfw(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "No LFW photos found" in err and "--download" in err and "figshare" in err
    assert "facenet demo --download" in how_to_get_lfw(None)


@pytest.mark.slow
def test_demo_end_to_end_on_a_miniature_lfw(orl_dir, tmp_path, trained_tiny, capsys):
    # ORL people laid out as LFW (Name/Name_NNNN.jpg + pairs.txt); yunet-free: crops are tight,
    # so the demo's detector is asked for, and MTCNN finds ORL faces
    root = tmp_path / "data" / "lfw" / "lfw-deepfunneled"
    for person in range(1, 41):
        d = root / f"P_{person}"
        d.mkdir(parents=True)
        for k in range(1, 11):
            Image.open(orl_dir / f"s{person}" / f"{k}.pgm").convert("RGB").save(
                d / f"P_{person}_{k:04d}.jpg"
            )
    (tmp_path / "data" / "lfw" / "pairs.txt").write_text(
        "1 2\nP_1\t1\t2\nP_2\t1\t3\nP_1\t1\tP_2\t1\nP_3\t1\tP_4\t2\n"
    )
    out = tmp_path / "out"
    rc = main(
        [
            "demo",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--model",
            str(trained_tiny),
            "--gallery-people",
            "5",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "verification:" in text and "identification:" in text and "clustering:" in text
    page = (out / "index.html").read_text()
    assert "Open-set identification" in page and "clusters/index.html" in page
    assert (out / "clusters" / "clusters.csv").is_file() and any((out / "aligned").rglob("*.png"))
    assert np.isfinite(float(text.split("BCubed F ")[1].split(")")[0]))
