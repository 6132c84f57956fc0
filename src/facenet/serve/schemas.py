"""The response bodies of the HTTP API, as pydantic models (they make the OpenAPI document).

Face results move to the shared result schema (``facenet.api``) later; until then these are the
API's own.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

Box = list[float]
BOX = Field(min_length=4, max_length=4, description="(x1, y1, x2, y2) in image pixels")


class ModelInfo(BaseModel):
    name: str = Field(description="architecture")
    version: str = Field(description="published weights or weights file")
    weights_hash: str = Field(description="SHA-256 of the weights: the embedding space")
    embedding_dim: int


class EmbeddedFace(BaseModel):
    face_index: int = Field(description="0.. in detector order (most confident first)")
    box: Box = BOX
    score: float = Field(description="detector confidence (1 for pre-cropped faces)")
    embedding: list[float] = Field(description="unit vector")


class EmbeddedImage(BaseModel):
    image: str = Field(description="the upload's file name")
    faces: list[EmbeddedFace] = Field(description="every face found; empty when none")


class EmbedResponse(BaseModel):
    model: ModelInfo
    images: list[EmbeddedImage]


class ComparedFace(BaseModel):
    image: str
    face_index: int
    box: Box = BOX
    faces_found: int = Field(description="faces in the image; the main one is compared")


class VerifyResponse(BaseModel):
    same: bool = Field(description="same person: distance <= threshold")
    distance: float = Field(description="squared L2 distance of the two embeddings, in [0, 4]")
    threshold: float
    operating_point: str = Field(description="far_1e-3, accuracy, ... or 'threshold' (given)")
    threshold_source: str = Field(description="'request', or whose calibration: 'model far_1e-3'")
    a: ComparedFace
    b: ComparedFace


class MatchOut(BaseModel):
    name: str
    distance: float = Field(description="squared L2 distance of the identity's closest face")


class IdentifiedFace(BaseModel):
    face_index: int
    box: Box = BOX
    score: float
    name: str = Field(description="the nearest identity, or 'unknown' beyond the threshold")
    known: bool
    distance: float | None = Field(description="to the nearest identity; null: empty gallery")
    matches: list[MatchOut] = Field(description="nearest identities, closest first")


class IdentifyResponse(BaseModel):
    image: str
    threshold: float
    operating_point: str
    threshold_source: str
    faces: list[IdentifiedFace]


class DuplicateOut(BaseModel):
    image: str = Field(description="the upload not stored again")
    identity: str = Field(description="who it is enrolled as")


class EnrolledIdentity(BaseModel):
    name: str
    added: int = Field(description="faces stored")
    duplicates: list[DuplicateOut] = Field(description="photos the gallery already holds")


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


class RemovedIdentity(BaseModel):
    name: str
    removed_embeddings: int


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model: ModelInfo
    gallery_identities: int
