"""The layers of docs/architecture.md, checked on the source: which part of the package may
import which, and no import cycles."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "facenet"

# Each part of the package and the parts it may import (its own modules always). A part is a
# subpackage (facenet.data) or a top-level module (facenet.preprocess). Kept in step with
# docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "utils": set(),
    "fingerprint": set(),
    "quantize": set(),  # NumPy only: int8 codes of embeddings (128-byte faces)
    "config": {"utils"},
    "data": {"utils", "config"},
    "preprocess": {"data"},
    "losses": set(),
    "models": {"preprocess", "fingerprint", "quantize", "utils"},
    "detect": {"data", "utils"},
    "convert": {"models", "fingerprint", "preprocess", "utils"},
    "eval": {"data", "detect", "models", "preprocess", "fingerprint", "quantize", "utils"},
    "train": {
        "config",
        "data",
        "eval",
        "losses",
        "models",
        "preprocess",
        "fingerprint",
        "quantize",
        "utils",
    },
    "apps": {"data", "detect", "eval", "models", "preprocess", "fingerprint", "utils"},
    "serve": {
        "api",
        "apps",
        "data",
        "detect",
        "eval",
        "models",
        "preprocess",
        "fingerprint",
        "utils",
    },
    "commands": {
        "api",
        "apps",
        "config",
        "convert",
        "data",
        "detect",
        "eval",
        "fingerprint",
        "losses",
        "models",
        "preprocess",
        "serve",
        "train",
        "utils",
    },
    "api": {"apps", "data", "fingerprint", "models"},
    "cli": {"commands", "utils"},
    "__main__": {"cli"},
    "facenet": {"api"},  # the package's __init__ (facenet.load, facenet.Gallery on first use)
}
# why: create_model(name, pretrained=TAG) loads published weights, and loading a weights file
# builds its architecture: a real mutual recursion, kept inside the models layer.
KNOWN_CYCLE = {"facenet.models.loading", "facenet.models.pretrained", "facenet.models.registry"}


def _code_shape():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "scripts" / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["code_shape"] = module  # why: its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shape():
    if not SRC.is_dir():
        pytest.skip(f"no source tree at {SRC} (installed package)")
    return _code_shape()


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "facenet"


def test_every_part_imports_only_the_layers_below_it(shape):
    graph = shape.import_graph(SRC)
    assert {_part(m) for m in graph} <= set(ALLOWED), "a new part: add it to ALLOWED and the docs"
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if _part(target) != _part(module) and _part(target) not in ALLOWED[_part(module)]
    )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_but_the_documented_one(shape):
    report = shape.analyse(SRC, limit=400)
    assert report["import_cycles"] == []
    assert [set(c) for c in report["import_cycles_any"]] in ([], [KNOWN_CYCLE])


def test_the_checker_sees_a_forbidden_import_and_a_cycle(shape, tmp_path):
    """The two checks above can fail: a toy package with a cycle and a layer breach."""
    pkg = tmp_path / "facenet"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from facenet.data import b\nimport facenet.apps.x\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from facenet.data.a import g\n")
    (pkg / "apps").mkdir()
    (pkg / "apps" / "__init__.py").write_text("")
    (pkg / "apps" / "x.py").write_text("")
    graph = shape.import_graph(pkg)
    assert "facenet.apps.x" in graph["facenet.data.a"]
    report = shape.analyse(pkg, limit=400)
    assert report["import_cycles"] == [] and report["in_function_imports"] == 1
    assert [set(c) for c in report["import_cycles_any"]] == [{"facenet.data.a", "facenet.data.b"}]
