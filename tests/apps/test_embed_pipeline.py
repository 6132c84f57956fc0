"""The two-stage pipeline (``facenet.utils.prefetched``) and the apps' batched photo path built
on it (``Embedder.embed_files``): same results as one photo at a time, in order, with the next
chunk really detected in a worker thread while this one is embedded. No data needed."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from facenet.apps.embedder import Embedder
from facenet.detect.base import Detection
from facenet.models.registry import create_model
from facenet.utils import prefetched

# five landmarks of a face filling a unit square
MARKS = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])
WAIT_S = 30.0  # a guard against a hang, not a timing: the events below fire at once when it works


def test_prefetched_gives_every_result_in_order():
    assert list(prefetched(lambda x: x * x, [3, 1, 2])) == [9, 1, 4]
    assert list(prefetched(lambda x: x, [])) == []


def test_prefetched_starts_the_next_item_before_the_caller_is_done_with_this_one():
    started = [threading.Event() for _ in range(3)]
    threads: list[str] = []

    def work(i: int) -> int:
        threads.append(threading.current_thread().name)
        started[i].set()
        return i

    for i in prefetched(work, [0, 1, 2], "test-prefetch"):
        if i + 1 < 3:
            # a serial loop would never start item i + 1 while item i is still being used
            assert started[i + 1].wait(WAIT_S), f"item {i + 1} did not start during item {i}"
    assert all(name.startswith("test-prefetch") for name in threads)
    assert threading.current_thread().name not in threads


def test_prefetched_raises_a_failure_where_its_result_is_taken():
    def work(i: int) -> int:
        if i == 1:
            raise ValueError("photo 1 is broken")
        return i

    got = []
    with pytest.raises(ValueError, match="photo 1 is broken"):
        for i in prefetched(work, [0, 1, 2]):
            got.append(i)
    assert got == [0]


def test_prefetched_stopped_early_runs_nothing_past_the_item_already_started():
    done: list[int] = []

    def work(i: int) -> int:
        done.append(i)
        return i

    gen = prefetched(work, list(range(10)))
    assert next(gen) == 0
    gen.close()  # waits for item 1, which had started; item 2 never does
    assert done == [0, 1]


class ThreadRecordingTiles:
    """One face per non-blank square tile of a row, like the service tests' detector; records
    the thread that ran each call and can hold a call until the caller has moved on."""

    name = "tiles"

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.calls = 0
        self.second_call = threading.Event()

    def detect(self, image: np.ndarray) -> list[Detection]:
        h = image.shape[0]
        spread = image.reshape(h, -1, h, 3).std(axis=(0, 2, 3))  # per square tile
        return [
            Detection((i * h, 0.0, (i + 1) * h, h), MARKS * h + [i * h, 0.0], 0.99 - 0.01 * i)
            for i in np.flatnonzero(spread > 2.0).tolist()
        ]

    def detect_batch(self, images):
        self.threads.append(threading.current_thread().name)
        self.calls += 1
        if self.calls == 2:
            self.second_call.set()
        return [self.detect(im) for im in images]


def _photo(rng: np.random.Generator, faces: int) -> np.ndarray:
    """A row of 48-px tiles: ``faces`` textured tiles, then one blank tile (no face)."""
    tiles = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(faces)]
    tiles.append(np.full((48, 48, 3), 128, np.uint8))
    return np.concatenate(tiles, axis=1)


@pytest.fixture()
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k in range(7):
        p = tmp_path / f"photo{k}.png"
        Image.fromarray(_photo(rng, faces=k % 3)).save(p)
        paths.append(p)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    paths.insert(3, broken)
    return paths


def test_embed_files_equals_one_photo_at_a_time_and_detects_in_a_worker_thread(photos):
    torch.manual_seed(0)
    detector = ThreadRecordingTiles()
    embedder = Embedder(create_model("tiny"), detector=detector)
    embedded_during_prefetch = []
    original = embedder._embed_faces

    def embed_and_watch(faces):
        original(faces)
        # the worker must be free to detect chunk 2 while chunk 1 is embedded
        embedded_during_prefetch.append(detector.second_call.wait(WAIT_S))

    embedder._embed_faces = embed_and_watch  # type: ignore[method-assign]
    results = list(embedder.embed_files(photos, chunk=3))
    assert embedded_during_prefetch[0], "chunk 2 was not detected while chunk 1 was embedded"
    assert detector.calls == 3
    assert threading.current_thread().name not in detector.threads

    assert [r.path for r in results] == [str(p) for p in photos]
    one_by_one = Embedder(embedder.model, detector=ThreadRecordingTiles())
    for r, p in zip(results, photos, strict=True):
        if p.name == "broken.jpg":
            assert r.error and not r.faces
            continue
        assert r.error is None
        alone = one_by_one.faces(np.asarray(Image.open(p).convert("RGB")), str(p))
        assert len(r.faces) == len(alone) == int(p.stem[-1]) % 3
        for a, b in zip(r.faces, alone, strict=True):
            assert a.box == b.box
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)


def test_embed_files_keeps_only_each_photos_main_face_when_asked(photos):
    embedder = Embedder(create_model("tiny"), detector=ThreadRecordingTiles())
    every = list(embedder.embed_files(photos, chunk=2))
    main = list(embedder.embed_files(photos, subject_only=True, chunk=2))
    for a, b in zip(every, main, strict=True):
        assert len(b.faces) == min(1, len(a.faces))
