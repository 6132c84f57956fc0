import os

import numpy as np
import pytest

from facenet.data.cache import build_cache, cache_key, square_resize
from facenet.data.images import load_image
from facenet.data.synthetic import write_synthetic_folders


@pytest.fixture()
def files(tmp_path):
    root = write_synthetic_folders(tmp_path / "imgs", 3, 2, size=24, seed=3)
    return sorted(str(p) for p in root.rglob("*.png"))


def test_cache_matches_direct_decoding_and_is_reused(tmp_path, files):
    c1 = build_cache(files, 20, tmp_path / "cache")
    assert c1.images.shape == (6, 20, 20, 3) and c1.ok.all()
    for i, p in enumerate(files):
        np.testing.assert_array_equal(c1.images[i], square_resize(load_image(p), 20))
    mtime = os.stat(c1.path).st_mtime_ns
    c2 = build_cache(files, 20, tmp_path / "cache")
    assert c2.path == c1.path and os.stat(c2.path).st_mtime_ns == mtime
    np.testing.assert_array_equal(np.asarray(c2.images), np.asarray(c1.images))
    assert not [p for p in os.listdir(tmp_path / "cache") if p.endswith(".tmp")]


def test_key_changes_with_size_and_content(files):
    k = cache_key(files, 20)
    assert cache_key(files, 21) != k
    os.utime(files[0], ns=(1, 1))
    assert cache_key(files, 20) != k


def test_broken_image_is_reported_and_marked(tmp_path, files):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        c = build_cache([*files, str(bad)], 16, tmp_path / "cache")
    assert c.ok.tolist() == [True] * 6 + [False]
    assert not c.images[6].any()


def test_square_resize_takes_the_centre_of_non_square_images():
    img = np.zeros((40, 20, 3), np.uint8)
    img[10:30] = 255
    out = square_resize(img, 10)
    assert out.shape == (10, 10, 3) and out.min() == 255


def test_crop_fraction_keeps_the_centre():
    img = np.zeros((100, 100, 3), np.uint8)
    img[20:80, 20:80] = 200
    out = square_resize(img, 30, crop_fraction=0.6)
    assert out.shape == (30, 30, 3) and out.min() == 200


def test_crop_fraction_is_part_of_the_key(files):
    assert cache_key(files, 20, 0.6) != cache_key(files, 20)
