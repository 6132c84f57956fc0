"""FaceNet in PyTorch: triplet-trained face embeddings for verification, identification and clustering.

    >>> import facenet
    >>> fn = facenet.load()                       # model + detector, loaded once
    >>> fn.verify("a.jpg", "b.jpg").same
    >>> fn.identify("probe.jpg", facenet.Gallery("my-gallery")).to_dict()

``facenet.load`` and ``facenet.Gallery`` are imported on first use, so ``import facenet`` stays
instant; the subpackages are ``facenet.models``, ``facenet.losses``, ``facenet.data``,
``facenet.detect``, ``facenet.train``, ``facenet.eval`` and ``facenet.apps``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FaceNet", "Gallery", "load"]

if TYPE_CHECKING:
    from facenet.api import FaceNet, Gallery, load


def __getattr__(name: str) -> Any:
    # why: cold start -- `import facenet` (and the CLI's `--help`) must not load PyTorch
    if name in __all__:
        from facenet import api

        return getattr(api, name)
    raise AttributeError(f"module 'facenet' has no attribute {name!r}")
