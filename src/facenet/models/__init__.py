"""The FaceNet model family behind one registry.

>>> from facenet.models import create_model, list_models
>>> model = create_model("nn4")            # L2-normalised (B, 128) embeddings
>>> model.spec.input_size                  # preprocessing travels with the model
(96, 96)
"""

from facenet.models.head import EmbeddingHead, EmbeddingNet
from facenet.models.registry import create_model, get_spec, list_models, register_model
from facenet.preprocess import ModelSpec

__all__ = [
    "EmbeddingHead",
    "EmbeddingNet",
    "ModelSpec",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
]
