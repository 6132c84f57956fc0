"""API keys with scopes, stored hashed in a SQLite file.

A key is ``fnk_<id>_<secret>``: ``id`` (12 hex digits) names it in listings, logs and
``facenet keys revoke``; ``secret`` is 32 random bytes (URL-safe base64). Only the SHA-256 of the
secret is stored: a high-entropy token needs no slow hash (nothing to brute-force), and the
comparison is constant-time. The key itself is shown once, when it is created.

Scopes nest: ``read`` (embed, verify, identify, list, metrics) < ``write`` (enrol, remove) <
``admin`` (key management, when it is offered over HTTP).

Writes are SQLite transactions with ``synchronous=FULL`` (durable before they return; a crash
leaves the store with or without the whole change), and the file is created readable by its
owner only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from facenet.utils import immediate_transaction

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[str, ...] = ("read", "write", "admin")
DEFAULT_KEYS = "facenet-keys.sqlite"
PREFIX = "fnk_"
_KEY = re.compile(r"^fnk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""


class KeyStoreError(Exception):
    """A key-store operation that cannot be done; ``str(e)`` says why."""


@dataclass(frozen=True)
class ApiKey:
    """A key as stored (never its secret)."""

    id: str
    name: str
    scope: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, needed: str) -> bool:
        """Whether this key's scope covers ``needed`` (read < write < admin)."""
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


def keys_path(value: str | os.PathLike | None = None) -> Path:
    """The key store: ``value``, else ``$FACENET_KEYS``, else ``./facenet-keys.sqlite``."""
    return Path(value or os.environ.get("FACENET_KEYS") or DEFAULT_KEYS)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class KeyStore:
    """The API keys of a server, in one SQLite file (created on first use).

    Safe to share between threads: one connection, used under a lock.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise KeyStoreError(f"{self.path}: is a folder, not a key store")
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # why: key hashes are not secrets, but nobody else needs to read who has keys
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA synchronous = FULL")
            with self._transaction():
                self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise KeyStoreError(f"{self.path}: not a readable key store ({e})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate_transaction(self._db) as db:
            yield db

    # ------------------------------------------------------------------ writes

    def create(self, scope: str, name: str = "") -> tuple[ApiKey, str]:
        """A new key: its record and the key text (shown to the user once, stored nowhere)."""
        if scope not in SCOPES:
            raise KeyStoreError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
        name = " ".join(str(name).split())[:100]
        if any(not ch.isprintable() for ch in name):
            raise KeyStoreError("a key name must be printable text")
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
        now = time.time()
        with self._transaction() as db:
            while True:
                key_id = secrets.token_hex(6)
                if db.execute("SELECT 1 FROM keys WHERE id = ?", (key_id,)).fetchone() is None:
                    break
            db.execute(
                "INSERT INTO keys (id, name, scope, secret_sha256, created_at) VALUES (?,?,?,?,?)",
                (key_id, name, scope, _digest(secret), now),
            )
        return ApiKey(key_id, name, scope, now), f"{PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by id (or by the whole key); it stops working at its next request."""
        match = _KEY.match(key_id)
        key_id = match.group(1) if match else key_id
        with self._transaction() as db:
            row = db.execute("SELECT revoked_at FROM keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise KeyStoreError(f"no key with id {key_id!r} in {self.path} (facenet keys list)")
            if row[0] is None:
                db.execute("UPDATE keys SET revoked_at = ? WHERE id = ?", (time.time(), key_id))
        return next(k for k in self.list() if k.id == key_id)

    # ------------------------------------------------------------------ reads

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, scope, created_at, revoked_at FROM keys ORDER BY created_at, id"
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def active_count(self) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT COUNT(*) FROM keys WHERE revoked_at IS NULL").fetchone()[0]
            )

    def verify(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or None (malformed, unknown, wrong secret or revoked)."""
        match = _KEY.match(key)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, scope, created_at, revoked_at, secret_sha256 FROM keys"
                " WHERE id = ?",
                (key_id,),
            ).fetchone()
        if row is None:
            return None
        if not hmac.compare_digest(_digest(secret), row[5]) or row[4] is not None:
            return None
        return ApiKey(*row[:5])
