"""Applications over embeddings: verify, a persistent gallery for open-set identification,
clustering photo collections, and the end-to-end demo. Import from the submodules
(``facenet.apps.embedder``, ``.verify``, ``.gallery``, ``.cluster``, ``.demo``)."""
