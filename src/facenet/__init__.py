"""FaceNet in PyTorch: triplet-trained face embeddings for verification, identification and clustering.

The package imports nothing heavy at import time; use the subpackages:
``facenet.models`` (model family and registry), ``facenet.losses`` (distances, mining, triplet loss),
``facenet.data`` (images, samplers, protocol files), ``facenet.detect`` (detection and alignment),
``facenet.train``, ``facenet.eval`` and ``facenet.apps``.
"""

__version__ = "0.1.0"
