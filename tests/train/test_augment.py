import numpy as np
import torch

from facenet.config import AugmentConfig
from facenet.data.augment import augment_batch, center_crops, step_rng

NONE = AugmentConfig(
    random_crop=False, flip=False, brightness=0, contrast=0, saturation=0, jpeg_probability=0
)


def _batch(n=6, s=20):
    return np.random.default_rng(0).integers(0, 256, size=(n, s, s, 3), dtype=np.uint8)


def test_no_augmentation_is_the_centre_crop():
    imgs = _batch()
    out = augment_batch(imgs, (16, 16), NONE, step_rng(0, 0))
    torch.testing.assert_close(out, center_crops(imgs, (16, 16)))
    assert out.shape == (6, 3, 16, 16) and out.dtype == torch.float32


def test_same_seed_and_step_give_the_same_batch():
    imgs, cfg = _batch(), AugmentConfig(jpeg_probability=0.5)
    a = augment_batch(imgs, (16, 16), cfg, step_rng(3, 7))
    b = augment_batch(imgs, (16, 16), cfg, step_rng(3, 7))
    c = augment_batch(imgs, (16, 16), cfg, step_rng(3, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 255


def test_crop_and_flip_are_windows_of_the_source():
    imgs = _batch(n=16)
    cfg = AugmentConfig(random_crop=True, flip=True, brightness=0, contrast=0, saturation=0)
    out = augment_batch(imgs, (12, 12), cfg, step_rng(0, 1)).permute(0, 2, 3, 1).numpy()
    flipped = 0
    for img, o in zip(imgs, out, strict=True):
        windows = [img[t : t + 12, x : x + 12] for t in range(9) for x in range(9)]
        plain = any(np.array_equal(w, o) for w in windows)
        mirror = any(np.array_equal(w[:, ::-1], o) for w in windows)
        assert plain or mirror
        flipped += mirror and not plain
    assert 0 < flipped < 16


def test_brightness_scales_pixels():
    imgs = np.full((2, 8, 8, 3), 100, np.uint8)
    cfg = AugmentConfig(random_crop=False, flip=False, brightness=0.5, contrast=0, saturation=0)
    out = augment_batch(imgs, (8, 8), cfg, step_rng(1, 1))
    per_image = out.flatten(1)
    assert torch.all(per_image.std(1) < 1e-4)  # a flat image stays flat
    assert torch.all((per_image[:, 0] >= 50) & (per_image[:, 0] <= 150))


def test_jpeg_reencoding_changes_pixels_a_little():
    imgs = _batch(n=2, s=32)
    cfg = AugmentConfig(
        random_crop=False,
        flip=False,
        brightness=0,
        contrast=0,
        saturation=0,
        jpeg_probability=1.0,
        jpeg_quality=(20, 20),
    )
    out = augment_batch(imgs, (32, 32), cfg, step_rng(0, 0))
    ref = center_crops(imgs, (32, 32))
    assert not torch.equal(out, ref)
