import numpy as np
import pytest
import torch

from facenet.config import AugmentConfig
from facenet.data.augment import augment_batch, center_crops, erase_rectangles, step_rng

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


def test_a_warp_without_rotation_or_zoom_is_the_plain_crop():
    imgs = _batch(n=8, s=24)
    base = dict(random_crop=True, flip=False, brightness=0, contrast=0, saturation=0)
    plain = augment_batch(imgs, (16, 16), AugmentConfig(**base), step_rng(0, 2))
    warped = augment_batch(imgs, (16, 16), AugmentConfig(**base, rotate=1e-9), step_rng(0, 2))
    assert (plain - warped).abs().max() <= 1  # same windows, through cv2.warpAffine


def test_zoom_enlarges_the_face_and_rotation_moves_it():
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, 12:20, 12:20] = 255  # an 8 x 8 bright square in the centre
    base = dict(random_crop=False, flip=False, brightness=0, contrast=0, saturation=0)
    zoomed = augment_batch(img, (32, 32), AugmentConfig(**base, scale=(2.0, 2.0)), step_rng(0, 0))
    assert abs(int((zoomed[0, 0] > 127).sum()) - 16 * 16) <= 2 * 16
    turned = augment_batch(img, (32, 32), AugmentConfig(**base, rotate=45.0), step_rng(0, 0))
    assert not torch.equal(
        turned, augment_batch(img, (32, 32), AugmentConfig(**base), step_rng(0, 0))
    )
    assert abs(int((turned[0, 0] > 127).sum()) - 64) <= 16  # rotated, about the same area


def test_resolution_jitter_blurs_and_grey_removes_colour():
    imgs = _batch(n=4, s=32)
    base = dict(random_crop=False, flip=False, brightness=0, contrast=0, saturation=0)
    sharp = augment_batch(imgs, (32, 32), AugmentConfig(**base), step_rng(0, 0))
    low = AugmentConfig(**base, low_res_probability=1.0, low_res_min=8)
    blurred = augment_batch(imgs, (32, 32), low, step_rng(0, 0))

    def detail(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean()

    assert detail(blurred) < 0.8 * detail(sharp)
    grey = augment_batch(
        imgs, (32, 32), AugmentConfig(**base, grey_probability=1.0), step_rng(0, 0)
    )
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    assert not torch.allclose(sharp[:, 0], sharp[:, 1])


def test_random_erasing_replaces_one_rectangle_per_chosen_image():
    imgs = np.full((64, 32, 32, 3), 128, np.uint8)  # flat grey: erased pixels stand out
    base = dict(random_crop=False, flip=False, brightness=0, contrast=0, saturation=0)
    cfg = AugmentConfig(**base, erase_probability=0.5, erase_area=(0.1, 0.2))
    out = augment_batch(imgs, (32, 32), cfg, step_rng(0, 0))
    changed = (out != 128).any(1)  # (B, H, W)
    erased = changed.flatten(1).any(1)
    assert 16 < int(erased.sum()) < 48  # about half the images
    for mask in changed[erased]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        # one rectangle of 10-20% of the 1,024 pixels (a noise pixel can equal 128 by chance)
        assert 0.1 * 1024 * 0.9 <= int(box) <= 0.2 * 1024 * 1.1
        assert int(mask.sum()) >= 0.95 * int(box)
    assert torch.equal(out, augment_batch(imgs, (32, 32), cfg, step_rng(0, 0)))
    # off by default: the draws for earlier options (and their batches) are unchanged
    plain = AugmentConfig(**base)
    assert torch.equal(
        augment_batch(imgs, (32, 32), plain, step_rng(0, 0)), center_crops(imgs, (32, 32))
    )


def test_random_erasing_rejects_a_bad_area():
    with pytest.raises(ValueError, match="erase_area"):
        erase_rectangles(torch.zeros(1, 3, 8, 8), 1.0, (0.0, 0.5), step_rng(0, 0))
