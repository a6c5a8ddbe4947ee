"""Shared test set-up: every test gets its own runyard home, and task processes can import
the task functions in tests/taskdefs.py."""

from __future__ import annotations

import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [TESTS, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
)
os.environ.setdefault("RUNYARD_PLAIN", "1")


@pytest.fixture(autouse=True)
def _fresh_home(runyard_home: str) -> str:
    """Every test gets an empty runyard home (RUNYARD_HOME)."""
    return runyard_home
