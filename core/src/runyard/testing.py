"""A pytest plugin for plugin authors (and runyard's own tests).

Loaded automatically by pytest when runyard is installed (entry point ``pytest11``).

Fixtures:

- ``runyard_home``: a fresh, empty runyard home for the test (sets ``RUNYARD_HOME``).
- ``runyard_plugins``: the process-wide plugin manager, rebuilt fresh for the test.

Context manager :func:`registered_plugin`: register an in-process plugin (a module, class
or object of ``@hookimpl`` functions) for the duration of a ``with`` block; it is always
unregistered, even when the block raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from runyard.plugins import Plugins, plugin_manager, reset_plugin_manager


@contextlib.contextmanager
def registered_plugin(plugin: Any, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` with the process-wide manager inside the block; yields its name."""
    pm = plugin_manager()
    registered = pm.register(plugin, name=name)
    try:
        yield registered
    finally:
        pm.unregister(registered)


@pytest.fixture
def runyard_home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh runyard home for this test."""
    home = str(tmp_path / "runyard-home")
    monkeypatch.setenv("RUNYARD_HOME", home)
    return home


@pytest.fixture
def runyard_plugins() -> Iterator[Plugins]:
    """The process-wide plugin manager, fresh for this test and discarded after it."""
    reset_plugin_manager()
    try:
        yield plugin_manager()
    finally:
        reset_plugin_manager()
