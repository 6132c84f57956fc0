"""Every error is an RFC 9457 problem-details body (``application/problem+json``).

``{"type", "title", "status", "detail", "code"}``: ``code`` is the stable, machine-readable name
of the problem (``no_face``, ``rate_limited``, ...); ``detail`` says what happened to this
request for a person. Validation errors add ``errors`` (where and what, never the input back).
An unexpected exception gives a generic ``internal`` body; its trace goes to the server log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("facenet.serve")

MEDIA_TYPE = "application/problem+json"
# why: RFC 9457 wants a URI per problem type; a tag URI (RFC 4151) names it without pretending
# there is a page to fetch.
TYPE_PREFIX = "tag:facenet,2025:problem/"

# code -> (HTTP status, title)
CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "Bad request"),
    "unauthorized": (401, "Missing or invalid API key"),
    "forbidden": (403, "The API key lacks the scope this needs"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "conflict": (409, "Conflicts with the server's state"),
    "too_large": (413, "Request body too large"),
    "image_too_large": (413, "Image has too many pixels"),
    "too_many_images": (413, "Too many images in one request"),
    "too_many_faces": (413, "Too many faces in one image"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "validation_error": (422, "The request is not valid"),
    "image_corrupt": (422, "Image cannot be read"),
    "no_face": (422, "No face found"),
    "no_such_face": (422, "No face with that number"),
    "no_threshold": (422, "No decision threshold"),
    "rate_limited": (429, "Too many requests"),
    "internal": (500, "Internal server error"),
    "overloaded": (503, "Server overloaded"),
    "not_ready": (503, "Server not ready"),
    "timeout": (504, "Request took too long"),
}
_BY_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
_BY_STATUS |= {415: "unsupported_media_type", 422: "validation_error", 500: "internal"}


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: ('body', 'images', 0), ('query', 'limit')")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem-details body."""

    type: str = Field(description="URI naming the problem type")
    title: str = Field(description="short summary of the problem type")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request")
    code: str = Field(description="stable machine-readable name: " + ", ".join(CODES))
    errors: list[FieldError] | None = Field(default=None, description="validation errors")


class ProblemError(HTTPException):
    """An error the API answers with a problem body; ``code`` is a key of ``CODES``.

    why: an ``HTTPException`` so that FastAPI lets it through while it parses a body (a body
    that grows over the limit mid-upload raises this from ``receive``).
    """

    def __init__(
        self,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        status, _ = CODES[code]
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.code = code
        self.errors = errors


def problem_body(
    code: str, detail: str, status: int | None = None, errors: list | None = None
) -> dict[str, Any]:
    default_status, title = CODES.get(code, (500, "Error"))
    body = {
        "type": TYPE_PREFIX + code,
        "title": title,
        "status": status or default_status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(
    code: str,
    detail: str,
    status: int | None = None,
    headers: dict[str, str] | None = None,
    errors: list | None = None,
) -> JSONResponse:
    body = problem_body(code, detail, status, errors)
    return JSONResponse(body, body["status"], headers=headers, media_type=MEDIA_TYPE)


async def send_problem(send: Send, code: str, detail: str, headers: dict | None = None) -> None:
    """Answer with a problem from plain ASGI code (middleware, before any route runs)."""
    body = json.dumps(problem_body(code, detail)).encode()
    raw = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": CODES[code][0], "headers": raw})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- handlers


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """``ProblemError`` and Starlette's own HTTP errors (404 route, 405 method, 400 body)."""
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, ProblemError):
        return problem_response(exc.code, str(exc.detail), None, exc.headers, exc.errors)
    code = _BY_STATUS.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
    detail = exc.detail if isinstance(exc.detail, str) else CODES[code][1]
    return problem_response(code, detail, exc.status_code, exc.headers)


async def validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation: 422 ``validation_error`` naming each field (no input echo:
    it may be megabytes of an image)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    return problem_response("validation_error", where or "invalid request", errors=errors)


def install_handlers(app: Any) -> None:
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)


class UnexpectedErrors:
    """ASGI middleware: an exception no handler took becomes a generic 500 problem; the trace
    goes to the server log only, once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ProblemError as e:  # raised outside a route (e.g. while a middleware reads)
            if started:
                raise
            await send_problem(send, e.code, str(e.detail), e.headers)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await send_problem(send, "internal", "an unexpected error; it has been logged")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of a route's problem statuses."""
    described = {s: t for s, t in (CODES[c] for c in CODES)}
    return {
        status: {
            "description": described.get(status, "Error"),
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
