"""The embedded gallery backend (the default): SQLite for identities, images and provenance,
FAISS for search.

Layout of a gallery folder::

    gallery.sqlite   identities, images, embeddings (float32 blobs) and who made each embedding
    index.faiss      a search index over the embeddings: a cache, rebuilt from SQLite when
                     missing, unreadable or stale

Crash safety. Every enrolment or removal is one SQLite transaction (rollback journal,
``synchronous=FULL``), so a process killed at any instant leaves the gallery either with or
without that whole enrolment. The index file is written to a temporary file and renamed into
place; it records the ``generation`` of the database it was built from, and a reader compares
that with the database's generation: an index behind the database is brought up to date (new
rows appended when nothing was removed since, otherwise rebuilt from SQLite). The database is the
only source of truth; losing ``index.faiss`` costs a rebuild, never data.

The index file is bound to its database: SQLite records a random ``gallery_id`` (made with the
database) and the SHA-256 of the last index file written for it. A file whose checksum or gallery
id does not match (another gallery's index, a database deleted and re-created, a file edited or
with one bit flipped) is never searched: the index is rebuilt from SQLite.

Identity names are printable text: control and format characters (newlines, bidi overrides) are
refused, so a name cannot spoof a line of ``gallery list``. A photo is stored once: enrolling a
photo whose bytes (SHA-256) and face are already in the gallery reports it and stores nothing.

Search. The index (``facenet.apps.gallery_index``: the kinds, how they are built, the file
format) ranks unit embeddings by inner product. Its kind is the gallery's choice, kept in the
``meta`` table (``index_kind``, ``index_nlist``, ``index_nprobe``; set by ``Gallery(folder,
index=..., nlist=..., nprobe=...)`` or ``facenet gallery rebuild --index``): ``auto`` (the
default) is exact up to ``approximate_above`` embeddings and IVF-Flat above; ``flat``, ``hnsw``,
``ivf_flat``, ``sq8`` and ``ivf_sq8`` (int8, a quarter of the bytes) are used whatever the size.
Identification takes the nearest embeddings, keeps each identity's closest one, and calls the
probe **unknown** when even the nearest identity is farther than the open-set threshold.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facenet.apps.gallery_base import (
    Duplicate,
    EnrollResult,
    FaceRecord,
    Gallery,
    GalleryError,
    IdentityInfo,
    ImageInfo,
    Match,
    RemovedImage,
    UnknownIdentityError,
    UnknownImageError,
    check_identity_name,
    check_schema_version,
    register_backend,
    unit_rows,
)
from facenet.apps.gallery_index import (
    DEFAULT_APPROXIMATE_ABOVE,
    INDEX_NAME,
    IndexSpec,
    build_index,
    configure_search,
    faiss_threads,
    index_kind,
    read_index_file,
    write_index_file,
)
from facenet.fingerprint import ModelFingerprint
from facenet.utils import immediate_transaction

SCHEMA_VERSION = 1
DB_NAME = "gallery.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    sha256 TEXT,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    face_index INTEGER NOT NULL,
    box TEXT,
    vector BLOB NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    weights_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_identity ON embeddings(identity_id);
CREATE INDEX IF NOT EXISTS embeddings_image ON embeddings(image_id);
CREATE INDEX IF NOT EXISTS images_identity ON images(identity_id);
CREATE INDEX IF NOT EXISTS images_sha256 ON images(sha256);
"""


@register_backend("", "sqlite")
class SqliteGallery(Gallery):
    """A gallery folder; open with ``Gallery(directory)`` (created on first write); the
    location ``sqlite:///path/to/folder`` names it too.

    Args:
        directory: the gallery folder.
        approximate_above: embeddings count above which the ``auto`` index is approximate.
        create: create the folder and database if missing; otherwise a missing gallery raises.
        index: the index kind to use from now on (``auto``, ``flat``, ``sq8``, ``hnsw``,
            ``ivf_flat``, ``ivf_sq8``), stored in the gallery; None keeps the stored choice (default ``auto``).
            Giving ``index`` resets ``nlist``/``nprobe`` not given to their size-based defaults.
        nlist: IVF cells (None: ``4 * sqrt(N)``); stored.
        nprobe: IVF cells searched per query (None: ``max(16, nlist / 64)``); stored.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        approximate_above: int = DEFAULT_APPROXIMATE_ABOVE,
        create: bool = True,
        index: str | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
    ) -> None:
        self.location = str(directory)
        # why: "sqlite:///abs/folder" and "sqlite://rel/folder" name a folder too
        self.directory = Path(self.location.removeprefix("sqlite://"))
        self.approximate_above = approximate_above
        db_path = self.directory / DB_NAME
        if self.directory.exists() and not self.directory.is_dir():
            raise GalleryError(f"{self.directory}: is a file, not a gallery folder")
        if not db_path.exists():
            if not create:
                raise GalleryError(
                    f"no gallery at {self.directory} (no {DB_NAME}); enrol someone first: "
                    f"facenet gallery enroll NAME IMAGES... --gallery {self.directory}"
                )
            self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA foreign_keys = ON")
            # why: FULL makes every commit durable before it returns; a crash never tears a write.
            self._db.execute("PRAGMA synchronous = FULL")
            with self._transaction():
                self._check_ours(db_path)
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('removal_generation', '0')")
                # why: binds index files to this database; a re-created database gets a new id
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('gallery_id', ?)", (uuid.uuid4().hex,)
                )
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise GalleryError(
                    f"{db_path}: locked by another process for over 30 s (a long write, or a "
                    "program holding it open); try again when it is done"
                ) from None
            raise GalleryError(f"{db_path}: not a readable gallery database ({e})") from None
        if index is not None or nlist is not None or nprobe is not None:
            self.set_index(index, nlist, nprobe)
        self._index: Any = None
        self._index_header: dict[str, Any] | None = None

    def _check_ours(self, db_path: Path) -> None:
        """``GalleryError`` when the database file holds someone else's tables (never write a
        gallery into it) or a newer schema than this version reads."""
        tables = {
            row[0]
            for row in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        if tables and "meta" not in tables:
            raise GalleryError(
                f"{db_path}: an SQLite database that is not a facenet gallery (tables: "
                f"{', '.join(sorted(tables)[:5])}); give the gallery a folder of its own"
            )
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            check_schema_version(str(db_path), row[0] if row else None, SCHEMA_VERSION)

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        """Counts committed changes; the index file records the one it was built from."""
        return int(self._meta("generation") or 0)

    @property
    def index_spec(self) -> IndexSpec:
        """The index choice stored in this gallery (``auto`` when none was made)."""

        def number(key: str) -> int | None:
            raw = self._meta(key)
            return int(raw) if raw else None

        return IndexSpec(
            self._meta("index_kind") or "auto",
            number("index_nlist"),
            number("index_nprobe"),
            self.approximate_above,
        )

    def set_index(
        self, kind: str | None = None, nlist: int | None = None, nprobe: int | None = None
    ) -> IndexSpec:
        """Store an index choice (see the class); the next search builds the index it names
        (``nprobe`` alone changes no index). Raises ``GalleryError`` for a bad choice."""
        old = self.index_spec
        try:
            spec = IndexSpec(
                old.kind if kind is None else kind.lower(),
                nlist if nlist is not None or kind is not None else old.nlist,
                nprobe if nprobe is not None or kind is not None else old.nprobe,
                self.approximate_above,
            )
        except (TypeError, ValueError) as e:
            raise GalleryError(f"{self.directory}: {e}") from None
        if spec != old:
            try:
                with self._transaction():
                    for key, value in spec.to_meta().items():
                        self._set_meta(key, value)
            except sqlite3.OperationalError as e:  # a read-only or locked database
                raise GalleryError(
                    f"{self.directory}: cannot store the index choice ({e})"
                ) from None
        return spec

    # ------------------------------------------------------------------ writes

    def enroll(
        self,
        name: str,
        faces: Sequence[FaceRecord],
        model: ModelFingerprint,
        thresholds: dict[str, float] | None = None,
    ) -> EnrollResult:
        """Add ``faces`` to identity ``name`` (created if new) in one transaction.

        A face whose photo (``FaceRecord.sha256``) and face index are already in the gallery, or
        appear twice in ``faces``, is not stored again; it is listed in the result.

        Returns:
            ``EnrollResult``: faces added and duplicates skipped.

        Raises:
            GalleryError: a name ``check_identity_name`` refuses, or no faces;
            IncompatibleModelError: another model's gallery.
        """
        name = check_identity_name(name)
        if not faces:
            raise GalleryError(f"nothing to enrol for {name!r}: no usable face")
        vectors = unit_rows(np.stack([f.embedding for f in faces]), model.embedding_dim)
        now = time.time()
        with self._transaction() as db:
            # why: checked inside the write lock, so two first enrolments cannot mix models.
            self.check_model(model, enrolling=True)
            new, duplicates = self._new_faces(faces, vectors)
            if not new:
                return EnrollResult(0, duplicates)
            if self.model is None:
                self._set_meta("model", json.dumps(model.to_dict()))
                self._set_meta("thresholds", json.dumps(thresholds or {}))
            row = db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            if row is None:
                identity_id = db.execute(
                    "INSERT INTO identities (name, created_at) VALUES (?, ?)", (name, now)
                ).lastrowid
            else:
                identity_id = row[0]
            image_ids: dict[tuple[str, str | None], int] = {}
            for face, vec in new:
                key = (face.path, face.sha256)
                if key not in image_ids:
                    image_ids[key] = db.execute(
                        "INSERT INTO images (identity_id, path, sha256, added_at) VALUES (?,?,?,?)",
                        (identity_id, str(face.path), face.sha256, now),
                    ).lastrowid
                db.execute(
                    "INSERT INTO embeddings (image_id, identity_id, face_index, box, vector,"
                    " model_name, model_version, weights_hash) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        image_ids[key],
                        identity_id,
                        face.face_index,
                        None if face.box is None else json.dumps([float(v) for v in face.box]),
                        vec.astype("<f4").tobytes(),
                        model.name,
                        model.version,
                        model.weights_hash,
                    ),
                )
            self._set_meta("generation", str(self.generation + 1))
        return EnrollResult(len(new), duplicates, list(image_ids.values()))

    def _new_faces(
        self, faces: Sequence[FaceRecord], vectors: np.ndarray
    ) -> tuple[list[tuple[FaceRecord, np.ndarray]], list[Duplicate]]:
        """Split ``faces`` into those to store and those the gallery (or the batch) already has."""
        new: list[tuple[FaceRecord, np.ndarray]] = []
        duplicates: list[Duplicate] = []
        seen: dict[tuple[str, int], str] = {}
        for face, vec in zip(faces, vectors, strict=True):
            if face.sha256 is None:
                new.append((face, vec))
                continue
            key = (face.sha256, int(face.face_index))
            if key in seen:
                duplicates.append(Duplicate(str(face.path), "(this enrolment)", seen[key]))
                continue
            row = self._db.execute(
                "SELECT i.name, m.path FROM images m"
                " JOIN embeddings e ON e.image_id = m.id JOIN identities i ON i.id = m.identity_id"
                " WHERE m.sha256 = ? AND e.face_index = ? LIMIT 1",
                key,
            ).fetchone()
            if row is not None:
                duplicates.append(Duplicate(str(face.path), row[0], row[1]))
                continue
            seen[key] = str(face.path)
            new.append((face, vec))
        return new, duplicates

    def remove(self, name: str) -> int:
        """Delete identity ``name`` with its images and embeddings; returns embeddings removed."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownIdentityError(self._unknown_message(name))
            n = db.execute(
                "SELECT COUNT(*) FROM embeddings WHERE identity_id = ?", (row[0],)
            ).fetchone()[0]
            db.execute("DELETE FROM identities WHERE id = ?", (row[0],))
            generation = self.generation + 1
            self._set_meta("generation", str(generation))
            self._set_meta("removal_generation", str(generation))
        return int(n)

    def remove_image(self, image_id: int) -> RemovedImage:
        """Delete one enrolled photo with its embeddings (ids from ``images``); an identity left
        without photos is deleted too."""
        with self._transaction() as db:
            found = self.images(image_id=image_id)
            if not found:
                raise UnknownImageError(f"no image {image_id} in gallery {self.directory}")
            identity_id = db.execute(
                "SELECT identity_id FROM images WHERE id = ?", (image_id,)
            ).fetchone()[0]
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
            left = db.execute(
                "SELECT COUNT(*) FROM images WHERE identity_id = ?", (identity_id,)
            ).fetchone()[0]
            if not left:
                db.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
            generation = self.generation + 1
            self._set_meta("generation", str(generation))
            self._set_meta("removal_generation", str(generation))
        return RemovedImage(found[0], identity_removed=not left)

    # ------------------------------------------------------------------ reads

    def identities(self, offset: int = 0, limit: int | None = None) -> list[IdentityInfo]:
        """Enrolled identities with their counts, by name (``limit`` of them from ``offset``)."""
        rows = self._db.execute(
            "SELECT i.name, i.created_at,"
            " (SELECT COUNT(*) FROM images m WHERE m.identity_id = i.id),"
            " (SELECT COUNT(*) FROM embeddings e WHERE e.identity_id = i.id)"
            " FROM identities i ORDER BY i.name LIMIT ? OFFSET ?",
            (-1 if limit is None else int(limit), int(offset)),
        ).fetchall()
        return [IdentityInfo(name, nim, nem, created) for name, created, nim, nem in rows]

    def identity_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM identities").fetchone()[0])

    def images(
        self,
        name: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        image_id: int | None = None,
    ) -> list[ImageInfo]:
        """Enrolled photos by id (``limit`` of them from ``offset``): all, those of identity
        ``name`` (``UnknownIdentityError`` if it is not enrolled), or the one ``image_id``."""
        where, args = self._image_filter(name, image_id)
        rows = self._db.execute(
            "SELECT m.id, i.name, m.path, m.sha256, m.added_at,"
            " (SELECT COUNT(*) FROM embeddings e WHERE e.image_id = m.id)"
            f" FROM images m JOIN identities i ON i.id = m.identity_id {where}"
            " ORDER BY m.id LIMIT ? OFFSET ?",
            (*args, -1 if limit is None else int(limit), int(offset)),
        ).fetchall()
        return [ImageInfo(i, n, p, h, int(f), t) for i, n, p, h, t, f in rows]

    def image_count(self, name: str | None = None) -> int:
        where, args = self._image_filter(name, None)
        sql = f"SELECT COUNT(*) FROM images m JOIN identities i ON i.id = m.identity_id {where}"
        return int(self._db.execute(sql, args).fetchone()[0])

    def _image_filter(self, name: str | None, image_id: int | None) -> tuple[str, tuple]:
        if image_id is not None:
            return "WHERE m.id = ?", (int(image_id),)
        if name is None:
            return "", ()
        if self._db.execute("SELECT 1 FROM identities WHERE name = ?", (name,)).fetchone() is None:
            raise UnknownIdentityError(self._unknown_message(name))
        return "WHERE i.name = ?", (name,)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def embeddings(self, after_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(N,) int64 embedding ids and (N, D) float32 vectors with id > ``after_id``.

        why chunked: one array of the result and a chunk of rows in memory, not every row's
        Python bytes plus their join (1M x 512-d: 2 GB, not 6).
        """
        model = self.model
        dim = model.embedding_dim if model else 0
        with self._read():
            n = self._db.execute(
                "SELECT COUNT(*) FROM embeddings WHERE id > ?", (after_id,)
            ).fetchone()[0]
            ids = np.empty(n, np.int64)
            vectors = np.empty((n, dim), np.float32)
            cursor = self._db.execute(
                "SELECT id, vector FROM embeddings WHERE id > ? ORDER BY id", (after_id,)
            )
            done = 0
            while rows := cursor.fetchmany(10_000):
                end = done + len(rows)
                ids[done:end] = [r[0] for r in rows]
                bad = next((r[0] for r in rows if len(r[1] or b"") != 4 * dim), None)
                if bad is not None:  # why: numpy's "buffer size" text names neither
                    raise GalleryError(
                        f"{self.directory / DB_NAME}: embedding row {bad} is damaged (not "
                        f"{dim} float32 values); remove its photo (facenet gallery list) or "
                        "re-enrol into a new gallery"
                    )
                vectors[done:end] = np.frombuffer(
                    b"".join(r[1] for r in rows), dtype="<f4"
                ).reshape(-1, dim)
                done = end
        return ids, vectors

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        """A read transaction: one snapshot of the database for the statements inside (no write
        can commit in between). Nested in a write transaction, that one is used."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def _fresh_index(self) -> Any:
        """The search index, made current with the database and its index choice (and saved if
        it changed).

        ``index.faiss`` is used only when its bytes have the checksum this database recorded
        when it was written and it names this gallery; otherwise it is rebuilt from SQLite. It is
        appended to (rows added since it was written) only when nothing was removed since and it
        is still of the chosen kind (``IndexSpec.can_append``); otherwise rebuilt.
        """
        generation = self.generation
        spec = self.index_spec
        header = self._index_header
        if (
            self._index is not None
            and header["generation"] == generation
            and spec.can_append(header.get("index"), self._index.ntotal)
        ):
            configure_search(self._index, spec)
            return self._index
        model = self.model
        if model is None:
            return None
        weights = model.weights_hash
        recorded = self._meta("index_sha256")
        loaded = read_index_file(self.directory / INDEX_NAME, recorded) if recorded else None
        count = len(self)
        if loaded is not None:
            header, index = loaded
            # why: files written before the index choice existed record no spec
            built = header.get("index") or {"kind": index_kind(index), "trained_on": index.ntotal}
            usable = (
                header.get("gallery_id") == self.gallery_id
                and header.get("weights_hash") == weights
                and header.get("generation", generation + 1) <= generation
                and index.d == model.embedding_dim
                and spec.can_append(built, count)
            )
            if usable and header["generation"] == generation and index.ntotal == count:
                configure_search(index, spec)
                self._index, self._index_header = index, {**header, "index": built}
                return index
            removal = int(self._meta("removal_generation") or 0)
            if usable and removal <= header["generation"]:
                ids, vectors = self.embeddings(after_id=header["max_id"])
                if len(ids):
                    index.add_with_ids(vectors, ids)
                if index.ntotal == count:
                    configure_search(index, spec)
                    return self._save_index(index, generation, weights, built)
        ids, vectors = self.embeddings()
        index = build_index(vectors, ids, spec)
        return self._save_index(index, generation, weights, spec.built(len(ids)))

    def _save_index(
        self, index: Any, generation: int, weights_hash: str, built: dict[str, Any]
    ) -> Any:
        max_id = int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM embeddings").fetchone()[0])
        header = {
            "gallery_id": self.gallery_id,
            "generation": generation,
            "max_id": max_id,
            "weights_hash": weights_hash,
            "index": built,
        }
        # why: the file is only a cache; a read-only gallery still answers from memory. File and
        # checksum change under the write lock, so two processes cannot pair one's file with the
        # other's checksum, and a database that moved on meanwhile keeps its own state.
        with contextlib.suppress(OSError, sqlite3.OperationalError), self._transaction():
            if self.generation == generation:
                digest = write_index_file(self.directory / INDEX_NAME, index, header)
                self._set_meta("index_sha256", digest)
        self._index, self._index_header = index, header
        return index

    def rebuild_index(self) -> None:
        """Force a rebuild of ``index.faiss`` from the database."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / INDEX_NAME).unlink()
        self._index = None
        self._fresh_index()

    def search(
        self, queries: np.ndarray, k: int = 5, model: ModelFingerprint | None = None
    ) -> list[list[Match]]:
        """The ``k`` nearest identities of each (Q, D) query, closest first.

        Each identity appears once, at the distance of its closest enrolled face.
        """
        if model is not None:
            self.check_model(model)
        gallery_model = self.model
        if gallery_model is None:
            return [[] for _ in range(len(np.atleast_2d(queries)))]
        q = unit_rows(queries, gallery_model.embedding_dim)
        index = self._fresh_index()
        n = index.ntotal
        # why: several faces per identity; fetch enough neighbours to see k distinct identities.
        depth = min(n, max(4 * k, k + 32))
        with faiss_threads(1 if len(q) < 64 else None):
            sims, ids = (
                index.search(q, depth) if n else (np.zeros((len(q), 0)), np.zeros((len(q), 0)))
            )
        wanted = {int(i) for i in np.unique(ids) if i >= 0}
        owner = self._owners(wanted)
        results = []
        for row_sims, row_ids in zip(sims, ids, strict=True):
            best: dict[str, Match] = {}
            for s, i in zip(row_sims, row_ids, strict=True):
                if i < 0:
                    continue
                name, path = owner[int(i)]
                if name not in best:
                    best[name] = Match(name, max(0.0, 2.0 - 2.0 * float(s)), path)
            results.append(sorted(best.values(), key=lambda m: m.distance)[:k])
        return results

    def _owners(self, ids: set[int]) -> dict[int, tuple[str, str]]:
        out: dict[int, tuple[str, str]] = {}
        ids_list = sorted(ids)
        for start in range(0, len(ids_list), 900):  # why: SQLite's bound-parameter limit
            chunk = ids_list[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for eid, name, path in self._db.execute(
                "SELECT e.id, i.name, m.path FROM embeddings e"
                " JOIN identities i ON i.id = e.identity_id JOIN images m ON m.id = e.image_id"
                f" WHERE e.id IN ({marks})",
                chunk,
            ):
                out[eid] = (name, path)
        return out
