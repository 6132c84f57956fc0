"""Schemathesis against the OpenAPI document: every operation, generated requests sent with an
admin key through the ASGI app in process; no 5xx, and every answer is one the document
describes (status code, content type, body schema).

Bounded: a few examples per operation (``MAX_EXAMPLES``), the whole run well under a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs schemathesis")

from _images import png  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from facenet.apps.embedder import Embedder  # noqa: E402
from facenet.serve.app import create_app  # noqa: E402
from facenet.serve.keys import KeyStore  # noqa: E402
from facenet.serve.settings import ServeSettings  # noqa: E402

MAX_EXAMPLES = 25  # per operation and kind of request
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
_KEYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny):
    """The app on a fresh gallery, pre-cropped faces (any decodable upload is one face); its
    lifespan is started by schemathesis's in-process client, once, for the whole module."""
    folder: Path = tmp_path_factory.mktemp("fuzz")
    with KeyStore(folder / "keys.sqlite") as store:
        _KEYS["admin"] = store.create("admin", "fuzz")[1]
    settings_ = ServeSettings(
        gallery=str(folder / "gallery"),
        keys=str(folder / "keys.sqlite"),
        crop="none",
        rate_per_minute=10**6,
        rate_burst=10**6,
    )
    app = create_app(settings_, Embedder(tiny, detector=None, crop="none", ref="tiny"))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def with_photos(drawn):
    """A generated multipart request whose file fields hold real photos (PNG)."""
    case, photo, count = drawn
    if isinstance(case.body, dict):
        for field in ("image", "image_a", "image_b"):
            if field in case.body:
                case.body[field] = photo
        if "images" in case.body:
            case.body["images"] = [photo] * count
        if "names" in case.body and isinstance(case.body["names"], list):
            case.body["names"] = (case.body["names"] * count)[:count] or ["someone"] * count
    return case


@pytest.mark.slow
def test_every_operation_answers_as_documented(api, faces):
    """Positive (valid by the document) and negative (invalid) requests for every operation."""
    headers = {"Authorization": f"Bearer {_KEYS['admin']}"}
    sent: dict[tuple[str, int], int] = {}  # (operation, status) -> requests
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 16  # every route of the document: gallery, jobs and keys included
    photos = st.sampled_from([png(f) for f in faces[:3]])
    for operation in operations:
        strategies = [
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        ]
        if operation.method.upper() == "POST":
            # why: random bytes are never an image: these requests carry real photos, so that the
            # answers with faces (200) are checked against the document too
            strategies.append(
                st.tuples(operation.as_strategy(), photos, st.integers(1, 3)).map(with_photos)
            )
        for strategy in strategies:

            @given(case=strategy)
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def run(case) -> None:
                response = case.call_and_validate(headers=headers, checks=CHECKS)
                key = (case.operation.label, response.status_code)
                sent[key] = sent.get(key, 0) + 1

            try:
                run()
            except Unsatisfiable:
                # why: an operation without parameters or body has no invalid request to make
                assert strategy is strategies[1], operation.label
    print(f"schemathesis: {sum(sent.values())} requests: {sorted(sent.items())}")
    assert {label for label, _ in sent} == {op.label for op in operations}
    answered = {label for label, status in sent if status == 200}
    assert {"POST /v1/embed", "POST /v1/verify", "POST /v1/identify"} <= answered
