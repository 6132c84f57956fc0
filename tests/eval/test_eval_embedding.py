"""Embedding pipeline: crops, flips, degradations, cache behaviour, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from facenet.data.images import load_image
from facenet.data.transforms import center_crop, resize
from facenet.eval.embedding import (
    EmbeddingError,
    EmbeddingStats,
    degrade,
    embed_paths,
    model_identity,
)
from facenet.preprocess import preprocess


def image_paths(root):
    return sorted(p for p in root.glob("*/*") if p.suffix in (".png", ".jpg"))


def manual_embedding(model, path, fraction=0.6, flip=False):
    crop = resize(center_crop(load_image(path), fraction), model.spec.input_size)
    if flip:
        crop = crop[:, ::-1].copy()
    with torch.no_grad():
        return model(preprocess([crop], model.spec, framed=True)).numpy()[0]


def test_center_crop_embeddings_match_manual_pipeline(mini_lfw, tiny_model):
    paths = image_paths(mini_lfw[0])[:5]
    emb = embed_paths(tiny_model, paths, batch_size=2)
    assert emb.shape == (5, 128) and emb.dtype == np.float32
    for p, e in zip(paths, emb, strict=True):
        np.testing.assert_allclose(e, manual_embedding(tiny_model, p), atol=1e-5)


def test_flip_mean_and_concat(mini_lfw, tiny_model):
    p = image_paths(mini_lfw[0])[0]
    a, b = manual_embedding(tiny_model, p), manual_embedding(tiny_model, p, flip=True)
    mean = embed_paths(tiny_model, [p], flip=True)[0]
    expect = (a + b) / np.linalg.norm(a + b)
    np.testing.assert_allclose(mean, expect, atol=1e-5)
    concat = embed_paths(tiny_model, [p], flip=True, flip_mode="concat")[0]
    np.testing.assert_allclose(concat, np.r_[a, b] / np.sqrt(2), atol=1e-5)
    assert np.linalg.norm(concat) == pytest.approx(1.0, abs=1e-5)


def test_cache_hits_misses_and_invalidation(mini_lfw, tiny_model, tmp_path):
    paths = image_paths(mini_lfw[0])[:6]
    s1, s2, s3 = EmbeddingStats(), EmbeddingStats(), EmbeddingStats()
    e1 = embed_paths(tiny_model, paths + paths[:2], cache_dir=tmp_path, stats=s1)
    assert s1.n_images == 6 and s1.n_computed == 6 and s1.n_cached == 0
    e2 = embed_paths(tiny_model, paths, cache_dir=tmp_path, stats=s2)
    assert s2.n_computed == 0 and s2.n_cached == 6
    np.testing.assert_array_equal(e1[:6], e2)
    np.testing.assert_array_equal(e1[6:], e1[:2])  # duplicates share a row
    # other preprocessing -> another cache file, computed afresh
    embed_paths(tiny_model, paths, cache_dir=tmp_path, flip=True, stats=s3)
    assert s3.n_computed == 6 and s3.cache_file != s1.cache_file
    # other weights -> other identity
    other = type(tiny_model)(tiny_model.spec)
    assert model_identity(other) != model_identity(tiny_model)
    # a touched file is recomputed
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    s4 = EmbeddingStats()
    embed_paths(tiny_model, paths, cache_dir=tmp_path, stats=s4)
    assert s4.n_computed == 1


def test_corrupt_cache_is_recomputed(mini_lfw, tiny_model, tmp_path):
    paths = image_paths(mini_lfw[0])[:2]
    s = EmbeddingStats()
    embed_paths(tiny_model, paths, cache_dir=tmp_path, stats=s)
    with open(s.cache_file, "wb") as f:
        f.write(b"not an npz")
    s2 = EmbeddingStats()
    embed_paths(tiny_model, paths, cache_dir=tmp_path, stats=s2)
    assert s2.n_computed == 2


def test_broken_images_are_listed_and_batches_continue(mini_lfw, tiny_model, tmp_path):
    good = image_paths(mini_lfw[0])[:3]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    missing = tmp_path / "missing.jpg"
    with pytest.raises(EmbeddingError) as e:
        embed_paths(tiny_model, [good[0], bad, good[1], missing], batch_size=2)
    assert str(bad) in str(e.value) and str(missing) in str(e.value)
    assert set(e.value.failures) == {str(bad), str(missing)}
    s = EmbeddingStats()
    emb = embed_paths(tiny_model, [good[0], bad, good[1]], on_error="nan", stats=s)
    assert np.isnan(emb[1]).all() and np.isfinite(emb[[0, 2]]).all() and s.n_computed == 2


def test_degradations():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert degrade(crop, None) is crop
    j10, j90 = degrade(crop, "jpeg:10"), degrade(crop, "jpeg:90")
    assert j10.shape == crop.shape and j10.dtype == np.uint8
    err = lambda x: np.abs(x.astype(float) - crop).mean()  # noqa: E731
    assert err(j10) > err(j90) > 0
    s8, s64 = degrade(crop, "size:8"), degrade(crop, "size:64")
    assert s8.shape == crop.shape and err(s8) > err(s64)
    flat = np.full((32, 32, 3), 77, np.uint8)
    assert np.array_equal(degrade(flat, "size:8"), flat)
    for bad in ("jpeg:0", "jpeg:x", "blur:3", "size:0"):
        with pytest.raises(ValueError):
            degrade(crop, bad)


def test_bad_arguments(tiny_model, mini_lfw):
    p = image_paths(mini_lfw[0])[:1]
    with pytest.raises(ValueError, match="flip_mode"):
        embed_paths(tiny_model, p, flip_mode="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="align"):
        embed_paths(tiny_model, p, align="eyes")
    with pytest.raises(ValueError, match="degradation"):
        embed_paths(tiny_model, p, degradation="blur:2")


def test_box_mode_frames_faces_as_the_model_was_trained(mini_lfw, tiny_model):
    # a pre-aligned crop is used whole for a standard model and centre-cropped to the spec's
    # crop_fraction for a model trained on centre crops of such faces
    import dataclasses

    paths = image_paths(mini_lfw[0])[:2]
    whole = embed_paths(tiny_model, paths, align="box")
    for p, e in zip(paths, whole, strict=True):
        np.testing.assert_allclose(e, manual_embedding(tiny_model, p, fraction=1.0), atol=1e-5)
    tiny_model.spec = dataclasses.replace(tiny_model.spec, crop_fraction=0.8)
    try:
        framed = embed_paths(tiny_model, paths, align="box")
        for p, e in zip(paths, framed, strict=True):
            np.testing.assert_allclose(e, manual_embedding(tiny_model, p, fraction=0.8), atol=1e-5)
    finally:
        tiny_model.spec = dataclasses.replace(tiny_model.spec, crop_fraction=1.0)


def test_the_pipelined_crop_step_may_run_torch_modules_while_the_network_is_built(
    mini_lfw, tiny_model
):
    """An on-the-fly aligner runs a detector's modules in the crop worker thread while the main
    thread embeds; the inference copy (folding traces the model with torch.fx, which patches
    nn.Module.__call__ for every thread) must be built before the worker starts."""
    detector = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()

    def aligner(image):
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            for _ in range(30):  # a busy detector, so its calls overlap the main thread's work
                detector(x)
        return resize(center_crop(image, 0.6), (96, 96))

    root, _ = mini_lfw
    paths = image_paths(root)
    from facenet.eval.embedding import TorchEmbedder

    chunked = embed_paths(TorchEmbedder(tiny_model, align="box", aligner=aligner), paths,
                          batch_size=4, align="box", aligner=aligner, aligner_name="busy")  # fmt: skip
    whole = embed_paths(tiny_model, paths, batch_size=64, align="box", aligner=aligner,
                        aligner_name="busy")  # fmt: skip
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
