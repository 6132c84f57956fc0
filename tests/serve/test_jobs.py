"""Clustering as a background job: ``POST /v1/cluster`` answers 202 with a job,
``GET /v1/jobs/{id}`` its status and, when done, the library's ``cluster(...).to_dict()``."""

from __future__ import annotations

import time

import numpy as np
from _images import png

from facenet.api import FaceNet
from facenet.serve import jobs as jobs_module


def files(*images: np.ndarray) -> list:
    return [("images", (f"photo{i}.png", png(im), "image/png")) for i, im in enumerate(images)]


def row(*tiles: np.ndarray) -> np.ndarray:
    return np.concatenate(tiles, axis=1)


def wait(server, url: str, scope: str = "read") -> dict:
    for _ in range(400):
        r = server.client.get(url, headers=server.auth(scope))
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("done", "failed"):
            return r.json()
        time.sleep(0.02)
    raise AssertionError(f"job not finished: {r.json()}")


def test_a_job_answers_as_the_python_api_clusters(make_server, faces):
    server = make_server(detector=True)
    blank = np.full_like(faces[0], 128)
    photos = [row(faces[0], faces[1]), row(faces[1], blank, faces[0]), faces[0], blank, faces[2]]
    r = server.client.post(
        "/v1/cluster", files=files(*photos), data={"min_cluster_size": "2"}, headers=server.auth()
    )
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert (
        accepted["status"] == "queued" and accepted["status_url"] == f"/v1/jobs/{accepted['job']}"
    )
    job = wait(server, accepted["status_url"])
    assert job["status"] == "done", job
    assert job["job"] == accepted["job"] and job["finished"] >= job["created"]
    assert "error" not in job
    embedder = server.app.state.service.embedder
    expected = FaceNet(embedder).cluster([png(p) for p in photos], min_cluster_size=2).to_dict()
    got = job["result"]
    for image in (*got["images"], *expected["images"]):
        image.pop("image"), image.pop("error", None)
    assert got == expected
    labels = [f["cluster"] for im in got["images"] for f in im["faces"]]
    assert len(labels) == 6 and labels.count(0) >= 2  # one cluster at least; the blank none


def test_a_bad_image_is_refused_and_nothing_is_queued(server, faces):
    bad = [("images", ("broken.png", b"not an image", "image/png"))]
    r = server.client.post("/v1/cluster", files=files(faces[0]) + bad, headers=server.auth())
    assert r.status_code == 422 and r.json()["code"] == "image_corrupt"
    assert server.app.state.jobs._jobs == {}


def test_too_many_images_for_a_job(make_server, faces):
    server = make_server(max_cluster_images=2)
    r = server.client.post("/v1/cluster", files=files(*faces[:3]), headers=server.auth())
    assert r.status_code == 413 and r.json()["code"] == "too_many_images"
    r = server.client.post("/v1/cluster", files=files(*faces[:2]), headers=server.auth())
    assert r.status_code == 202


def test_a_job_is_its_keys_only_and_unknown_jobs_are_404(server, faces):
    r = server.client.post("/v1/cluster", files=files(*faces[:3]), headers=server.auth("read"))
    url = r.json()["status_url"]
    assert wait(server, url, "read")["status"] == "done"
    other = server.client.get(url, headers=server.auth("write"))
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    unknown = server.client.get("/v1/jobs/nosuchjob", headers=server.auth())
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert server.client.get(url).status_code == 401


def test_a_failing_job_reports_a_problem(server, faces, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("clustering broke")

    monkeypatch.setattr(jobs_module, "cluster_embeddings", boom)
    r = server.client.post("/v1/cluster", files=files(*faces[:3]), headers=server.auth())
    assert r.status_code == 202
    job = wait(server, r.json()["status_url"])
    assert job["status"] == "failed" and "result" not in job
    assert job["error"]["code"] == "internal" and job["error"]["status"] == 500
    assert "clustering broke" not in job["error"]["detail"]


def test_finished_jobs_are_forgotten(faces):
    jobs = jobs_module.Jobs(keep=1, keep_s=10.0)
    now = [100.0]
    jobs.clock = lambda: now[0]
    a = jobs_module.Job("a", None, 0.0, None, "done", finished=100.0)
    b = jobs_module.Job("b", None, 0.0, None, "done", finished=101.0)
    c = jobs_module.Job("c", None, 0.0, None, "queued")
    jobs._jobs = {"a": a, "b": b, "c": c}
    jobs._forget()
    assert list(jobs._jobs) == ["b", "c"]  # the last `keep` finished ones, and pending ones
    now[0] = 112.0
    jobs._forget()
    assert list(jobs._jobs) == ["c"]
