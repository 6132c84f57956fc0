"""Shared fixtures: the real face data (skipped with a reason when absent) and seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from facenet.utils import default_data_dir


@pytest.fixture(scope="session", autouse=True)
def _facenet_cache_outside_home(tmp_path_factory):
    """No test writes ~/.cache: facenet's cache (converted weights, the MTCNN weight cache) is a
    session folder; a test that needs its own sets ``FACENET_CACHE`` again with monkeypatch."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FACENET_CACHE", str(tmp_path_factory.mktemp("facenet-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$FACENET_DATA``); skips the test when it is not there."""
    root = default_data_dir()
    if root is None:
        pytest.skip("real face data not found: set FACENET_DATA or place it at ../shared/data")
    return root


@pytest.fixture(scope="session")
def lfw_dir(shared_data: Path) -> Path:
    d = shared_data / "lfw"
    if not (d / "lfw-deepfunneled").is_dir():
        pytest.skip(f"LFW not found under {d}")
    return d


@pytest.fixture(scope="session")
def orl_dir(shared_data: Path) -> Path:
    d = shared_data / "orl"
    if not d.is_dir():
        pytest.skip(f"ORL not found under {d}")
    return d


class TrainingInterrupted(BaseException):
    """Raised inside ``facenet train`` by the ``interrupt_training`` fixture.

    why: a BaseException, like the kill it stands for: ``facenet.cli.main`` turns every
    ``Exception`` into a one-line error, and must not swallow this one."""


@pytest.fixture
def interrupt_training(monkeypatch):
    """``interrupt_training(step, fn, *args)`` runs ``fn(*args)`` (a training run, e.g. the CLI)
    and makes it die as it is about to start ``step``, after that step's checkpoint was written:
    every ``train()`` call inside gets a hook (``facenet.train.loop.Hook``) that raises
    ``TrainingInterrupted`` there. ``train`` is itself again afterwards, so the caller can
    ``--resume``."""
    # why: every test loads this file; the training package (and torch) only the tests that train
    import functools

    import facenet.train.loop as loop

    real = loop.train

    def run(step: int, fn, *args) -> None:
        def die_at(state) -> None:
            if state.step == step:
                raise TrainingInterrupted

        # why: the CLI calls ``facenet.train.loop.train`` itself; this hands that call the hook
        monkeypatch.setattr(loop, "train", functools.partial(real, hooks=[die_at]))
        try:
            with pytest.raises(TrainingInterrupted):
                fn(*args)
        finally:
            monkeypatch.setattr(loop, "train", real)

    return run


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` runs ``facenet argv`` in this process; returns (exit code, stdout, stderr)."""
    from facenet.cli import main

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
