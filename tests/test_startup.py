"""What the CLI's fast start-up (benchmarks/startup.py) must not change: the answers. The
commands as real processes (OpenMP's wait policy chosen, the imported objects frozen) agree
with the in-process ones, results do not depend on the wait policy, the verify/identify/embed
path imports none of what it does not use, and a weights file loads bit for bit (built on the
meta device, its tensors copied in). No timing here: speed is measured by the benchmark only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facenet.models.loading import _with_state, load_weights_file, save_weights
from facenet.models.registry import create_model, list_models

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = "resnet_cpu:lfw-celeba"  # ships with facenet: nothing to convert
# what the photo commands must not import (nothing there uses them)
UNUSED = (
    "onnx",  # the MTCNN weights come from facenet's cache once converted
    "onnxruntime",
    "sklearn",
    "scipy",
    "pandas",
    "matplotlib",
    "faiss",
    "torchvision",
    "facenet.train",
    "facenet.eval",
    "facenet.convert",
)


def _python(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), base.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def photos(lfw_dir) -> list[str]:
    root = lfw_dir / "lfw-deepfunneled"
    return [str(p) for p in sorted(root.glob("A*/*_000[12].jpg"))[:6]]


# ------------------------------------------------------------------ OpenMP's wait policy


def test_the_cli_lets_idle_openmp_threads_sleep_unless_told_otherwise():
    code = (
        "import os, sys; import facenet.cli as cli; assert 'torch' not in sys.modules; "
        "cli.quiet_openmp_threads(); print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    assert _python(code).stdout.strip() == "PASSIVE"
    told = _python(code, env={"OMP_WAIT_POLICY": "ACTIVE"})
    assert told.stdout.strip() == "ACTIVE"  # the user's choice wins
    late = "import os, torch, facenet.cli as c; c.quiet_openmp_threads(); print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _python(late).stdout.strip() == "None"  # too late to matter: left alone


ANSWERS = r"""
import hashlib, sys, torch
from facenet.data.images import load_image
from facenet.detect.align import crop_box
from facenet.detect.mtcnn import MTCNN
from facenet.models.inference import embed_faces
from facenet.models.loading import load_model
model, detector = load_model(sys.argv[1]), MTCNN(device="cpu")
h = hashlib.sha256(str(torch.get_num_threads()).encode())
for path in sys.argv[2:]:
    image = load_image(path)
    for d in detector.detect(image):
        h.update(repr((d.box, d.landmarks.tolist(), d.score)).encode())
        h.update(embed_faces(model, [crop_box(image, d.box, 96)], framed=True).numpy().tobytes())
print(h.hexdigest())
"""


def test_answers_do_not_depend_on_the_openmp_wait_policy(photos):
    runs = {
        policy: _python(
            ANSWERS, BUNDLED, *photos, env={"OMP_WAIT_POLICY": policy} if policy else {}
        )
        for policy in ("PASSIVE", "ACTIVE", "")
    }
    for p in runs.values():
        assert p.returncode == 0, p.stderr
    assert len({p.stdout for p in runs.values()}) == 1, {k: p.stdout for k, p in runs.items()}


# ------------------------------------------------------------------ the commands as processes


AS_PROGRAM = r"""
import json, sys
from facenet.cli import main
as_program = sys.argv[1] == "program"
sys.argv = ["facenet", *sys.argv[2:]]
code = main() if as_program else main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in UNUSED if m in sys.modules)}))
"""


def _run_cli(how: str, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
    """``facenet ARGV`` in a fresh process: as the program (``main()`` reading sys.argv, as the
    entry point does) or through ``main(argv)``: exit code, what it printed, which of UNUSED it
    imported."""
    p = _python(AS_PROGRAM.replace("UNUSED", repr(list(UNUSED))), how, *argv, env=env)
    *printed, last = p.stdout.strip().splitlines()
    found = json.loads(last)
    return found["code"], "\n".join(printed), found["loaded"]


@pytest.mark.slow
def test_photo_commands_as_processes_answer_as_before_and_import_nothing_unused(
    photos, cli, tmp_path
):
    """The program (OpenMP threads sleeping, imports frozen) against ``main(argv)`` with
    spinning threads and the collector as it was: the same exit codes and output."""
    a, b = photos[:2]
    gallery = tmp_path / "gallery"
    for i, name in enumerate(("first", "second")):
        code, _, err = cli("gallery", "enroll", name, *photos[2 + 2 * i : 4 + 2 * i],
                           "--gallery", gallery, "--model", BUNDLED)  # fmt: skip
        assert code == 0, err
    commands = {
        "verify": ["verify", a, b, "--model", BUNDLED, "--json"],
        "identify": ["identify", photos[2], "--gallery", str(gallery), "--json"],
        "embed": ["embed", a, b, "--model", BUNDLED, "--out", str(tmp_path / "x.npz")],
    }
    for verb, argv in commands.items():
        as_before = _run_cli("main(argv)", *argv, env={"OMP_WAIT_POLICY": "ACTIVE"})
        as_program = _run_cli("program", *argv)
        assert as_program[:2] == as_before[:2], verb
        used = {"faiss"} if verb == "identify" else set()  # the gallery's search index
        assert set(as_program[2]) <= used, f"facenet {verb} imported {as_program[2]}"
    with np.load(tmp_path / "x.npz") as f:
        assert len(f["embedding"]) >= 2


# ------------------------------------------------------------------ weights files


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("dtype", [None, torch.float16], ids=["fp32", "fp16"])
def test_a_weights_file_loads_bit_for_bit(name, dtype, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    path = save_weights(model, tmp_path / "w.safetensors", dtype=dtype)
    loaded = load_weights_file(path)
    expected = {
        k: v if dtype is None or not v.is_floating_point() else v.to(dtype).to(v.dtype)
        for k, v in model.state_dict().items()
    }
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].device.type == "cpu", k
        assert torch.equal(got[k], v), k
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    assert not loaded.training
    assert all(p.requires_grad for p in loaded.parameters())
    if dtype is None:
        x = torch.randn(2, 3, *model.spec.input_size)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_a_loaded_model_owns_its_tensors_not_the_file(tmp_path):
    torch.manual_seed(0)
    path = save_weights(create_model("tiny").eval(), tmp_path / "w.safetensors")
    loaded = load_weights_file(path)
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    with open(path, "r+b") as f:  # rewritten in place, same length: a mapped model would change
        f.write(b"\0" * path.stat().st_size)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, before[k]), k


class _WithHiddenBuffer(nn.Module):
    """A module with a tensor outside its state dict (a non-persistent buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("scale", torch.full((2,), 2.0), persistent=False)

    def forward(self, x):
        return self.linear(x) * self.scale


def test_a_model_with_tensors_outside_its_state_dict_is_built_on_the_cpu_instead():
    torch.manual_seed(0)
    state = _WithHiddenBuffer().state_dict()
    with torch.device("meta"):
        on_meta = _WithHiddenBuffer()
    model = _with_state(on_meta, state, _WithHiddenBuffer)
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    assert torch.equal(model.scale, torch.full((2,), 2.0))
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v)
