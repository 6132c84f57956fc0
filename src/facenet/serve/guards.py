"""What a request passes before any work is done for it: the body limit, the API key, its scope
and its rate.

The key is checked by ASGI middleware, before the body is read, so a client without a valid key
cannot make the server receive megabytes; the scope and the rate are checked by a route
dependency (``require(scope)``), which also puts the bearer scheme into the OpenAPI document.
Keys never reach a log: only a key's id is ever logged.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facenet.serve.keys import ApiKey, KeyStore
from facenet.serve.problems import ProblemError, send_problem

KEY_SCOPE = "facenet.api_key"  # where the authenticated ApiKey is left in the ASGI scope
bearer = HTTPBearer(auto_error=False, description="an API key: facenet keys create --scope read")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class Authenticate:
    """ASGI middleware: every path but ``public`` needs ``Authorization: Bearer <key>`` with an
    active key (401 otherwise); the key is left in the scope for ``require``."""

    def __init__(self, app: ASGIApp, keys: KeyStore | None, public: Collection[str]) -> None:
        self.app = app
        self.keys = keys
        self.public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.keys is None or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        challenge = {"WWW-Authenticate": 'Bearer realm="facenet"'}
        header = _header(scope, b"authorization") or ""
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            detail = "send an API key as 'Authorization: Bearer <key>' (facenet keys create)"
            await send_problem(send, "unauthorized", detail, challenge)
            return
        key = self.keys.verify(token.strip())
        if key is None:
            await send_problem(send, "unauthorized", "unknown or revoked API key", challenge)
            return
        scope[KEY_SCOPE] = key
        await self.app(scope, receive, send)


class LimitBody:
    """ASGI middleware: a body over ``max_bytes`` is refused with 413, by its declared
    ``Content-Length`` before reading, or as soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is over the limit of {self.max_bytes:,} bytes"
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await send_problem(send, "too_large", detail, {"Connection": "close"})
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ProblemError("too_large", detail)
            return message

        await self.app(scope, counted, send)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets, one per caller: ``burst`` requests at once, refilled at ``per_minute``."""

    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """Spend one token of ``caller``'s; 0 when allowed, else seconds until one is there."""
        now = self.clock()
        with self._lock:
            b = self._buckets.get(caller) or _Bucket(self.burst, now)
            b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
            b.at = now
            self._buckets[caller] = b
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            if len(self._buckets) > 10_000:  # why: callers by address (--no-auth) are unbounded
                self._buckets = {k: v for k, v in self._buckets.items() if v.tokens < self.burst}
            return (1.0 - b.tokens) / self.rate


def require(needed: str) -> Callable[..., object]:
    """A route dependency: the caller's key has scope ``needed`` (403) and is within its rate
    (429 with ``Retry-After``). Returns the ``ApiKey`` (None without authentication)."""

    async def dependency(
        request: Request,
        _: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
    ) -> ApiKey | None:
        state = request.app.state
        key: ApiKey | None = request.scope.get(KEY_SCOPE)
        if state.keys is not None:
            if key is None:  # a route the middleware let through as public: not ours to serve
                raise ProblemError("unauthorized", "an API key is needed")
            if not key.allows(needed):
                raise ProblemError(
                    "forbidden", f"API key {key.id} has scope {key.scope!r}; this needs {needed!r}"
                )
        caller = f"key:{key.id}" if key else f"addr:{request.client.host if request.client else ''}"
        wait = state.limiter.take(caller)
        if wait:
            raise ProblemError(
                "rate_limited",
                f"over {state.limiter.rate * 60:g} requests a minute; retry in {wait:.1f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return key

    return dependency
