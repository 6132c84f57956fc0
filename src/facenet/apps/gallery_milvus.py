"""The Milvus gallery backend (extra ``milvus``: ``pymilvus`` and ``milvus-lite``).

Locations::

    milvus-lite:///path/to/gallery.db[?collection=faces]   Milvus Lite: the engine in this
                                                           process, one file (one process at a
                                                           time may open it)
    milvus://host:19530/collection                         a Milvus server or cluster (plain)
    milvus+https://host:443/collection                     the same over TLS

Index options go in the query string: ``index=flat`` (exact, the default), ``index=hnsw``
(``M``, ``efConstruction``; search ``ef``), ``index=ivf_flat`` or ``index=ivf_sq8`` (``nlist``;
search ``nprobe``). IVF_SQ8 stores each dimension in one byte: 128 bytes per 128-d face, the
paper's figure. A server's token comes from ``$FACENET_MILVUS_TOKEN`` (never from the URI, so it
stays out of logs and shell history).

Layout: a gallery is two collections, ``<c>`` with one row per enrolled face (vector, identity,
photo, face index, box, time, and the model that made it) and ``<c>_meta`` (the model, its
thresholds, the gallery's id). Names are data: every filter expression compares integers only
(identity and photo keys are the first 63 bits of a SHA-256 of the name or of the photo's hash;
a row is taken only when its stored name or hash matches in full), so no name is ever parsed by
Milvus. Search groups hits by identity (``group_by_field``), so each identity comes back once at
its closest face.

Durability, as the contract tests show it: an enrolment is one insert of all its faces and a
removal one delete by primary keys; what Milvus acknowledged survives a restart (its write-ahead
log on a server; the file in Milvus Lite). Milvus has no multi-statement transactions: the model
check and the insert are two calls, so two processes making the very first enrolment of one
gallery with different models at the same instant are not kept apart (the embedded backend's
write lock does that).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
from facenet.fingerprint import ModelFingerprint

INDEXES = {
    "flat": ("FLAT", {}, {}),
    "hnsw": ("HNSW", {"M": 16, "efConstruction": 200}, {"ef": 128}),
    "ivf_flat": ("IVF_FLAT", {"nlist": 1024}, {"nprobe": 32}),
    "ivf_sq8": ("IVF_SQ8", {"nlist": 1024}, {"nprobe": 32}),
}
_COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
_FIELDS = ["id", "identity_id", "identity", "image_id", "path", "sha256", "face_index", "box",
           "added_at"]  # fmt: skip
_IMAGE_FIELDS = ["identity", "image_id", "path", "sha256", "added_at"]  # what ImageInfo needs
_PAGE = 1000  # rows per query page
_QUERY_LIMIT = 16384  # rows one Milvus query may return
CONNECT_TIMEOUT_S = 10.0  # an unreachable server is an error after this, never a hang
# the layout of a gallery's two collections; galleries made before it was recorded are 1
SCHEMA_VERSION = 1


def _key(text: str) -> int:
    """A positive 63-bit integer key of ``text`` (what filter expressions compare)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def _import_pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError:
        raise GalleryError(
            "a Milvus gallery needs the 'milvus' extra: pip install 'facenet-triplet[milvus]'"
        ) from None
    return pymilvus


def parse_location(location: str) -> dict[str, Any]:
    """``milvus-lite:///path.db?...`` or ``milvus[+https]://host:port/collection?...`` -> the
    client URI, the collection, the index type with its build and search parameters."""
    parts = urlsplit(location)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "milvus-lite":
        path = parts.netloc + parts.path
        if not path or not path.endswith(".db"):
            raise GalleryError(f"{location}: a Milvus Lite gallery is a file ending in .db, "
                               "e.g. milvus-lite:///home/me/gallery.db")  # fmt: skip
        uri, collection = path, query.pop("collection", "faces")
    else:
        collection = parts.path.strip("/") or query.pop("collection", "")
        if not parts.hostname or not collection:
            raise GalleryError(f"{location}: expected milvus://host:port/collection")
        secure = parts.scheme == "milvus+https"
        port = parts.port or (443 if secure else 19530)
        uri = f"{'https' if secure else 'http'}://{parts.hostname}:{port}"
    if not _COLLECTION.match(collection):
        raise GalleryError(f"{location}: collection name {collection!r} must be letters, digits "
                           "and underscores, not starting with a digit")  # fmt: skip
    kind = query.pop("index", "flat").lower()
    if kind not in INDEXES:
        raise GalleryError(f"{location}: index={kind!r}; choose one of {', '.join(INDEXES)}")
    index_type, build, search = INDEXES[kind]
    build, search = dict(build), dict(search)
    for name, value in query.items():
        if name in build:
            target = build
        elif name in search:
            target = search
        else:
            known = ", ".join([*build, *search]) or "none"
            raise GalleryError(f"{location}: unknown option {name!r} for index={kind} "
                               f"(its options: {known})")  # fmt: skip
        try:
            target[name] = int(value)
        except ValueError:
            raise GalleryError(f"{location}: {name}={value!r} is not an integer") from None
    return {"uri": uri, "collection": collection, "lite": parts.scheme == "milvus-lite",
            "index_type": index_type, "build": build, "search": search}  # fmt: skip


@register_backend("milvus-lite", "milvus", "milvus+https")
class MilvusGallery(Gallery):
    """A gallery in Milvus (see the module's docstring for locations and options)."""

    def __init__(self, location: str | os.PathLike, create: bool = True, **_: Any) -> None:
        self.location = str(location)
        spec = parse_location(self.location)
        self._spec = spec
        self.collection = spec["collection"]
        self._meta_name = f"{self.collection}_meta"
        pymilvus = _import_pymilvus()
        self._types = pymilvus.DataType
        if spec["lite"]:
            path = Path(spec["uri"])
            if not path.exists():
                if not create:
                    raise GalleryError(self._missing())
                path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client = pymilvus.MilvusClient(
                uri=spec["uri"],
                token=os.environ.get("FACENET_MILVUS_TOKEN", ""),
                timeout=CONNECT_TIMEOUT_S,
            )
        except Exception as e:  # noqa: BLE001 - pymilvus raises many kinds; say which store
            raise GalleryError(f"{self.location}: cannot open Milvus ({e})") from None
        if not self._client.has_collection(self._meta_name):
            if not create:
                self._client.close()
                raise GalleryError(self._missing())
            if self._client.has_collection(self.collection):
                # why: someone else's collection of this name (no gallery meta beside it) is
                # never adopted and written into
                self._client.close()
                raise GalleryError(
                    f"{self.location}: collection {self.collection!r} exists but is not a facenet "
                    f"gallery (no {self._meta_name!r} beside it); name another collection"
                )
            self._create_meta()
        # why: a collection is searchable only when loaded; after a restart (or a crash) it is not
        for name in (self._meta_name, self.collection):
            if self._client.has_collection(name):
                self._client.load_collection(name)
        try:
            check_schema_version(self.location, self._meta("schema_version") or "1", SCHEMA_VERSION)
        except GalleryError:
            self._client.close()
            raise
        self._last_image_id = 0

    def _missing(self) -> str:
        return (f"no gallery at {self.location}; enrol someone first: facenet gallery enroll "
                f"NAME IMAGES... --gallery {self.location}")  # fmt: skip

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._client.close()

    def _create_meta(self) -> None:
        c = self._client
        schema = c.create_schema(auto_id=False)
        schema.add_field("key", self._types.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("value", self._types.VARCHAR, max_length=65535)
        # why: every Milvus collection needs a vector field; this one is never searched
        schema.add_field("unused", self._types.FLOAT_VECTOR, dim=2)
        index = c.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        c.create_collection(self._meta_name, schema=schema, index_params=index,
                            consistency_level="Strong")  # fmt: skip
        self._set_meta("gallery_id", uuid.uuid4().hex)
        self._set_meta("schema_version", str(SCHEMA_VERSION))

    def _create_faces(self, dim: int) -> None:
        c, t = self._client, self._types
        schema = c.create_schema(auto_id=True)
        schema.add_field("id", t.INT64, is_primary=True)
        schema.add_field("vector", t.FLOAT_VECTOR, dim=dim)
        schema.add_field("identity_id", t.INT64)
        schema.add_field("identity", t.VARCHAR, max_length=1024)
        schema.add_field("image_id", t.INT64)
        schema.add_field("photo_key", t.INT64)
        schema.add_field("path", t.VARCHAR, max_length=4096)
        schema.add_field("sha256", t.VARCHAR, max_length=64)
        schema.add_field("face_index", t.INT64)
        schema.add_field("box", t.VARCHAR, max_length=256)
        schema.add_field("added_at", t.DOUBLE)
        schema.add_field("model_name", t.VARCHAR, max_length=256)
        schema.add_field("model_version", t.VARCHAR, max_length=256)
        schema.add_field("weights_hash", t.VARCHAR, max_length=64)
        c.create_collection(self.collection, schema=schema, index_params=self._index_params(),
                            consistency_level="Strong")  # fmt: skip

    def _index_params(self) -> Any:
        index = self._client.prepare_index_params()
        index.add_index("vector", index_type=self._spec["index_type"], metric_type="IP",
                        params=self._spec["build"])  # fmt: skip
        return index

    def _has_faces(self) -> bool:
        return bool(self._client.has_collection(self.collection))

    def _meta(self, key: str) -> str | None:
        rows = self._client.get(self._meta_name, ids=[key], output_fields=["value"])
        return rows[0]["value"] if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        self._client.upsert(self._meta_name, [{"key": key, "value": value, "unused": [0.0, 0.0]}])

    def _rows(self, expr: str, fields: Sequence[str] = _FIELDS) -> list[dict[str, Any]]:
        """Every face row matching ``expr`` (integers only)."""
        if not self._has_faces():
            return []
        c, fields = self._client, list(fields)
        # why: one query answers at most _QUERY_LIMIT rows; only a full answer needs the
        # iterator's pages (asked again from the start: a query's rows come in no set order)
        rows = c.query(self.collection, filter=expr, output_fields=fields, limit=_QUERY_LIMIT)
        if len(rows) < _QUERY_LIMIT:
            return list(rows)
        out: list[dict[str, Any]] = []
        iterator = c.query_iterator(self.collection, batch_size=_PAGE, filter=expr,
                                    output_fields=fields)  # fmt: skip
        try:
            while batch := iterator.next():
                out.extend(batch)
        finally:
            iterator.close()
        return out

    # ------------------------------------------------------------------ writes

    def enroll(
        self,
        name: str,
        faces: Sequence[FaceRecord],
        model: ModelFingerprint,
        thresholds: dict[str, float] | None = None,
    ) -> EnrollResult:
        name = check_identity_name(name)
        if not faces:
            raise GalleryError(f"nothing to enrol for {name!r}: no usable face")
        vectors = unit_rows(np.stack([f.embedding for f in faces]), model.embedding_dim)
        self.check_model(model, enrolling=True)
        new, duplicates = self._new_faces(faces, vectors)
        if not new:
            return EnrollResult(0, duplicates)
        if self.model is None:
            if not self._has_faces():
                self._create_faces(model.embedding_dim)
            self._set_meta("model", json.dumps(model.to_dict()))
            self._set_meta("thresholds", json.dumps(thresholds or {}))
        now = time.time()
        image_ids = self._new_image_ids(len({(f.path, f.sha256) for f, _ in new}))
        by_photo: dict[tuple[str, str | None], int] = {}
        rows = []
        for face, vec in new:
            image_id = by_photo.setdefault((face.path, face.sha256), image_ids[len(by_photo)])
            rows.append({
                "vector": vec.tolist(),
                "identity_id": _key(name),
                "identity": name,
                "image_id": image_id,
                "photo_key": _key(face.sha256) if face.sha256 else 0,
                "path": str(face.path)[:4096],
                "sha256": face.sha256 or "",
                "face_index": int(face.face_index),
                "box": "" if face.box is None else json.dumps([float(v) for v in face.box]),
                "added_at": now,
                "model_name": model.name,
                "model_version": model.version,
                "weights_hash": model.weights_hash,
            })  # fmt: skip
        self._client.insert(self.collection, rows)  # one insert: the whole enrolment
        return EnrollResult(len(new), duplicates, list(by_photo.values()))

    def _new_image_ids(self, n: int) -> list[int]:
        """``n`` fresh image ids: microseconds since 1970, increasing (below 2**53, so a
        JavaScript client reads them exactly), none already in the gallery."""
        while True:
            start = max(time.time_ns() // 1000, self._last_image_id + 1)
            ids = list(range(start, start + n))
            self._last_image_id = ids[-1]
            taken = self._rows(f"image_id in {ids}", ["image_id"]) if self._has_faces() else []
            if not taken:
                return ids

    def _new_faces(
        self, faces: Sequence[FaceRecord], vectors: np.ndarray
    ) -> tuple[list[tuple[FaceRecord, np.ndarray]], list[Duplicate]]:
        hashed = sorted({_key(f.sha256) for f in faces if f.sha256})
        stored: dict[tuple[str, int], tuple[str, str]] = {}
        for start in range(0, len(hashed), _PAGE):
            chunk = hashed[start : start + _PAGE]
            for r in self._rows(f"photo_key in {chunk}", ["sha256", "face_index", "identity",
                                                           "path"]):  # fmt: skip
                stored.setdefault((r["sha256"], int(r["face_index"])), (r["identity"], r["path"]))
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
            elif key in stored:
                duplicates.append(Duplicate(str(face.path), *stored[key]))
            else:
                seen[key] = str(face.path)
                new.append((face, vec))
        return new, duplicates

    def remove(self, name: str) -> int:
        rows = self._identity_rows(name, ["id", "identity"])
        if not rows:
            raise UnknownIdentityError(self._unknown_message(name))
        self._client.delete(self.collection, ids=[r["id"] for r in rows])
        return len(rows)

    def remove_image(self, image_id: int) -> RemovedImage:
        rows = self._rows(f"image_id == {int(image_id)}", ["id", *_IMAGE_FIELDS])
        if not rows:
            raise UnknownImageError(f"no image {image_id} in gallery {self.location}")
        [image] = _images_of(rows)
        self._client.delete(self.collection, ids=[r["id"] for r in rows])
        left = self._identity_rows(image.identity, ["id", "identity"])
        return RemovedImage(image, identity_removed=not left)

    def rebuild_index(self) -> None:
        if not self._has_faces():
            return
        c = self._client
        c.release_collection(self.collection)
        c.drop_index(self.collection, "vector")
        c.create_index(self.collection, self._index_params())
        c.load_collection(self.collection)

    # ------------------------------------------------------------------ reads

    def _identity_rows(self, name: str, fields: Sequence[str]) -> list[dict[str, Any]]:
        rows = self._rows(f"identity_id == {_key(name)}", fields)
        return [r for r in rows if r["identity"] == name]  # why: a 63-bit key could collide

    def _all_rows(self) -> list[dict[str, Any]]:
        return self._rows("id >= 0", ["identity", "image_id", "added_at"])

    def identities(self, offset: int = 0, limit: int | None = None) -> list[IdentityInfo]:
        people: dict[str, tuple[set[int], int, float]] = {}
        for r in self._all_rows():
            images, faces, first = people.get(r["identity"], (set(), 0, float("inf")))
            images.add(int(r["image_id"]))
            people[r["identity"]] = (images, faces + 1, min(first, float(r["added_at"])))
        every = [IdentityInfo(n, len(im), f, t) for n, (im, f, t) in sorted(people.items())]
        return every[offset : None if limit is None else offset + limit]

    def identity_count(self) -> int:
        return len({r["identity"] for r in self._all_rows()})

    def images(
        self,
        name: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        image_id: int | None = None,
    ) -> list[ImageInfo]:
        fields = _IMAGE_FIELDS
        if image_id is not None:
            rows = self._rows(f"image_id == {int(image_id)}", fields)
        elif name is not None:
            rows = self._identity_rows(name, fields)
            if not rows:
                raise UnknownIdentityError(self._unknown_message(name))
        else:
            rows = self._rows("id >= 0", fields)
        return _images_of(rows)[offset : None if limit is None else offset + limit]

    def __len__(self) -> int:
        if not self._has_faces():
            return 0
        [row] = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(row["count(*)"])

    def search(
        self, queries: np.ndarray, k: int = 5, model: ModelFingerprint | None = None
    ) -> list[list[Match]]:
        gallery_model = self.model  # why: one look-up per search (check_model would make another)
        if model is not None and gallery_model is not None and not model.can_query(gallery_model):
            self.check_model(model)  # raises, naming both models
        n = len(np.atleast_2d(queries))
        if gallery_model is None or not self._has_faces():
            return [[] for _ in range(n)]
        q = unit_rows(queries, gallery_model.embedding_dim)
        hits = self._client.search(
            self.collection,
            data=q.tolist(),
            limit=k,
            group_by_field="identity_id",
            output_fields=["identity", "path"],
            search_params={"metric_type": "IP", "params": self._spec["search"]},
        )
        out = []
        for row in hits:
            best: dict[str, Match] = {}
            for h in row:
                e = h["entity"]
                dist = max(0.0, 2.0 - 2.0 * float(h["distance"]))
                if e["identity"] not in best or dist < best[e["identity"]].distance:
                    best[e["identity"]] = Match(e["identity"], dist, e["path"])
            out.append(sorted(best.values(), key=lambda m: m.distance)[:k])
        return out


def _images_of(rows: Iterable[dict[str, Any]]) -> list[ImageInfo]:
    """Face rows grouped into their photos, by id."""
    photos: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        photos.setdefault(int(r["image_id"]), []).append(r)
    return [
        ImageInfo(
            i,
            rs[0]["identity"],
            rs[0]["path"],
            rs[0]["sha256"] or None,
            len(rs),
            float(rs[0]["added_at"]),
        )  # fmt: skip
        for i, rs in sorted(photos.items())
    ]
