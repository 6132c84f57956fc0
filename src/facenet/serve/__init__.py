"""``facenet serve``: the HTTP API over ``facenet.apps`` (FastAPI + uvicorn).

Modules, bottom to top:

- ``settings``: ``ServeSettings``, every knob of a server with its default;
- ``problems``: RFC 9457 problem details, the one shape of every error;
- ``keys``: API keys with scopes (read, write, admin), stored hashed in SQLite;
- ``guards``: authentication, per-key rate limits and the request-body limit;
- ``images``: uploaded bytes -> uint8 RGB, refusing decompression bombs before decoding;
- ``batcher``: faces of concurrent requests embedded in one forward pass;
- ``metrics``: Prometheus counters and histograms;
- ``schemas``: the response models (the OpenAPI document);
- ``service``: what each endpoint does, as small functions over the embedder and the gallery;
- ``app``: ``create_app(settings)``: the routes, thin over ``service``.

Nothing is imported here, so ``facenet keys`` (``keys`` only) works without FastAPI installed.
"""
