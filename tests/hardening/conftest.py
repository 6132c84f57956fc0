"""Fixtures of the hardening tests (helpers in ``_world``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _world import build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good and bad inputs side by side (see ``_world.build_world``); treat as read-only."""
    return build_world(tmp_path_factory.mktemp("world"))
