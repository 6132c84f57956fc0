"""A harmonic model's probes against a gallery an older model enrolled (SPEC §6) decide with the
thresholds calibrated on such mixed pairs, which the weights file carries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet.apps.embedder import Embedder
from facenet.apps.gallery import FaceRecord, Gallery
from facenet.apps.identify import gallery_operating_point
from facenet.models import create_model
from facenet.models.card import card_of
from facenet.models.loading import ModelFileError, load_weights_file, save_weights

V1_THRESHOLDS = {"accuracy": 1.1, "far_1e-3": 0.7}
V2_THRESHOLDS = {"accuracy": 1.3, "far_1e-3": 0.9}
MIXED = {"accuracy": 1.5, "far_1e-3": 1.2}


def _tiny(seed: int, thresholds: dict[str, float]) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("tiny", input_size=32, width=8)
    card_of(model).set_thresholds(thresholds)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """v1; v2 declared harmonic with v1 with mixed-pair thresholds; v2 without them."""
    tmp = tmp_path_factory.mktemp("harmonic")
    v1 = save_weights(_tiny(1, V1_THRESHOLDS), tmp / "v1.safetensors")
    v1_hash = Embedder.from_ref(str(v1)).fingerprint.weights_hash
    v2 = _tiny(2, V2_THRESHOLDS)
    card_of(v2).compatible_with = (v1_hash,)
    bare = save_weights(v2, tmp / "v2_bare.safetensors")
    card_of(v2).mixed_thresholds = {v1_hash: MIXED}
    return v1, save_weights(v2, tmp / "v2.safetensors"), bare, v1_hash


def test_mixed_thresholds_survive_the_weights_file_and_bad_ones_name_it(models, tmp_path):
    _, v2, bare, v1_hash = models
    assert load_weights_file(v2).card.mixed_thresholds == {v1_hash: MIXED}
    assert load_weights_file(bare).card.mixed_thresholds == {}
    model = _tiny(3, {})
    card_of(model).mixed_thresholds = {v1_hash: {"accuracy": "high"}}  # type: ignore[dict-item]
    with pytest.raises(ModelFileError, match="bad.safetensors: unreadable mixed_thresholds"):
        load_weights_file(save_weights(model, tmp_path / "bad.safetensors"))


def test_probes_of_a_harmonic_model_use_the_mixed_pairs_thresholds(models, tmp_path):
    v1, v2, bare, _ = models
    e1, e2, e_bare = (Embedder.from_ref(str(p)) for p in (v1, v2, bare))
    vec = np.ones((1, e1.embedding_dim), np.float32) / np.sqrt(e1.embedding_dim)
    with Gallery(str(tmp_path / "gallery")) as g:
        g.enroll("ann", [FaceRecord(vec[0], "ann.jpg")], e1.fingerprint, e1.thresholds)
        own = gallery_operating_point(e1, g)
        assert (own.threshold, own.source) == (0.7, "model far_1e-3")
        mixed = gallery_operating_point(e2, g)
        assert (mixed.threshold, mixed.source) == (1.2, "model (mixed pairs) far_1e-3")
        assert gallery_operating_point(e2, g, name="accuracy").threshold == 1.5
        assert gallery_operating_point(e2, g, threshold=0.4).threshold == 0.4  # the user wins
        # declared harmonic but never calibrated on mixed pairs: the gallery's model's, not its own
        fallback = gallery_operating_point(e_bare, g)
        assert (fallback.threshold, fallback.source) == (0.7, "gallery far_1e-3")
    # in its own gallery a harmonic model is a model like any other
    with Gallery(str(tmp_path / "own")) as g:
        g.enroll("ann", [FaceRecord(vec[0], "ann.jpg")], e2.fingerprint, e2.thresholds)
        assert gallery_operating_point(e2, g).threshold == 0.9
