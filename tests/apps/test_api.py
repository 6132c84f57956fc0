"""The Python API (``facenet.load``): any image input, the one result schema, one operating
point for every answer, and the same answer as the CLI. Data-free: a tiny model saved with
thresholds, images that already are face crops."""

import json

import numpy as np
import pytest
from PIL import Image

import facenet
from facenet.cli import main
from facenet.models import create_model
from facenet.models.card import card_of
from facenet.models.loading import save_weights
from facenet.utils import dumps_json

THRESHOLDS = {"accuracy": 0.9, "far_1e-3": 0.4}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = create_model("tiny")
    card_of(model).set_thresholds(THRESHOLDS)
    return str(save_weights(model, tmp_path_factory.mktemp("m") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def fn(weights):
    return facenet.load(weights, detector=None, crop="none")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Three different 48x48 'faces' as PNG files (lossless: every input form decodes alike)."""
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 48, dtype=np.float64)
    images = [
        rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
        np.stack([np.tile(ramp, (48, 1))] * 3, axis=2).astype(np.uint8),
        np.pad(np.full((16, 16, 3), 250, np.uint8), ((16, 16), (16, 16), (0, 0))),
    ]
    out = []
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"f{i}.png")
        out.append(folder / f"f{i}.png")
    return out


def test_every_input_form_gives_the_same_embedding(fn, pictures):
    path = pictures[0]
    array = np.asarray(Image.open(path).convert("RGB"))
    forms = [path, str(path), path.read_bytes(), Image.open(path), array]
    result = fn.embed(forms)
    vectors = [image.faces[0].embedding for image in result.images]
    for v in vectors[1:]:  # one batch: rows may differ in the last float bit
        np.testing.assert_allclose(v, vectors[0], rtol=0, atol=1e-6)
    assert [i.image for i in result.images][:2] == [str(path)] * 2
    assert result.images[2].image == "<input 2>"
    grey = fn.embed(array[..., 0]).images[0].faces[0]
    assert grey.embedding.shape == vectors[0].shape


def test_a_bad_input_is_named_and_the_rest_answered(fn, pictures):
    result = fn.embed([b"not an image", pictures[1], np.zeros((4, 4), np.float32)])
    bad, good, wrong = result.images
    assert bad.faces == () and "not an image" in bad.error and "<input 0>" in bad.error
    assert good.error is None and len(good.faces) == 1
    assert "uint8" in wrong.error
    text = dumps_json(result.to_dict())  # strict JSON: no NaN or Infinity
    assert json.loads(text)["images"][1]["faces"][0]["crop"] == "none"


def test_many_images_are_embedded_in_the_pipeline_as_each_alone_would_be(fn, pictures, monkeypatch):
    """A long mixed list (files, bytes, arrays, PIL images, bad inputs) gives, in order, what
    each input gives alone; the decoding ran in the pipeline's worker threads."""
    import threading

    import facenet.api as api

    inputs = []
    for k in range(40):
        path = pictures[k % 3]
        inputs.append([path, path.read_bytes(), np.asarray(Image.open(path)), b"junk"][k % 4])
    decoded_in: set[str] = set()
    as_array = api._as_array

    def recording(image, index):
        decoded_in.add(threading.current_thread().name)
        return as_array(image, index)

    monkeypatch.setattr(api, "_as_array", recording)
    together = fn.embed(inputs).images
    assert decoded_in and threading.current_thread().name not in decoded_in
    alone = [fn.embed([x]).images[0] for x in inputs]
    pil = fn.embed([Image.open(pictures[k % 3]) for k in range(40)]).images  # one worker
    for k, (a, b) in enumerate(zip(together, alone, strict=True)):
        assert (a.error is None) == (b.error is None) == (k % 4 != 3)
        assert a.image == (str(inputs[k]) if k % 4 == 0 else f"<input {k}>")
        if a.error is None:  # batched against alone: the last float bit at most
            np.testing.assert_allclose(a.faces[0].embedding, b.faces[0].embedding, atol=1e-6)
            np.testing.assert_allclose(a.faces[0].embedding, pil[k].faces[0].embedding, atol=1e-6)


def test_a_pil_image_is_read_as_its_file_would_be(fn, pictures, tmp_path):
    """EXIF orientation, 16-bit greyscale and a truncated file behave for an opened PIL image as
    for its path: the same embedding, or this input's error while the rest is answered."""
    src = Image.open(pictures[1])
    rotated = tmp_path / "exif6.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    src.transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif, quality=100)
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.asarray(src.convert("L"), np.uint16) * 257).save(grey16)
    jpeg = tmp_path / "full.jpg"
    src.resize((480, 480)).save(jpeg, quality=95)  # a scan long enough to cut inside
    blob = jpeg.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(blob[: len(blob) * 2 // 3])
    for path in (rotated, grey16):
        by_path, by_pil = fn.embed([path, Image.open(path)]).images
        np.testing.assert_array_equal(by_path.faces[0].embedding, by_pil.faces[0].embedding)
    cut, good = fn.embed([Image.open(tmp_path / "cut.jpg"), memoryview(jpeg.read_bytes())]).images
    assert cut.faces == () and "truncated" in cut.error and "<input 0>" in cut.error
    assert good.error is None and len(good.faces) == 1
    assert len(fn.embed(memoryview(jpeg.read_bytes())).images) == 1


def test_one_operating_point_for_verify_identify_and_cluster(fn, pictures, tmp_path):
    verdict = fn.verify(pictures[0], pictures[0])
    assert verdict.same and verdict.distance < 1e-9
    assert verdict.operating_point.name == "far_1e-3"
    assert verdict.operating_point.threshold == THRESHOLDS["far_1e-3"]
    gallery = tmp_path / "g"
    fn.enroll(gallery, "ann", [pictures[0]])
    who = fn.identify(pictures[0], gallery)
    clusters = fn.cluster(pictures, min_cluster_size=1)
    ops = {verdict.operating_point, who.operating_point, clusters.operating_point}
    assert len(ops) == 1
    assert fn.verify(pictures[0], pictures[1], operating_point="accuracy").operating_point == (
        fn.operating_point(name="accuracy")
    )


def test_the_api_and_the_cli_give_one_answer(fn, weights, pictures, capsys):
    a, b = pictures[0], pictures[1]
    api = fn.verify(a, b).to_dict()
    code = main(["verify", str(a), str(b), "--model", weights, "--crop", "none", "--json"])
    cli = json.loads(capsys.readouterr().out)
    assert cli == api
    assert code == (0 if api["same"] else 1)


def test_enrol_identify_and_re_enrol(fn, pictures, tmp_path):
    gallery = tmp_path / "g"
    report = fn.enroll(gallery, "ann", [pictures[0], b"junk"])
    assert report.added == 1 and len(report.skipped) == 1
    again = fn.enroll(gallery, "ann", [pictures[0]])
    assert again.added == 0 and len(again.duplicates) == 1  # a no-op that says so
    known = fn.identify(pictures[0], gallery)
    (face,) = known.faces
    assert known.all_known and face.identity == "ann" and face.matches[0].name == "ann"
    stranger = fn.identify(pictures[2], gallery, threshold=1e-6)
    assert not stranger.all_known and stranger.faces[0].identity == "unknown"
    d = stranger.to_dict()
    assert (
        d["operating_point"] == "threshold" and d["images"][0]["faces"][0]["identity"] == "unknown"
    )


def test_cluster_groups_identical_faces(fn, pictures):
    apart = fn.verify(pictures[0], pictures[1]).distance
    assert apart > 0
    result = fn.cluster([pictures[0], pictures[0], pictures[1]], threshold=apart / 2,
                        min_cluster_size=1)  # fmt: skip
    assert len(result.labels) == 3
    assert result.labels[0] == result.labels[1] != result.labels[2]
    assert [f["cluster"] for i in result.to_dict()["images"] for f in i["faces"]] == list(
        result.labels
    )


def test_untrained_weights_are_refused_unless_allowed(capsys, pictures):
    with pytest.raises(ValueError, match="without weights"):
        facenet.load("tiny", detector=None, crop="none")
    assert facenet.load("tiny", detector=None, crop="none", allow_untrained=True)
    a = str(pictures[0])
    code = main(["verify", a, a, "--model", "tiny", "--crop", "none", "--threshold", "1"])
    assert code == 2 and "without weights" in capsys.readouterr().err
    code = main(["verify", a, a, "--model", "tiny", "--crop", "none", "--threshold", "1",
                 "--allow-untrained"])  # fmt: skip
    assert code == 0


@pytest.mark.parametrize(
    "kwargs, error, says",
    [
        ({"model": 123}, TypeError, "got int"),
        ({"model": None}, TypeError, "got NoneType"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"detector": "bogus"}, ValueError, "unknown detector 'bogus'"),
    ],
)
def test_load_says_what_is_wrong_with_its_arguments_at_once(weights, kwargs, error, says):
    with pytest.raises(error, match=says):
        facenet.load(**{"model": weights, "crop": "none", "detector": None, **kwargs})


def test_numpy_integers_are_integers(fn, pictures, tmp_path):
    import numpy as np

    fn.enroll(tmp_path / "g", "ann", [pictures[0]])
    assert fn.identify(pictures[0], tmp_path / "g", k=np.int64(2)).faces


@pytest.mark.parametrize("k", [0, -1, "3", True])
def test_identify_refuses_a_k_that_is_not_a_positive_integer(fn, pictures, tmp_path, k):
    fn.enroll(tmp_path / "g", "ann", [pictures[0]])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        fn.identify(pictures[1], tmp_path / "g", k=k)


def test_threshold_messages_and_sources_speak_python_not_cli_flags(fn, pictures, tmp_path):
    with pytest.raises(ValueError, match=r"^threshold=7 is outside \[0, 4\]"):
        fn.verify(pictures[0], pictures[1], threshold=7.0)
    with pytest.raises(ValueError, match=r"no operating point 'nope'") as e:
        fn.verify(pictures[0], pictures[1], operating_point="nope")
    assert "pass threshold=T or another operating_point=NAME" in str(e.value)
    with pytest.raises(ValueError, match=r"FAR=1e-09.*pass threshold=T$"):
        fn.operating_point(far=1e-9)
    gallery = tmp_path / "g"
    fn.enroll(gallery, "ann", [pictures[0]])
    with pytest.raises(ValueError, match="operating_point=NAME") as e:
        fn.identify(pictures[0], gallery, operating_point="nope")
    assert "--" not in str(e.value)
    given = fn.verify(pictures[0], pictures[1], threshold=0.5).operating_point
    assert given.source == "threshold argument" and given.threshold == 0.5
