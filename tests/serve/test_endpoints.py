"""Every endpoint through HTTP on a real embedder (``tiny``) and a real gallery: what it answers,
and that the answers agree with the library."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from _images import png

import facenet
from facenet.api import FaceNet
from facenet.apps.gallery import Gallery
from facenet.models.loading import save_weights


def files(field: str, *images: np.ndarray, names: list[str] | None = None) -> list:
    return [
        (field, ((names or [])[i] if names else f"{field}{i}.png", png(im), "image/png"))
        for i, im in enumerate(images)
    ]


def enrol(server, people: dict[str, list[np.ndarray]]):
    upload, names = [], []
    for name, images in people.items():
        for i, im in enumerate(images):
            upload.append(("images", (f"{name}-{i}.png", png(im), "image/png")))
            names.append(name)
    return server.client.post(
        "/v1/gallery/identities", files=upload, data={"names": names}, headers=server.auth("write")
    )


def row(*tiles: np.ndarray) -> np.ndarray:
    """Square images side by side: a photo of several faces for the tile detector."""
    return np.concatenate(tiles, axis=1)


def test_health_and_readiness_need_no_key(server):
    assert server.client.get("/healthz").json() == {"status": "ok"}
    ready = server.client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["gallery_identities"] == 0
    assert body["model"]["name"] == "tiny" and body["model"]["embedding_dim"] == 128


def test_embed_returns_every_face_with_the_libraries_embedding(make_server, faces, tiny):
    server = make_server(detector=True)
    blank = np.full_like(faces[0], 128)
    photo = row(faces[0], blank, faces[1], faces[2])  # three faces and a blank square
    r = server.client.post(
        "/v1/embed", files=files("images", photo, blank, names=["group.png", "empty.png"]),
        headers=server.auth(),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["schema"] == 1 and set(r.json()) == {"schema", "images"}
    group, empty = r.json()["images"]
    assert group["image"] == "group.png" and group["face_chosen_by"] == "all"
    assert empty["image"] == "empty.png" and empty["faces"] == []
    assert empty["error"].startswith("empty.png: no face found")
    boxes = [f["box"] for f in group["faces"]]
    assert boxes == [[0, 0, 40, 40], [80, 0, 120, 40], [120, 0, 160, 40]]
    assert all(f["used"] and f["crop"] == "box" for f in group["faces"])
    # the same faces through the library, one request, no batching: the same vectors
    embedder = server.app.state.service.embedder
    expected = [f.embedding for f in embedder.faces(photo)]
    got = np.array([f["embedding"] for f in group["faces"]], np.float32)
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the Python API's answer for the same images, but for the names (paths there)
    api = FaceNet(embedder).embed([png(photo), png(blank)]).to_dict()
    for got_image, api_image in zip(r.json()["images"], api["images"], strict=True):
        got_image.pop("image"), api_image.pop("image")
        got_image.pop("error", None), api_image.pop("error", None)
        for got_face, api_face in zip(got_image["faces"], api_image["faces"], strict=True):
            np.testing.assert_allclose(
                got_face.pop("embedding"), api_face.pop("embedding"), atol=1e-5
            )
    assert r.json() | {"images": None} == api | {"images": None}


def test_verify_compares_the_main_faces(server, faces):
    same = server.client.post(
        "/v1/verify",
        files=[*files("image_a", faces[0]), *files("image_b", faces[0])],
        headers=server.auth(),
    ).json()
    assert same["same"] is True and same["distance"] < 1e-6
    assert same["threshold"] == 0.03 and same["threshold_source"] == "model far_1e-3"
    assert [i["image"] for i in same["images"]] == ["image_a0.png", "image_b0.png"]
    [face] = same["images"][0]["faces"]
    assert face["box"] == [0, 0, 40, 40] and face["used"] and face["same"] is True
    other = server.client.post(
        "/v1/verify",
        files=[*files("image_a", faces[0]), *files("image_b", faces[1])],
        headers=server.auth(),
    ).json()
    assert other["same"] is False and other["distance"] > 0.03
    given = server.client.post(
        "/v1/verify",
        files=[*files("image_a", faces[0]), *files("image_b", faces[1])],
        data={"threshold": "4"},
        headers=server.auth(),
    ).json()
    assert given["same"] is True and given["threshold_source"] == "request"
    assert given["operating_point"] == "threshold" and given["threshold"] == 4
    assert given["distance"] == pytest.approx(other["distance"], abs=1e-6)


def test_verify_picks_the_main_face_of_a_group_photo(make_server, faces):
    server = make_server(detector=True)
    photo = row(faces[4], faces[0], faces[5])  # the central face is the main one
    r = server.client.post(
        "/v1/verify",
        files=[*files("image_a", photo), *files("image_b", faces[0])],
        headers=server.auth(),
    ).json()
    a, b = r["images"]
    assert len(a["faces"]) == 3 and a["face_chosen_by"] == "main face"
    assert [f["used"] for f in a["faces"]] == [False, True, False]
    assert a["faces"][1]["box"] == [40, 0, 80, 40] and len(b["faces"]) == 1
    assert "distance" not in a["faces"][0] and a["faces"][1]["distance"] == r["distance"]
    embedder = server.app.state.service.embedder  # the library's main faces: the same distance
    ea, eb = embedder.pick(photo).face.embedding, embedder.pick(faces[0]).face.embedding
    assert r["distance"] == pytest.approx(float(((ea - eb) ** 2).sum()), abs=1e-5)


def test_verify_takes_the_clis_choices_as_form_fields(make_server, faces):
    server = make_server(detector=True)
    photo = row(faces[4], faces[0], faces[5])

    def verify(**data):
        return server.client.post(
            "/v1/verify",
            files=[*files("image_a", photo), *files("image_b", faces[5])],
            data={k: str(v) for k, v in data.items()},
            headers=server.auth(),
        )

    chosen = verify(face_a=2).json()
    a = chosen["images"][0]
    assert a["face_chosen_by"] == "chosen" and [f["used"] for f in a["faces"]] == [
        False,
        False,
        True,
    ]
    embedder = server.app.state.service.embedder  # the library's pick of face 2: the same answer
    ea, eb = embedder.pick(photo, face=2).face, embedder.pick(faces[5]).face
    assert ea.box == tuple(a["faces"][2]["box"])
    assert chosen["distance"] == pytest.approx(
        float(((ea.embedding - eb.embedding) ** 2).sum()), abs=1e-5
    )
    main = verify().json()  # the main face (faces[0]) is another person: another distance
    assert abs(main["distance"] - chosen["distance"]) > 1e-3
    missing = verify(face_a=7)
    assert missing.status_code == 422 and missing.json()["code"] == "no_such_face"
    assert "no face 7; 3 face(s) found, numbered 0, 1, 2" in missing.json()["detail"]

    named = verify(operating_point="accuracy").json()
    assert named["operating_point"] == "accuracy" and named["threshold_source"] == "model accuracy"
    by_far = verify(far="0.001").json()
    assert by_far["operating_point"] == "far_1e-3" and by_far["threshold"] == 0.03
    for data in ({"far": "0.5"}, {"operating_point": "eer"}):
        r = verify(**data)
        assert r.status_code == 422 and r.json()["code"] == "no_threshold", data
        assert "form field threshold" in r.json()["detail"] and "--" not in r.json()["detail"]
    assert verify(far="0").status_code == 422  # outside (0, 1]: a validation error


@pytest.mark.parametrize("detector", [False, True])
def test_verify_answers_as_the_python_api_does(make_server, faces, tiny, tmp_path, detector):
    """The HTTP answer is ``facenet.load(...).verify(...).to_dict()`` for the same model and
    images; only the images' names differ (the upload's file name over HTTP, the path there)."""
    server = make_server(detector=detector)
    photo_a = row(faces[4], faces[0], faces[5]) if detector else faces[0]
    paths = []
    for name, image in (("a.png", photo_a), ("b.png", faces[1])):
        (tmp_path / name).write_bytes(png(image))
        paths.append(tmp_path / name)
    r = server.client.post(
        "/v1/verify",
        files=[*files("image_a", photo_a, names=["a.png"]),
               *files("image_b", faces[1], names=["b.png"])],
        headers=server.auth(),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    got = r.json()
    weights = tmp_path / "tiny.safetensors"
    save_weights(tiny, weights)
    fn = facenet.load(
        str(weights),
        detector=server.app.state.service.embedder.detector,  # the tile detector, or None
        crop="box" if detector else "none",
    )
    expected = fn.verify(*paths).to_dict()
    assert [i.pop("image") for i in got["images"]] == ["a.png", "b.png"]
    assert [i.pop("image") for i in expected["images"]] == [str(p) for p in paths]
    assert got == expected


def test_enrol_identify_list_and_remove(server, faces):
    r = enrol(server, {"ada": [faces[0], faces[1]], "grace": [faces[2]], "alan": [faces[3]]})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "identities": [
            {"name": "ada", "added": 2, "duplicates": [], "image_ids": [1, 2]},
            {"name": "grace", "added": 1, "duplicates": [], "image_ids": [3]},
            {"name": "alan", "added": 1, "duplicates": [], "image_ids": [4]},
        ]
    }
    again = enrol(server, {"ada": [faces[0]]}).json()["identities"][0]
    assert again["added"] == 0 and again["image_ids"] == []
    assert again["duplicates"] == [{"image": "ada-0.png", "identity": "ada"}]

    known = server.client.post(
        "/v1/identify", files=files("image", faces[2]), headers=server.auth()
    ).json()
    assert known["schema"] == 1 and known["threshold_source"] == "model far_1e-3"
    [image] = known["images"]
    assert image["image"] == "image0.png" and image["face_chosen_by"] == "all"
    [face] = image["faces"]
    assert face["identity"] == "grace" and face["distance"] < 1e-6 and face["used"]
    assert [m["name"] for m in face["matches"]][0] == "grace" and len(face["matches"]) == 3
    assert face["matches"][0]["photo"] == "grace-0.png"
    stranger = server.client.post(
        "/v1/identify", files=files("image", faces[9]), data={"k": "1"}, headers=server.auth()
    ).json()
    assert stranger["images"][0]["faces"][0]["identity"] == "unknown"
    assert len(stranger["images"][0]["faces"][0]["matches"]) == 1

    page = server.client.get("/v1/gallery/identities?offset=1&limit=1", headers=server.auth())
    assert page.json()["total"] == 3 and page.json()["offset"] == 1
    assert [i["name"] for i in page.json()["identities"]] == ["alan"]  # by name: ada, alan, grace
    everyone = server.client.get("/v1/gallery/identities", headers=server.auth()).json()
    assert {i["name"]: i["images"] for i in everyone["identities"]} == {
        "ada": 2,
        "alan": 1,
        "grace": 1,
    }

    gone = server.client.delete("/v1/gallery/identities/grace", headers=server.auth("write"))
    assert gone.json() == {"name": "grace", "removed_embeddings": 1}
    assert server.client.delete(
        "/v1/gallery/identities/grace", headers=server.auth("write")
    ).status_code == 404  # fmt: skip
    after = server.client.post(
        "/v1/identify", files=files("image", faces[2]), headers=server.auth()
    )
    assert after.json()["images"][0]["faces"][0]["identity"] == "unknown"
    with Gallery(server.gallery) as g:  # what the API says is what the gallery holds
        assert [(i.name, i.images) for i in g.identities()] == [("ada", 2), ("alan", 1)]


def test_images_are_listed_and_removed_one_at_a_time(server, faces):
    enrol(server, {"ada": [faces[0], faces[1]], "grace": [faces[2]]})
    listed = server.client.get("/v1/gallery/images?identity=ada", headers=server.auth()).json()
    assert listed["total"] == 2
    assert [(i["id"], i["identity"], i["name"], i["faces"]) for i in listed["images"]] == [
        (1, "ada", "ada-0.png", 1),
        (2, "ada", "ada-1.png", 1),
    ]
    page = server.client.get("/v1/gallery/images?offset=2&limit=5", headers=server.auth()).json()
    assert page["total"] == 3 and [i["name"] for i in page["images"]] == ["grace-0.png"]
    assert (
        server.client.delete("/v1/gallery/images/1", headers=server.auth("read")).status_code == 403
    )

    gone = server.client.delete("/v1/gallery/images/1", headers=server.auth("write"))
    assert gone.status_code == 200, gone.text
    assert gone.json()["image"]["name"] == "ada-0.png" and not gone.json()["identity_removed"]
    again = server.client.delete("/v1/gallery/images/1", headers=server.auth("write"))
    assert again.status_code == 404 and again.json()["code"] == "not_found"
    assert (
        str(server.gallery) not in again.text
    )  # the server's folders are not the client's business
    # ada's removed photo is no longer in the gallery; her other photo still answers for her
    probe = server.client.post(
        "/v1/identify", files=files("image", faces[0]), headers=server.auth()
    )
    assert probe.json()["images"][0]["faces"][0]["distance"] > 1e-3
    last = server.client.delete("/v1/gallery/images/3", headers=server.auth("write")).json()
    assert last["identity_removed"] and last["image"]["identity"] == "grace"
    unknown = server.client.get("/v1/gallery/images?identity=grace", headers=server.auth())
    assert unknown.status_code == 404
    with Gallery(server.gallery) as g:
        assert [(i.id, i.identity) for i in g.images()] == [(2, "ada")]
        assert [i.name for i in g.identities()] == ["ada"]


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("pymilvus", "milvus_lite")),
    reason="a Milvus gallery needs the 'milvus' extra (pymilvus, milvus-lite)",
)
def test_the_api_answers_the_same_on_a_milvus_lite_gallery(make_server, faces, tmp_path):
    server = make_server(gallery=f"milvus-lite://{tmp_path}/served.db")
    r = enrol(server, {"ada": [faces[0], faces[1]], "grace": [faces[2]]})
    assert r.status_code == 200, r.text
    assert [(i["name"], i["added"]) for i in r.json()["identities"]] == [("ada", 2), ("grace", 1)]
    known = server.client.post(
        "/v1/identify", files=files("image", faces[2]), headers=server.auth()
    )
    [face] = known.json()["images"][0]["faces"]
    assert face["identity"] == "grace" and face["distance"] < 1e-5
    listed = server.client.get("/v1/gallery/images?identity=ada", headers=server.auth()).json()
    assert listed["total"] == 2 and [i["name"] for i in listed["images"]] == [
        "ada-0.png",
        "ada-1.png",
    ]
    first = listed["images"][0]["id"]
    gone = server.client.delete(f"/v1/gallery/images/{first}", headers=server.auth("write"))
    assert gone.status_code == 200 and not gone.json()["identity_removed"]
    removed = server.client.delete("/v1/gallery/identities/grace", headers=server.auth("write"))
    assert removed.json() == {"name": "grace", "removed_embeddings": 1}
    page = server.client.get("/v1/gallery/identities", headers=server.auth()).json()
    assert [(i["name"], i["images"]) for i in page["identities"]] == [("ada", 1)]


def test_identify_answers_every_face_and_an_empty_gallery_knows_nobody(make_server, faces):
    server = make_server(detector=True)
    empty = server.client.post(
        "/v1/identify", files=files("image", faces[0]), headers=server.auth()
    ).json()
    [face] = empty["images"][0]["faces"]
    assert face["identity"] == "unknown" and face["distance"] is None and face["matches"] == []
    enrol(server, {"ada": [faces[0]], "grace": [faces[2]]})
    r = server.client.post(
        "/v1/identify", files=files("image", row(faces[2], faces[7], faces[0])), headers=server.auth()
    ).json()  # fmt: skip
    # why: nearest, not known: a face in a row has its neighbours in its margin, alone it has not
    found = r["images"][0]["faces"]
    assert [f["face_index"] for f in found] == [0, 1, 2]
    assert found[0]["matches"][0]["name"] == "grace"
    assert found[2]["matches"][0]["name"] == "ada"


def test_identity_names_are_data_not_paths(server, faces, tmp_path):
    name = "../../évil/ name"
    assert enrol(server, {name: [faces[0]]}).status_code == 200
    listed = server.client.get("/v1/gallery/identities", headers=server.auth()).json()
    assert [i["name"] for i in listed["identities"]] == [name.strip()]
    assert not (tmp_path / "évil").exists() and not (server.gallery.parent.parent / "évil").exists()
    quoted = "/v1/gallery/identities/" + "..%2F..%2F%C3%A9vil%2F%20name"
    assert server.client.delete(quoted, headers=server.auth("write")).status_code == 200


def test_metrics_count_requests_by_route_and_status_and_batches(server, faces):
    server.client.post(
        "/v1/embed", files=files("images", faces[0], faces[1]), headers=server.auth()
    )
    server.client.get("/v1/gallery/identities?limit=0", headers=server.auth())
    text = server.client.get("/metrics", headers=server.auth()).text
    assert 'facenet_http_requests_total{method="POST",route="/v1/embed",status="200"} 1.0' in text
    assert (
        'facenet_http_requests_total{method="GET",route="/v1/gallery/identities",status="422"} 1.0'
        in text
    )
    assert (
        'facenet_http_request_duration_seconds_count{method="POST",route="/v1/embed"} 1.0' in text
    )
    assert "facenet_batch_size_sum 2.0" in text  # two faces embedded
    assert "facenet_batch_queue_depth 0.0" in text


def test_the_openapi_document_describes_every_route_and_problem(server):
    doc = server.client.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/embed",
        "/v1/verify",
        "/v1/identify",
        "/v1/gallery/identities",
        "/v1/gallery/identities/{name}",
        "/v1/gallery/images",
        "/v1/gallery/images/{image_id}",
        "/v1/keys",
        "/v1/keys/{key_id}",
        "/v1/cluster",
        "/v1/jobs/{job_id}",
    }
    schemas = doc["components"]["schemas"]
    assert {"Problem", "FieldError", "EmbedResponse", "IdentityPage"} <= set(schemas)
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    embed = paths["/v1/embed"]["post"]
    assert embed["security"] == [{"HTTPBearer": []}]
    ok = embed["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/EmbedResponse"}
    for status in ("401", "403", "413", "422", "429", "500", "503", "504"):
        problem = embed["responses"][status]["content"]["application/problem+json"]["schema"]
        assert problem == {"$ref": "#/components/schemas/Problem"}
    assert "security" not in paths["/healthz"]["get"]
    assert "<html" in server.client.get("/docs").text.lower()
