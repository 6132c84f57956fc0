"""``/v1/keys``: API keys managed over HTTP by a key with admin scope (what ``facenet keys``
does on the server's machine). A new key's text is in the answer that creates it and nowhere
else: the store keeps only its hash."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request
from pydantic import BaseModel, Field

from facenet.serve.guards import require
from facenet.serve.keys import SCOPES, ApiKey, KeyStore, KeyStoreError
from facenet.serve.problems import ProblemError
from facenet.serve.problems import problem_responses as problems

_ADMIN = problems(400, 401, 403, 404, 409, 413, 422, 429, 500)


class KeyOut(BaseModel):
    id: str = Field(description="the key's public id (the part after 'fn_', before '_')")
    name: str
    scope: str = Field(description="read, write or admin")
    created_at: float
    revoked_at: float | None = Field(description="Unix time it was revoked; null: active")


class KeyRequest(BaseModel):
    scope: str = Field(description="read (answers), write (+ gallery changes), admin (+ keys)")
    name: str = Field("", max_length=100, description="what the key is for, shown in listings")


class CreatedKey(BaseModel):
    key: KeyOut
    secret: str = Field(description="the API key; shown only in this answer, stored hashed")


class KeyList(BaseModel):
    keys: list[KeyOut]


def _out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        scope=key.scope,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


def _store(request: Request) -> KeyStore:
    keys: KeyStore | None = request.app.state.keys
    if keys is None:
        raise ProblemError("conflict", "the server runs with --no-auth: it has no API keys")
    return keys


Store = Annotated[KeyStore, Depends(_store)]


def add_key_routes(app: FastAPI) -> None:
    admin = [Depends(require("admin"))]

    # why: plain def routes: the key store's SQLite calls run in FastAPI's thread pool
    @app.get("/v1/keys", response_model=KeyList, dependencies=admin, responses=_ADMIN,
             tags=["keys"])  # fmt: skip
    def list_keys(keys: Store) -> KeyList:
        """Every API key, revoked ones included, oldest first (never a secret)."""
        return KeyList(keys=[_out(k) for k in keys.list()])

    @app.post("/v1/keys", response_model=CreatedKey, status_code=201, dependencies=admin,
              responses=_ADMIN, tags=["keys"])  # fmt: skip
    def create_key(keys: Store, body: KeyRequest) -> CreatedKey:
        """A new API key. Its text is in this answer only: keep it."""
        if body.scope not in SCOPES:
            raise ProblemError(
                "validation_error", f"scope must be one of {', '.join(SCOPES)}, not {body.scope!r}"
            )
        try:
            key, secret = keys.create(body.scope, body.name)
        except KeyStoreError as e:
            raise ProblemError("validation_error", str(e)) from None
        return CreatedKey(key=_out(key), secret=secret)

    @app.delete("/v1/keys/{key_id}", response_model=KeyOut, dependencies=admin,
                responses=_ADMIN, tags=["keys"])  # fmt: skip
    def revoke_key(
        keys: Store, key_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^\w+$")]
    ) -> KeyOut:
        """Revoke a key by id: it stops working at its next request (revoking twice is fine)."""
        try:
            return _out(keys.revoke(key_id))
        except KeyStoreError:  # why: its message names the store's file; the client gets the id
            raise ProblemError("not_found", f"no API key with id {key_id!r}") from None
