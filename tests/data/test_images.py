"""Image loading: unusual-but-valid files decode correctly; broken ones raise ``ImageError``."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facenet.data.images import ImageError, load_image


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.fixture()
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path, rgb):
    p = _save(Image.fromarray(rgb), tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(p), rgb)


def test_greyscale_pgm_becomes_three_equal_channels(tmp_path, rgb):
    grey = rgb[..., 0]
    p = _save(Image.fromarray(grey), tmp_path / "a.pgm")
    out = load_image(p)
    assert out.shape == (20, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_16bit_png_is_scaled_to_8bit(tmp_path):
    arr = np.full((8, 8), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    p = _save(Image.fromarray(arr), tmp_path / "deep.png")
    out = load_image(p)
    assert out.dtype == np.uint8 and out[1, 1, 0] == 255 and out[0, 0, 0] == 0


def test_cmyk_jpeg(tmp_path):
    p = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "c.jpg")
    out = load_image(p)
    assert out.shape == (16, 16, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60  # red


def test_palette_png_with_transparency_composites_on_white(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    img.info["transparency"] = 0
    p = _save(img, tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(load_image(p), np.full((4, 4, 3), 255, np.uint8))


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(0, 0, 255), (255, 0, 0)]]
    p = tmp_path / "a.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert load_image(p)[..., 2].mean() > 200


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    p = _save(img, tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_image(p).shape == (40, 20, 3)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "not an image"),
        (lambda p: p.write_bytes(_jpeg_bytes()[:200]), "truncated|corrupt"),
    ],
)
def test_broken_files_raise_with_path_and_reason(tmp_path, make, reason):
    p = tmp_path / "broken.jpg"
    make(p)
    with pytest.raises(ImageError, match=reason) as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")


def test_decompression_bomb_guard(tmp_path):
    p = _save(Image.new("L", (200, 200)), tmp_path / "big.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(p, max_pixels=1000)


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_atomic_write_replaces_whole_file_with_umask_permissions(tmp_path):
    import os

    from facenet.utils import atomic_write

    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"partial")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_pipe_is_not_an_empty_image(tmp_path):
    import os

    import pytest

    from facenet.data.images import ImageError, load_image

    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this system")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(fifo)
