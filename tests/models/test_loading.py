import pytest
import torch

from facenet.models import create_model, list_models
from facenet.models.card import card_of
from facenet.models.loading import load_model, read_metadata, save_weights


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError, match="tiny"):
        create_model("no_such_model")
    assert "tiny" in list_models()


def test_weights_file_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny", embedding_dim=64).eval()
    card_of(model).set_thresholds({"accuracy": 1.1})
    path = save_weights(model, tmp_path / "w.safetensors", extra={"source": "test"})
    meta = read_metadata(path)
    assert meta["model"] == "tiny" and meta["model_kwargs"] == {"embedding_dim": 64}
    assert meta["source"] == "test"
    again = load_model(str(path))
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert card_of(again).thresholds == {"accuracy": 1.1}
    assert again.spec == model.spec


def test_embeddings_are_unit_vectors():
    out = create_model("tiny").eval()(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))


def test_spec_framing_round_trips_and_older_files_read_as_the_standard_crop(tmp_path):
    import dataclasses

    from facenet.models import ModelSpec, create_model
    from facenet.models.loading import load_weights_file, save_weights

    model = create_model("tiny")
    model.spec = dataclasses.replace(model.spec, crop_fraction=0.75)
    assert (
        load_weights_file(save_weights(model, tmp_path / "w.safetensors")).spec.crop_fraction
        == 0.75
    )
    old = model.spec.to_dict()
    del old["crop_fraction"]  # written before the field existed
    assert ModelSpec.from_dict(old).crop_fraction == 1.0


def test_embedder_margin_follows_the_model_framing():
    import dataclasses

    from facenet.apps.embedder import Embedder
    from facenet.models import create_model
    from facenet.preprocess import MARGIN_FRACTION, model_margin_fraction

    model = create_model("tiny")
    assert Embedder(model, detector=None, crop="none").margin_fraction == MARGIN_FRACTION
    # the box fills 0.8 of a standard crop; a model trained on its centre 8/9 sees it fill 0.9
    model.spec = dataclasses.replace(model.spec, crop_fraction=8 / 9)
    assert abs(model_margin_fraction(model.spec) - 0.1) < 1e-9
    assert abs(Embedder(model, detector=None, crop="none").margin_fraction - 0.1) < 1e-9
    assert Embedder(model, detector=None, crop="none", margin_fraction=0.3).margin_fraction == 0.3
