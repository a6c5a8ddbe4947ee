"""Task processes import their targets by module name: let them find ``nice_tasks``."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["runyard.testing"]  # runyard's test kit: runyard_home, runyard_plugins, ...

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def _targets_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
