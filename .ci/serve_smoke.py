"""Smoke check of `facenet serve` installed from the wheel: ready, the page served, a key
required, one embed answered in the result schema. Usage: serve_smoke.py PORT KEY."""

import io
import sys
import time

import httpx
import numpy as np
from PIL import Image

base, key = f"http://127.0.0.1:{sys.argv[1]}", sys.argv[2]
for _ in range(240):  # the model loads before the server answers
    try:
        if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
            break
    except httpx.TransportError:
        pass
    time.sleep(0.5)
else:
    sys.exit("facenet serve never became ready")
assert httpx.get(f"{base}/healthz").status_code == 200
page = httpx.get(f"{base}/")
assert page.status_code == 200 and "<html" in page.text.lower(), page.status_code
assert httpx.get(f"{base}/v1/gallery/identities").status_code == 401  # a key is required
buf = io.BytesIO()
pixels = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
Image.fromarray(pixels).save(buf, "PNG")
r = httpx.post(
    f"{base}/v1/embed",
    headers={"Authorization": f"Bearer {key}"},
    files=[("images", ("face.png", buf.getvalue(), "image/png"))],
    timeout=60,
)
assert r.status_code == 200, r.text
answer = r.json()
faces = answer["images"][0]["faces"]
assert answer["schema"] == 1 and len(faces) == 1 and faces[0]["crop"] == "none", answer
print("facenet serve: ready, page served, key required, embed answered")
