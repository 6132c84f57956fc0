"""Fixtures for the HTTP API: a small real setup (the ``tiny`` model with thresholds, a real
gallery and key store in a temporary folder), synthetic face images as PNG bytes, and a tile
detector that finds one face per non-blank square of a row of faces."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="facenet serve needs the 'serve' extra (fastapi)")
pytest.importorskip("httpx", reason="the API tests need httpx (fastapi.testclient)")
pytest.importorskip("multipart", reason="facenet serve needs python-multipart")
pytest.importorskip("prometheus_client", reason="facenet serve needs prometheus-client")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from facenet.apps.embedder import Embedder  # noqa: E402
from facenet.data.synthetic import make_synthetic  # noqa: E402
from facenet.detect.base import Detection  # noqa: E402
from facenet.models.card import card_of  # noqa: E402
from facenet.models.registry import create_model  # noqa: E402
from facenet.preprocess import preprocess  # noqa: E402
from facenet.serve.app import create_app  # noqa: E402
from facenet.serve.keys import KeyStore  # noqa: E402
from facenet.serve.settings import ServeSettings  # noqa: E402

THRESHOLDS = {"accuracy": 0.04, "far_1e-3": 0.03}  # squared L2; see ``tiny``


@pytest.fixture(autouse=True)
def no_user_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Nothing under ~/.cache: produced weights go to a temporary folder."""
    monkeypatch.setenv("FACENET_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("FACENET_KEYS", raising=False)
    monkeypatch.delenv("FACENET_GALLERY", raising=False)


@pytest.fixture(scope="session")
def faces() -> np.ndarray:
    """(12, 40, 40, 3) uint8: 12 synthetic people, one image each."""
    return make_synthetic(12, 1, size=40, seed=3).images


@pytest.fixture(scope="session")
def tiny(faces: np.ndarray):
    """An untrained ``tiny`` whose BatchNorm statistics are those of the synthetic faces (so
    different images get clearly different embeddings: squared distances 0.07..0.5), with
    thresholds below every distance of two different images."""
    torch.manual_seed(0)
    model = create_model("tiny")
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # why: a plain average of the batches seen
    model.train()
    with torch.no_grad():
        model(preprocess(list(faces), model.spec))
    model.eval()
    card_of(model).set_thresholds(THRESHOLDS)
    return model


class TileDetector:
    """A fake detector for a row of square faces: one face per square tile that is not blank
    (a uniform tile has no face), boxes in tile order."""

    name = "tiles"

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        out = []
        for i in range(max(1, w // h)):
            tile = image[:, i * h : (i + 1) * h]
            if tile.size and tile.std() > 2.0:
                x0 = float(i * h)
                marks = np.array(
                    [[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]]
                ) * h + [x0, 0.0]
                out.append(Detection((x0, 0.0, x0 + h, float(h)), marks, 0.99 - 0.01 * i))
        return out

    def detect_batch(self, images) -> list[list[Detection]]:
        return [self.detect(im) for im in images]


@dataclass
class Server:
    """A TestClient on a running app, with one key per scope."""

    client: TestClient
    app: object
    keys: dict[str, str]  # scope -> key text
    gallery: Path
    key_store: Path

    def auth(self, scope: str = "read") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


@pytest.fixture
def make_server(tmp_path: Path, tiny) -> Iterator[Callable[..., Server]]:
    """``make_server(detector=False, **settings)``: a started app (lifespan run) on a fresh
    gallery; pre-cropped faces (``crop="none"``) unless ``detector`` is True."""
    started: list[TestClient] = []

    def make(detector: bool = False, raise_server_exceptions: bool = True, **kw) -> Server:
        gallery = kw.pop("gallery", None) or tmp_path / f"gallery{len(started)}"
        key_store = tmp_path / "keys.sqlite"
        with KeyStore(key_store) as store:
            keys = {scope: store.create(scope, f"test {scope}")[1] for scope in ("read", "write")}
            keys["admin"] = store.create("admin")[1]
        settings = ServeSettings(
            gallery=str(gallery), keys=str(key_store), crop="box" if detector else "none", **kw
        )
        embedder = (
            Embedder(tiny, detector=TileDetector(), crop="box", ref="tiny")
            if detector
            else Embedder(tiny, detector=None, crop="none", ref="tiny")
        )
        app = create_app(settings, embedder)
        client = TestClient(app, raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        started.append(client)
        return Server(client, app, keys, gallery, key_store)

    yield make
    for client in started:
        client.__exit__(None, None, None)


@pytest.fixture
def server(make_server) -> Server:
    return make_server()
