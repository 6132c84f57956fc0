import pytest
import torch

from facenet.models import create_model, list_models
from facenet.models.loading import load_model, read_metadata, save_weights


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError, match="tiny"):
        create_model("no_such_model")
    assert "tiny" in list_models()


def test_weights_file_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny", embedding_dim=64).eval()
    model.thresholds = {"accuracy": 1.1}
    path = save_weights(model, tmp_path / "w.safetensors", extra={"source": "test"})
    meta = read_metadata(path)
    assert meta["model"] == "tiny" and meta["model_kwargs"] == {"embedding_dim": 64}
    assert meta["source"] == "test"
    again = load_model(str(path))
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert again.thresholds == {"accuracy": 1.1}
    assert again.spec == model.spec


def test_embeddings_are_unit_vectors():
    out = create_model("tiny").eval()(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
