"""``facenet serve [--gallery DIR] [--host H] [--port P] [--keys FILE] [--no-auth]``: the HTTP API
(``facenet.serve``) under uvicorn.

Listens on 127.0.0.1 unless ``--host`` says otherwise, and needs an API key on every request
but the health checks unless ``--no-auth`` (a warning is printed; off loopback, a loud one).
SIGTERM or Ctrl-C stops accepting connections and lets the requests in flight finish.
"""

from __future__ import annotations

import argparse
import sys

from facenet.apps.gallery import GalleryError
from facenet.commands._apps import add_model_arguments, error, gallery_dir, load_embedder
from facenet.commands._checks import non_empty, non_negative_float, positive_float, positive_int
from facenet.serve.keys import KeyStoreError, keys_path
from facenet.serve.settings import LOOPBACK, ServeSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, model_default=None)
    parser.add_argument(
        "--gallery",
        default=None,
        type=non_empty,
        help="gallery folder (default: $FACENET_GALLERY or ./facenet-gallery)",
    )
    net = parser.add_argument_group("network and access")
    net.add_argument(
        "--host", default=None, help=f"address to listen on (default {LOOPBACK}: this machine only)"
    )
    net.add_argument("--port", type=positive_int, default=8000, help="TCP port (default 8000)")
    net.add_argument(
        "--keys",
        default=None,
        help="API-key store (default: $FACENET_KEYS or ./facenet-keys.sqlite)",
    )
    net.add_argument(
        "--no-auth", action="store_true", help="no API keys (keep it on loopback: anyone can call)"
    )
    d = ServeSettings()
    lim = parser.add_argument_group("limits")
    lim.add_argument("--max-body-mb", type=positive_float, default=d.max_body_bytes / 2**20,
                     help="request body, MiB (413 above)")  # fmt: skip
    lim.add_argument("--max-image-pixels", type=positive_int, default=d.max_image_pixels,
                     help="pixels per image, from its header before decoding (413 above)")  # fmt: skip
    lim.add_argument("--max-images", type=positive_int, default=d.max_images,
                     help="images per request")  # fmt: skip
    lim.add_argument("--max-faces", type=positive_int, default=d.max_faces,
                     help="faces per image")  # fmt: skip
    lim.add_argument("--rate", type=positive_float, default=d.rate_per_minute,
                     help="requests per minute per key (429 above)")  # fmt: skip
    lim.add_argument("--burst", type=positive_int, default=d.rate_burst,
                     help="requests a key may make at once")  # fmt: skip
    lim.add_argument("--timeout", type=positive_float, default=d.request_timeout_s,
                     help="seconds of work per request (504 above)")  # fmt: skip
    bat = parser.add_argument_group("micro-batching (--batch-size: faces per forward pass)")
    bat.add_argument("--max-wait-ms", type=non_negative_float, default=d.max_wait_ms,
                     help="how long a face waits for others to fill a batch")  # fmt: skip
    bat.add_argument("--max-queue", type=positive_int, default=d.max_queue,
                     help="faces waiting for the model (503 above)")  # fmt: skip
    bat.add_argument("--workers", type=positive_int, default=d.workers,
                     help="threads decoding and detecting")  # fmt: skip
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )


def settings_of(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        model=args.model,
        allow_untrained=args.allow_untrained,
        detector=args.detector,
        crop=args.crop,
        device=args.device,
        gallery=gallery_dir(args.gallery),
        host=args.host,
        port=args.port,
        keys=str(keys_path(args.keys)),
        no_auth=args.no_auth,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        max_faces=args.max_faces,
        rate_per_minute=args.rate,
        rate_burst=args.burst,
        request_timeout_s=args.timeout,
        max_batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        workers=args.workers,
        log_level=args.log_level,
    )


def run(args: argparse.Namespace) -> int:
    try:
        # why: FastAPI and uvicorn are the optional 'serve' extra; everything else works without
        import uvicorn

        from facenet.serve.app import create_app, model_ref
    except ImportError as e:
        return error(
            f"{e}; facenet serve needs the serve extra: pip install 'facenet-triplet[serve]'"
        )
    settings = settings_of(args)
    try:
        settings.check()
        ref = model_ref(settings)
    except (ValueError, GalleryError) as e:
        return error(e)
    args.model = ref
    embedder = load_embedder(args, ref)
    if isinstance(embedder, int):
        return embedder
    try:
        app = create_app(settings, embedder)
    except (GalleryError, KeyStoreError, OSError, ValueError) as e:
        return error(e)
    for warning in settings.warnings():
        print(f"facenet serve: WARNING: {warning}", file=sys.stderr)
    keys = app.state.keys
    if keys is not None and keys.active_count() == 0:
        print(
            f"facenet serve: WARNING: no API keys in {settings.keys}; every request but the "
            "health checks will get 401 (facenet keys create --scope read)",
            file=sys.stderr,
        )
    print(
        f"facenet serve: {embedder.ref} on gallery {settings.gallery} at "
        f"http://{settings.bind_host}:{settings.port} (docs at /docs)",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.port,
        log_level=settings.log_level,
        # why: SIGTERM lets requests in flight finish, but not for ever
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
        server_header=False,
    )
    uvicorn.Server(config).run()
    return 0
