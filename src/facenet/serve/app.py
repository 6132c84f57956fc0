"""``create_app(settings)``: the HTTP API, routes thin over ``facenet.serve.service``.

Requests pass, outermost first: metrics (every request counted, problems included) ->
unexpected errors (a generic 500 problem; the trace to the log) -> authentication (401 before
the body is read) -> the body limit (413) -> the route, whose ``require(scope)`` dependency
checks the key's scope (403) and rate (429).

Public without a key: ``/healthz``, ``/readyz`` and the API's description (``/openapi.json``,
``/docs``: what the open-source API looks like is no secret, and the docs page cannot send a key
when it fetches the document), and the web page (``/`` and its files under ``/static``, from
``facenet/serve/static``: it asks for a key and sends it with every API call). Everything else
needs a key: ``read`` to embed, verify, identify, cluster (a background job), read its job,
list and read metrics; ``write`` to enrol and remove.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

from facenet.apps.cluster import DEFAULT_MIN_CLUSTER_SIZE
from facenet.apps.embedder import Embedder
from facenet.apps.gallery import Gallery, ImageInfo, printable
from facenet.apps.thresholds import DEFAULT_MODEL
from facenet.models.loading import check_trained, recorded_model_ref
from facenet.serve import schemas as S
from facenet.serve import service
from facenet.serve.guards import Authenticate, LimitBody, RateLimiter, require
from facenet.serve.jobs import Jobs, cluster_faces
from facenet.serve.key_routes import add_key_routes
from facenet.serve.keys import ApiKey, KeyStore, keys_path
from facenet.serve.metrics import CONTENT_TYPE, RecordRequests
from facenet.serve.problems import Problem, ProblemError, UnexpectedErrors, install_handlers
from facenet.serve.problems import problem_responses as problems
from facenet.serve.service import Service, Upload
from facenet.serve.settings import ServeSettings

PUBLIC = ("/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect")
STATIC = pathlib.Path(__file__).with_name("static")  # the web page: plain HTML, CSS and JS
PAGE = ("/", *(f"/static/{p.name}" for p in sorted(STATIC.glob("*"))))  # public, no key
MAX_NAME = 200  # characters of an upload's file name kept for answers

# the problems each kind of route may answer with (400: a body that cannot be parsed)
_READ = problems(400, 401, 403, 413, 422, 429, 500, 503, 504)
_WRITE = problems(400, 401, 403, 404, 409, 413, 422, 429, 500, 503, 504)


def model_ref(settings: ServeSettings) -> str:
    """The model to serve: ``settings.model``, else the one the gallery was built with (loaded
    by the safe loader and checked against the gallery's weights hash), else the default."""
    if settings.model:
        return settings.model
    try:
        with Gallery(settings.gallery, create=False) as g:
            recorded = g.model
    except Exception:  # noqa: BLE001 - no gallery yet (or unreadable: create_app says so)
        recorded = None
    if recorded is None:
        return DEFAULT_MODEL
    return recorded_model_ref(recorded.ref, f"gallery {settings.gallery}")


def build_embedder(settings: ServeSettings) -> Embedder:
    ref = model_ref(settings)
    check_trained(ref, settings.allow_untrained)
    return Embedder.from_ref(
        ref,
        detector=None if settings.crop == "none" else settings.detector,
        crop=settings.crop,  # type: ignore[arg-type]
        batch_size=settings.max_batch_size,
        device=settings.device,
    )


def create_app(settings: ServeSettings | None = None, embedder: Embedder | None = None) -> FastAPI:
    """The API app for ``settings``.

    Args:
        settings: the server's configuration (``ServeSettings()``: the defaults).
        embedder: the embedder to serve (default: built from ``settings``).

    Raises:
        ValueError: a setting that cannot work; GalleryError: the gallery cannot be opened or
            was built with another model; KeyStoreError: the key store cannot be read.
    """
    settings = settings or ServeSettings()
    settings.check()
    embedder = embedder or build_embedder(settings)
    with Gallery(settings.gallery) as g:  # creates it; refuses another model's gallery now
        g.check_model(embedder.fingerprint)
    keys = None if settings.no_auth else KeyStore(keys_path(settings.keys))
    svc = Service(settings, embedder)
    jobs = Jobs()
    # why: the detector's imports and weights are loaded now, not by the first request (each pool
    # thread then builds its own instance of a named detector, ~15 ms)
    embedder.detector  # noqa: B018

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        jobs.start()
        try:
            yield
        finally:
            await jobs.close()
            await svc.close()
            if keys is not None:
                keys.close()

    app = FastAPI(
        title="facenet",
        summary="FaceNet face embeddings: embed, verify, identify, and a gallery of people",
        version="1",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.service = svc
    app.state.jobs = jobs
    app.state.keys = keys
    app.state.limiter = RateLimiter(settings.rate_per_minute, settings.rate_burst)
    install_handlers(app)
    # why: the last added runs first
    app.add_middleware(LimitBody, max_bytes=settings.max_body_bytes)
    app.add_middleware(Authenticate, keys=keys, public=(*PUBLIC, *PAGE))
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(RecordRequests, metrics=svc.metrics)
    _add_routes(app)
    add_key_routes(app)
    _add_page(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _add_page(app: FastAPI) -> None:
    """The web page at ``/``, its files under ``/static``; left out of the API's description."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the ``Problem`` schema the problem responses refer to."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        found = doc.setdefault("components", {}).setdefault("schemas", {})
        found.update(schema.pop("$defs", {}))
        found["Problem"] = schema
        app.openapi_schema = doc
    return app.openapi_schema


# --------------------------------------------------------------------------- routes


def _svc(request: Request) -> Service:
    return request.app.state.service


Svc = Annotated[Service, Depends(_svc)]
Threshold = Annotated[
    float | None,
    Form(ge=0.0, le=4.0, description="squared-L2 threshold; default: the model's calibrated one"),
]
Far = Annotated[
    float | None,
    Form(gt=0.0, le=1.0, description="decide at the threshold calibrated for this false-accept "
         "rate (e.g. 0.001) instead"),
]  # fmt: skip
PointName = Annotated[
    str | None,
    Form(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.\-]+$",
         description="a calibrated operating point by name ('far_1e-3', 'accuracy'); default: "
         "far_1e-3"),
]  # fmt: skip
FaceNumber = Annotated[
    int | None,
    Form(ge=0, le=10_000, description="compare this face (detector order) instead of the main one"),
]


def _choice(
    threshold: Threshold = None, far: Far = None, operating_point: PointName = None
) -> service.Choice:
    return service.Choice(threshold, far, operating_point)


Decision = Annotated[service.Choice, Depends(_choice)]


async def _uploads(
    files: list[UploadFile], settings: ServeSettings, field: str, most: int | None = None
) -> list[Upload]:
    most = settings.max_images if most is None else most
    if len(files) > most:
        raise ProblemError("too_many_images", f"{len(files)} images; at most {most} per request")
    out = []
    for i, f in enumerate(files):
        name = printable(f.filename or "")[:MAX_NAME] or f"{field}[{i}]"
        out.append(Upload(name, await f.read()))
    return out


def _image_out(i: ImageInfo) -> S.ImageOut:
    return S.ImageOut(
        id=i.id, identity=i.identity, name=i.path, sha256=i.sha256, faces=i.faces,
        added_at=i.added_at,
    )  # fmt: skip


def _add_routes(app: FastAPI) -> None:
    read = [Depends(require("read"))]
    write = [Depends(require("write"))]

    @app.get("/healthz", response_model=S.Health, tags=["health"])
    async def healthz() -> S.Health:
        """The process answers (liveness)."""
        return S.Health(status="ok")

    @app.get("/readyz", response_model=S.Readiness, tags=["health"], responses=problems(503))
    async def readyz(svc: Svc) -> S.Readiness:
        """The model is loaded and the gallery answers (readiness)."""
        if not svc.ready:
            raise ProblemError("not_ready", "the server is starting or stopping")
        identities = await service.gallery_size(svc)
        return S.Readiness(
            status="ready", model=service.describe_model(svc), gallery_identities=identities
        )

    @app.get(
        "/metrics",
        dependencies=read,
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}}, **problems(401, 403, 429)},
        tags=["health"],
    )
    async def metrics(svc: Svc) -> Response:
        """Prometheus metrics: requests, latencies, batch sizes, queue depth."""
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE)

    # why: the face answers are the library's to_dict(), keys it leaves out stay out (no nulls)
    answer = {"dependencies": read, "responses": _READ, "tags": ["faces"],
              "response_model_exclude_unset": True}  # fmt: skip

    @app.post("/v1/embed", response_model=S.EmbedResponse, **answer)
    async def embed(
        svc: Svc, images: Annotated[list[UploadFile], File(description="photos")]
    ) -> dict[str, Any]:
        """Every face of every photo: its box, detector score and embedding
        (``facenet.load().embed(images).to_dict()``); the model is described by ``/readyz``."""
        found = await service.embed_images(svc, await _uploads(images, svc.settings, "images"))
        return found.to_dict()

    @app.post("/v1/verify", response_model=S.VerifyResponse, **answer)
    async def verify(
        svc: Svc,
        image_a: Annotated[UploadFile, File(description="first photo")],
        image_b: Annotated[UploadFile, File(description="second photo")],
        choice: Decision,
        face_a: FaceNumber = None,
        face_b: FaceNumber = None,
    ) -> dict[str, Any]:
        """Are the main faces (largest, most central; or ``face_a``/``face_b``) of two photos
        the same person? (``facenet.load().verify(a, b).to_dict()``)"""
        [a] = await _uploads([image_a], svc.settings, "image_a")
        [b] = await _uploads([image_b], svc.settings, "image_b")
        return (await service.verify_images(svc, a, b, choice, face_a, face_b)).to_dict()

    @app.post("/v1/identify", response_model=S.IdentifyResponse, **answer)
    async def identify(
        svc: Svc,
        image: Annotated[UploadFile, File(description="photo")],
        choice: Decision,
        k: Annotated[int, Form(ge=1, le=50, description="nearest identities per face")] = 5,
    ) -> dict[str, Any]:
        """Who is each face of a photo: the nearest enrolled identities, or unknown
        (``facenet.load().identify(image, gallery, k=k, all_faces=True).to_dict()``)."""
        [upload] = await _uploads([image], svc.settings, "image")
        return (await service.identify_image(svc, upload, choice, k)).to_dict()

    @app.post("/v1/gallery/identities", response_model=S.EnrolResponse, dependencies=write,
              responses=_WRITE, tags=["gallery"])  # fmt: skip
    async def enrol(
        svc: Svc,
        images: Annotated[list[UploadFile], File(description="photos, one person each")],
        names: Annotated[list[str], Form(description="names[i] is who is in images[i]")],
    ) -> S.EnrolResponse:
        """Enrol many people at once: the main face of ``images[i]`` as ``names[i]``. Nothing is
        stored when any image is unreadable, too large or has no face; each identity is stored
        whole or not at all."""
        uploads = await _uploads(images, svc.settings, "images")
        done = await service.enrol(svc, names, uploads)
        return S.EnrolResponse(
            identities=[
                S.EnrolledIdentity(
                    name=e.name,
                    added=e.added,
                    duplicates=[S.DuplicateOut(image=p, identity=i) for p, i in e.duplicates],
                    image_ids=e.image_ids,
                )
                for e in done
            ]
        )

    @app.get("/v1/gallery/identities", response_model=S.IdentityPage, dependencies=read,
             responses=_READ, tags=["gallery"])  # fmt: skip
    async def list_identities(
        svc: Svc,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> S.IdentityPage:
        """Enrolled identities by name, a page at a time."""
        total, page = await service.list_identities(svc, offset, limit)
        return S.IdentityPage(
            total=total,
            offset=offset,
            limit=limit,
            identities=[
                S.IdentityOut(
                    name=i.name, images=i.images, embeddings=i.embeddings, created_at=i.created_at
                )
                for i in page
            ],
        )

    # why: {name:path}, so that a name with a slash ("AC/DC", sent as %2F) is still one name
    @app.delete("/v1/gallery/identities/{name:path}", response_model=S.RemovedIdentity,
                dependencies=write, responses=_WRITE, tags=["gallery"])  # fmt: skip
    async def remove_identity(
        svc: Svc, name: Annotated[str, Path(min_length=1, max_length=400)]
    ) -> S.RemovedIdentity:
        """Remove an identity with every image and embedding of it."""
        removed = await service.remove_identity(svc, name)
        return S.RemovedIdentity(name=name, removed_embeddings=removed)

    @app.get("/v1/gallery/images", response_model=S.ImagePage, dependencies=read,
             responses=_READ | problems(404), tags=["gallery"])  # fmt: skip
    async def list_images(
        svc: Svc,
        identity: Annotated[
            str | None, Query(min_length=1, max_length=400, description="only this identity's")
        ] = None,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> S.ImagePage:
        """Enrolled images by id (all, or one identity's), a page at a time."""
        total, page = await service.list_images(svc, identity, offset, limit)
        return S.ImagePage(
            total=total, offset=offset, limit=limit, images=[_image_out(i) for i in page]
        )

    @app.delete("/v1/gallery/images/{image_id}", response_model=S.RemovedImage,
                dependencies=write, responses=_WRITE, tags=["gallery"])  # fmt: skip
    async def remove_image(
        svc: Svc, image_id: Annotated[int, Path(ge=1, le=2**62)]
    ) -> S.RemovedImage:
        """Remove one enrolled image with its embeddings; an identity left without images is
        removed too (``identity_removed``)."""
        removed = await service.remove_image(svc, image_id)
        return S.RemovedImage(
            image=_image_out(removed.image), identity_removed=removed.identity_removed
        )

    @app.post("/v1/cluster", response_model=S.JobAccepted, status_code=202,
              responses=_READ, tags=["jobs"])  # fmt: skip
    async def cluster(
        request: Request,
        svc: Svc,
        key: Annotated[ApiKey | None, Depends(require("read"))],
        images: Annotated[list[UploadFile], File(description="photos")],
        choice: Decision,
        min_cluster_size: Annotated[
            int, Form(ge=1, le=10_000, description="smaller clusters are left unclustered (-1)")
        ] = DEFAULT_MIN_CLUSTER_SIZE,
    ) -> S.JobAccepted:
        """Group every face of the photos by person, in the background: answered at once with
        the job (202), whose result ``GET /v1/jobs/{id}`` gives when it is done
        (``facenet.load().cluster(images, min_cluster_size=...).to_dict()``). The photos are
        read and their faces found first: a bad photo is answered now and nothing is queued."""
        uploads = await _uploads(images, svc.settings, "images", svc.settings.max_cluster_images)
        op = service.model_point(svc, choice)
        found = await svc.within_timeout(service._all([svc.detect(u) for u in uploads]))
        jobs: Jobs = request.app.state.jobs
        job = jobs.submit(
            key.id if key else None,
            lambda: cluster_faces(svc, jobs, found, op, min_cluster_size),
        )
        url = str(request.url_for("job_status", job_id=job.id).path)
        return S.JobAccepted(job=job.id, status="queued", status_url=url)

    @app.get("/v1/jobs/{job_id}", response_model=S.JobOut, response_model_exclude_unset=True,
             responses=problems(400, 401, 403, 404, 422, 429, 500), tags=["jobs"])  # fmt: skip
    async def job_status(
        request: Request,
        key: Annotated[ApiKey | None, Depends(require("read"))],
        job_id: Annotated[str, Path(min_length=1, max_length=64)],
    ) -> dict[str, Any]:
        """A job of this API key: queued, running, done (with its result) or failed (with its
        problem). Jobs are kept in memory for an hour (the last 100 finished): a restart of the
        server loses them."""
        return request.app.state.jobs.get(job_id, key.id if key else None).to_dict()
