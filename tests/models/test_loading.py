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


def _rewritten(tmp_path, name: str, edit) -> str:
    """A tiny model's weights file whose metadata (and tensors) ``edit(info, state)`` changed."""
    import json

    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = create_model("tiny", embedding_dim=64)
    card_of(model).set_thresholds({"accuracy": 1.1})
    path = save_weights(model, tmp_path / "good.safetensors")
    info, state = read_metadata(path), load_file(str(path))
    edit(info, state)
    out = tmp_path / f"{name}.safetensors"
    save_file(state, str(out), metadata={"facenet": json.dumps(info)})
    return str(out)


@pytest.mark.parametrize(
    "name, edit, says",
    [
        ("nan", lambda i, s: i["thresholds"].update(accuracy=float("nan")), "thresholds"),
        ("negative", lambda i, s: i["thresholds"].update(accuracy=-1.0), "thresholds"),
        ("huge", lambda i, s: i["thresholds"].update(accuracy=1e9), "thresholds"),
        ("std0", lambda i, s: i["spec"].update(std=[0, 0, 0]), "std"),
        ("size0", lambda i, s: i["spec"].update(input_size=[0, 0]), "input_size"),
        ("size_huge", lambda i, s: i["spec"].update(input_size=[20000, 20000]), "input_size"),
        ("crop", lambda i, s: i["spec"].update(crop_fraction=-3), "crop_fraction"),
        ("dim", lambda i, s: i["spec"].update(embedding_dim=32), "64-d"),
        (
            "ints",
            lambda i, s: s.update({k: v.to(torch.int32) for k, v in s.items() if "weight" in k}),
            "another kind of number",
        ),
    ],
)
def test_a_weights_file_with_impossible_values_is_refused_naming_them(tmp_path, name, edit, says):
    """Found by the audit: such files gave NaN distances, 'no face found' or hung (20000 px)."""
    from facenet.models.loading import ModelFileError

    path = _rewritten(tmp_path, name, edit)
    with pytest.raises(ModelFileError, match=f"{name}.safetensors") as e:
        load_model(path)
    assert says in str(e.value)


def test_calibrations_accept_none_threshold_still_loads(tmp_path):
    """calibrate_thresholds returns nextafter(0, -inf) when no distance can be accepted (the
    smallest impostor distance is 0); a run's own file holding it must load."""
    import math

    path = _rewritten(
        tmp_path, "acceptnone", lambda i, s: i["thresholds"].update({"far_1e-3": -5e-324})
    )
    assert card_of(load_model(path)).thresholds["far_1e-3"] == -5e-324
    assert math.copysign(1, -5e-324) < 0


def test_a_path_is_named_as_typed_and_a_device_is_not_a_missing_file(tmp_path, monkeypatch):
    from facenet.models.loading import ModelFileError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^\./resnet_cpu: no such weights file"):
        load_model("./resnet_cpu")
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model("/dev/null")
