"""The model card: one typed object on the model for its name, kwargs, thresholds, version and
provenance."""

import copy

from torch import nn

from facenet.models import create_model
from facenet.models.card import ModelCard, card_of
from facenet.models.loading import load_model, save_weights


def test_the_registry_writes_the_card_and_a_saved_model_reads_it_back(tmp_path):
    model = create_model("tiny", embedding_dim=64)
    assert model.card == ModelCard(name="tiny", kwargs={"embedding_dim": 64})
    card_of(model).set_thresholds({"accuracy": 1, "far_1e-3": "0.5"})
    assert model.card.thresholds == {"accuracy": 1.0, "far_1e-3": 0.5}
    path = save_weights(model, tmp_path / "m.safetensors")
    again = load_model(str(path))
    assert (again.card.name, again.card.kwargs) == ("tiny", {"embedding_dim": 64})
    assert again.card.thresholds == {"accuracy": 1.0, "far_1e-3": 0.5}
    assert again.card.version == ""  # a file without a published name


def test_a_copy_of_a_model_has_its_own_card():
    """The weight average (a deep copy) records thresholds without touching the trained model."""
    model = create_model("tiny")
    average = copy.deepcopy(model)
    card_of(average).set_thresholds({"accuracy": 1.2})
    assert card_of(model).thresholds == {}


def test_a_module_built_elsewhere_gets_a_card_naming_its_class():
    card = card_of(nn.Linear(2, 2))
    assert card.name == "Linear" and card.thresholds == {} and card.version == ""


def test_the_bundled_model_card_names_its_version_and_provenance():
    model = load_model("resnet_cpu:lfw-celeba")
    card = card_of(model)
    assert card.version == "resnet_cpu:lfw-celeba"
    assert card.name == "resnet_cpu" and card.kwargs["input_size"] == 96
    assert set(card.thresholds) >= {"accuracy", "far_1e-3"}
    assert "training" in card.provenance
