"""The response bodies of the HTTP API, as pydantic models (they make the OpenAPI document).

The face endpoints answer in the one result schema of ``facenet.apps.results`` (the Python API's
and the CLI's ``--json``); the gallery and health endpoints have their own bodies.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from facenet.serve.problems import Problem

Box = list[float]
BOX = Field(min_length=4, max_length=4, description="(x1, y1, x2, y2) in image pixels")


class ModelInfo(BaseModel):
    name: str = Field(description="architecture")
    version: str = Field(description="published weights or weights file")
    weights_hash: str = Field(description="SHA-256 of the weights: the embedding space")
    embedding_dim: int


# --------------------------------------------------------------------------- face answers
# The shared result schema of ``facenet.apps.results`` (``EmbedResult``, ``VerifyResult``,
# ``IdentifyResult`` ``.to_dict()``): the JSON the Python API and the CLI's --json give. A key is
# left out where the library leaves it out (``response_model_exclude_unset``), never sent as null;
# ``extra="forbid"`` turns a key the models do not describe into a failing response.


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FaceBase(_Answer):
    face_index: int = Field(description="0.. in detector order (most confident first)")
    box: Box = BOX
    score: float = Field(description="detector confidence (1 for pre-cropped faces)")
    crop: Literal["box", "similarity", "none"] = Field(description="the framing the model saw")
    used: bool = Field(description="whether the answer rests on this face")


class EmbeddedFace(FaceBase):
    embedding: list[float] = Field(description="unit vector")


class OperatingPointFields(_Answer):
    threshold: float = Field(description="squared-L2 threshold: same person iff distance <= it")
    operating_point: str = Field(description="far_1e-3, accuracy, ... or 'threshold' (given)")
    threshold_source: str = Field(description="'request', or whose calibration: 'model far_1e-3'")


class VerifiedFace(FaceBase):
    """A face of a verified image; the decision's keys only on the compared (used) face."""

    distance: float | None = Field(None, description="squared L2 to the other image's face")
    threshold: float | None = None
    operating_point: str | None = None
    threshold_source: str | None = None
    same: bool | None = None


class MatchOut(_Answer):
    name: str
    distance: float = Field(description="squared L2 distance of the identity's closest face")
    photo: str = Field(description="the photo of that enrolled face")


class IdentifiedFace(FaceBase):
    """A face of an identified image; the answer's keys only on identified (used) faces."""

    distance: float | None = Field(
        None, description="squared L2 to the nearest identity; null: empty gallery"
    )
    threshold: float | None = None
    operating_point: str | None = None
    threshold_source: str | None = None
    identity: str | None = Field(
        None, description="the nearest identity, or 'unknown' beyond the threshold"
    )
    matches: list[MatchOut] | None = Field(None, description="nearest identities, closest first")


_IMAGE = Field(description="the upload's file name (printable, at most 200 characters), or "
               "the form field and index (images[0]) when it has none")  # fmt: skip
_CHOSEN = Field(None, description="how the used face was chosen: 'main face' or 'all'")


class EmbeddedImage(_Answer):
    image: str = _IMAGE
    faces: list[EmbeddedFace] = Field(description="every face found; empty when none")
    face_chosen_by: str | None = _CHOSEN
    error: str | None = Field(None, description="why the image has no faces")


class VerifiedImage(_Answer):
    image: str = _IMAGE
    faces: list[VerifiedFace] = Field(description="every face found; the compared one is used")
    face_chosen_by: str | None = _CHOSEN


class IdentifiedImage(_Answer):
    image: str = _IMAGE
    faces: list[IdentifiedFace] = Field(description="every face found, each identified")
    face_chosen_by: str | None = _CHOSEN


_SCHEMA = Field(alias="schema", description="the result schema's version")


class EmbedResponse(_Answer):
    schema_: int = _SCHEMA
    images: list[EmbeddedImage]


class VerifyResponse(OperatingPointFields):
    schema_: int = _SCHEMA
    same: bool = Field(description="same person: distance <= threshold")
    distance: float = Field(description="squared L2 distance of the two embeddings, in [0, 4]")
    images: list[VerifiedImage] = Field(min_length=2, max_length=2)


class IdentifyResponse(OperatingPointFields):
    schema_: int = _SCHEMA
    images: list[IdentifiedImage] = Field(min_length=1, max_length=1)


class DuplicateOut(BaseModel):
    image: str = Field(description="the upload not stored again")
    identity: str = Field(description="who it is enrolled as")


class EnrolledIdentity(BaseModel):
    name: str
    added: int = Field(description="faces stored")
    duplicates: list[DuplicateOut] = Field(description="photos the gallery already holds")
    image_ids: list[int] = Field(description="ids of the images stored (to remove one later)")


class EnrolResponse(BaseModel):
    identities: list[EnrolledIdentity]


class IdentityOut(BaseModel):
    name: str
    images: int
    embeddings: int
    created_at: float = Field(description="Unix time of its first enrolment")


class IdentityPage(BaseModel):
    total: int
    offset: int
    limit: int
    identities: list[IdentityOut]


class ImageOut(BaseModel):
    id: int = Field(description="what DELETE /v1/gallery/images/{id} takes")
    identity: str
    name: str = Field(description="the upload's file name (or path) it was enrolled from")
    sha256: str | None = Field(description="of the photo's bytes")
    faces: int = Field(description="embeddings stored from it")
    added_at: float = Field(description="Unix time of its enrolment")


class ImagePage(BaseModel):
    total: int
    offset: int
    limit: int
    images: list[ImageOut]


class RemovedImage(BaseModel):
    image: ImageOut
    identity_removed: bool = Field(description="it was the identity's last image")


class RemovedIdentity(BaseModel):
    name: str
    removed_embeddings: int


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model: ModelInfo
    gallery_identities: int


# --------------------------------------------------------------------------- clustering jobs


class ClusteredFace(FaceBase):
    cluster: int = Field(description="the face's cluster, 0.. largest first; -1: unclustered")


class ClusteredImage(_Answer):
    image: str = _IMAGE
    faces: list[ClusteredFace] = Field(description="every face found; empty when none")
    face_chosen_by: str | None = _CHOSEN
    error: str | None = Field(None, description="why the image has no faces")


class ClusterResponse(_Answer):
    """``facenet.load(...).cluster(images, ...).to_dict()``."""

    schema_: int = _SCHEMA
    images: list[ClusteredImage]
    threshold: float | None = Field(None, description="squared-L2 threshold of a cluster's link")
    operating_point: str | None = None
    threshold_source: str | None = None


_JOB = Field(description="the job's id")


class JobAccepted(BaseModel):
    job: str = _JOB
    status: Literal["queued"]
    status_url: str = Field(description="where to ask for its status and result")


class JobOut(BaseModel):
    """A job: its result when ``done``, its problem when ``failed``."""

    job: str = _JOB
    status: Literal["queued", "running", "done", "failed"]
    created: float = Field(description="Unix time it was submitted")
    finished: float | None = Field(None, description="Unix time it finished")
    result: ClusterResponse | None = Field(None, description="the answer, when done")
    error: Problem | None = Field(None, description="why it failed, when failed")
