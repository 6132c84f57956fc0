"""One preprocessing path: every embedder frames, resizes and normalises a face the same way."""

import dataclasses

import numpy as np
import pytest
import torch

from facenet.apps.embedder import Embedder
from facenet.data.transforms import center_crop, resize
from facenet.eval.embedding import TorchEmbedder, embed_paths
from facenet.models import create_model
from facenet.models.inference import combine_flips, embed_faces, inference_network
from facenet.preprocess import ModelSpec, frame, normalize, preprocess
from facenet.train.validate import embed_images


@pytest.fixture
def framed_model():
    """A tiny model trained (say) on the centre 8/9 of standard crops."""
    torch.manual_seed(0)
    model = create_model("tiny").eval()
    model.spec = dataclasses.replace(model.spec, crop_fraction=8 / 9)
    return model


def _standard_crop(seed: int = 0, side: int = 72) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_preprocess_is_frame_resize_normalise_by_hand(framed_model):
    spec = framed_model.spec
    crop = _standard_crop()
    by_hand = resize(center_crop(crop, 8 / 9), spec.input_size)  # 64 px centre, then 32 px
    x = torch.from_numpy(by_hand).permute(2, 0, 1)[None].float()
    expected = (x - 127.5) / 128.0
    torch.testing.assert_close(preprocess([crop], spec), expected, rtol=0, atol=0)
    torch.testing.assert_close(normalize(x, spec), expected, rtol=0, atol=0)
    assert frame(crop, spec).shape == (32, 32, 3)


def test_per_image_normalisation_is_sandbergs_prewhiten():
    spec = ModelSpec("x", (4, 4), normalization="per_image")
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    x = preprocess([img], spec, framed=True).numpy()[0]
    v = img.astype(np.float64)
    want = (v - v.mean()) / max(v.std(), 1 / np.sqrt(v.size))
    np.testing.assert_allclose(x, want.transpose(2, 0, 1), atol=1e-5)


def test_array_fast_path_equals_the_per_image_path(framed_model):
    spec = dataclasses.replace(framed_model.spec, crop_fraction=1.0)
    batch = np.stack([_standard_crop(i, 32) for i in range(5)])
    torch.testing.assert_close(
        preprocess(batch, spec), preprocess(list(batch), spec), rtol=0, atol=0
    )


def test_every_embedder_gives_a_standard_crop_the_same_embedding(framed_model, tmp_path):
    """The applications (a pre-cropped photo), facenet eval (an aligned folder) and the engine
    itself agree to the bit on the same standard face crop (all run the inference copy of the
    model, batch norm folded; the model itself within the folding's 1e-4)."""
    from PIL import Image

    crops = [_standard_crop(i) for i in range(3)]
    paths = []
    for i, c in enumerate(crops):
        paths.append(tmp_path / f"face{i}.png")
        Image.fromarray(c).save(paths[-1])
    network = inference_network(framed_model)
    engine = embed_faces(network, crops, channels_last=True).numpy()
    assert np.abs(embed_faces(framed_model, crops).numpy() - engine).max() <= 1e-4

    apps = Embedder(framed_model, detector=None, crop="none")
    by_apps = np.stack([r.faces[0].embedding for r in apps.embed_files(paths)])
    by_eval = embed_paths(framed_model, paths, align="box")
    by_eval_class = TorchEmbedder(framed_model, align="box")
    by_eval_crops = by_eval_class.embed_crops([by_eval_class.crop(c) for c in crops])
    for other in (by_apps, by_eval, by_eval_crops):
        np.testing.assert_array_equal(other, engine)


def test_validation_embeds_cached_faces_through_the_same_engine(framed_model):
    """Training validation's central windows of cached faces = the engine on those windows."""
    rng = np.random.default_rng(1)
    cached = rng.integers(0, 256, (6, 37, 37, 3), dtype=np.uint8)  # stored size 37, input 32
    got = embed_images(framed_model, cached, (32, 32), torch.device("cpu"), batch_size=4)
    windows = np.ascontiguousarray(cached[:, 2:34, 2:34])
    want = embed_faces(framed_model, windows, framed=True, batch_size=4)
    torch.testing.assert_close(got, torch.nn.functional.normalize(want, dim=1), rtol=0, atol=0)
    flipped = embed_images(framed_model, cached, (32, 32), torch.device("cpu"), 4, flip=True)
    mirror = embed_faces(
        framed_model, np.ascontiguousarray(windows[:, :, ::-1]), framed=True, batch_size=4
    )
    both = torch.nn.functional.normalize(want + mirror, dim=1)
    torch.testing.assert_close(flipped, both, rtol=0, atol=1e-6)


def test_flip_combinations_stay_unit_length(framed_model):
    pairs = embed_faces(framed_model, [_standard_crop(i) for i in range(4)], flip=True)
    assert pairs.shape == (4, 2, 128)
    for mode, dim in (("mean", 128), ("concat", 256)):
        out = combine_flips(pairs, mode)
        assert out.shape == (4, dim)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="flip_mode"):
        combine_flips(pairs, "max")


def test_the_engine_restores_training_mode_and_handles_no_faces(framed_model):
    framed_model.train()
    assert embed_faces(framed_model, []).shape == (0, 128)
    assert framed_model.training


def test_a_non_square_model_sees_a_window_of_the_square_crop_never_a_squash():
    """NNS2 (140x116) trained on random windows of square cached faces is validated on their
    centre window; eval and the apps must frame a standard crop the same way."""
    rng = np.random.default_rng(0)
    spec = dataclasses.replace(ModelSpec(name="x", input_size=(140, 116)), crop_fraction=140 / 160)
    crop = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
    # the centre 140x116 window of the 160 px crop, exactly what training validation cuts
    window = crop[10:150, 22:138]
    np.testing.assert_array_equal(frame(crop, spec), window)
    # a square crop already at the model's margin (framed): its centre window of the aspect
    square = crop[10:150, 10:150]
    got = preprocess([square], spec, framed=True)
    want = preprocess([square[:, 12:128]], spec, framed=True)
    torch.testing.assert_close(got, want)
    # square models are framed as before
    sq = dataclasses.replace(ModelSpec(name="y", input_size=(96, 96)), crop_fraction=96 / 108)
    np.testing.assert_array_equal(frame(crop[:108, :108], sq), crop[6:102, 6:102])


def test_a_read_only_batch_is_taken_without_a_warning(tmp_path):
    import warnings

    from facenet.preprocess import ModelSpec, preprocess

    spec = ModelSpec(name="t", input_size=(8, 8), crop_fraction=1.0)
    data = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", data)
    faces = np.load(tmp_path / "faces.npy", mmap_mode="r")  # as training's face cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = preprocess(faces, spec, framed=True)
    torch.testing.assert_close(out, preprocess(data, spec, framed=True))
