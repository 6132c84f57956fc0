"""``ServeSettings``: everything a ``facenet serve`` process is configured with, and its checks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeSettings:
    """A server's configuration; every field has a safe default.

    Limits bound the work one request can cause; they are checked before the work is done
    (body bytes while reading, pixels from the image header before decoding).
    """

    # -- model and data
    model: str | None = None  # weights file or NAME:TAG; None: the gallery's, else the default
    allow_untrained: bool = False  # a bare architecture NAME (random weights): for tests only
    detector: str = "mtcnn"  # face detector (facenet.detect.list_detectors())
    crop: str = "box"  # box | similarity | none (uploads already are face crops)
    device: str = "cpu"  # torch device of the model
    gallery: str = "facenet-gallery"  # gallery folder (created on first start)
    # -- network and access
    host: str | None = None  # None: 127.0.0.1 (this machine only); set it to listen wider
    port: int = 8000
    keys: str = "facenet-keys.sqlite"  # the API-key store (facenet keys create ...)
    no_auth: bool = False  # no API keys; only sensible on a loopback address
    # -- limits
    max_body_bytes: int = 32 * 1024 * 1024  # request body; 413 above (phone photos are < 10 MB)
    max_image_pixels: int = 40_000_000  # per image, read from its header; 413 above
    max_images: int = 16  # images per request; 413 above
    max_cluster_images: int = 200  # images per clustering job (POST /v1/cluster); 413 above
    max_faces: int = 32  # faces found in one image; 413 above (bounds embedding work)
    rate_per_minute: float = 600.0  # requests per key per minute (token bucket refill)
    rate_burst: int = 60  # requests a key may make at once (bucket size)
    request_timeout_s: float = 60.0  # a request's work (decode, detect, embed); 504 above
    # -- micro-batching
    max_batch_size: int = 32  # faces per forward pass
    max_wait_ms: float = 5.0  # how long the first face of a batch waits for company
    max_queue: int = 1024  # faces waiting for the model; 503 above (overload)
    workers: int = 2  # threads decoding and detecting
    log_level: str = "info"

    @property
    def bind_host(self) -> str:
        return self.host or LOOPBACK

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        positive = {
            "port": self.port,
            "max_body_bytes": self.max_body_bytes,
            "max_image_pixels": self.max_image_pixels,
            "max_images": self.max_images,
            "max_cluster_images": self.max_cluster_images,
            "max_faces": self.max_faces,
            "rate_per_minute": self.rate_per_minute,
            "rate_burst": self.rate_burst,
            "request_timeout_s": self.request_timeout_s,
            "max_batch_size": self.max_batch_size,
            "max_queue": self.max_queue,
            "workers": self.workers,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.crop not in ("box", "similarity", "none"):
            raise ValueError(f"crop must be box, similarity or none, got {self.crop!r}")

    def warnings(self) -> list[str]:
        """What an operator should be told before the server starts."""
        if not self.no_auth:
            return []
        if is_loopback(self.bind_host):
            return ["authentication is off (--no-auth); anyone on this machine can use the API"]
        return [
            f"authentication is off (--no-auth) and the server listens on {self.bind_host}: "
            "ANYONE who can reach this address can read and change the gallery"
        ]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
