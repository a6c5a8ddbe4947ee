"""A pytest plugin for plugin authors (and runyard's own tests).

Load it with ``pytest_plugins = ["runyard.testing"]`` in a top-level conftest.py, or with
``pytest -p runyard.testing``: it is no ``pytest11`` entry point, so it never loads into the test
runs of projects that merely have runyard installed.

Fixtures:

- ``runyard_home``: a fresh, empty runyard home for the test (sets ``RUNYARD_HOME``).
- ``runyard_plugins``: the process-wide plugin manager, rebuilt fresh for the test.
- ``runyard_hook_calls``: a :class:`HookRecorder` of every hook call made through that
  manager during the test (implies ``runyard_plugins``).

Context managers:

- :func:`registered_plugin`: register an in-process plugin (a module, class or object of
  ``@hookimpl`` functions) for the duration of a ``with`` block; it is always
  unregistered, even when the block raises.
- :func:`recorded_hook_calls`: record hook calls for the duration of a ``with`` block.

The recorder uses pluggy's public ``add_hookcall_monitoring`` and removes itself on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import pluggy
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


@attrs.frozen
class HookCall:
    """One call of a hook, as :class:`HookRecorder` saw it.

    ``kwargs`` are the objects the hook was called with, not copies: a mutable argument
    (a ``TaskSpec``, a registry) shows its state after the call. ``plugins`` names the
    plugins whose implementations pluggy called, in call order (a hook that stops at the
    first non-None result may not have reached them all). ``result`` is what the call
    returned (a list, or a single value for a first-result hook); ``exception`` what it
    raised, or None.
    """

    name: str
    kwargs: dict[str, Any]
    plugins: tuple[str, ...]
    result: Any = None
    exception: BaseException | None = None


class HookRecorder:
    """Every hook call made through one plugin manager, in order (see :func:`recorded_hook_calls`).

    Registrar hooks (``runyard_register_executors``, ``runyard_register_artifact_stores``)
    are called one implementation at a time, so they appear once per plugin.
    """

    def __init__(self) -> None:
        self.calls: list[HookCall] = []

    def names(self) -> list[str]:
        """The names of the hooks called, in order, repeats included."""
        return [call.name for call in self.calls]

    def of(self, hook: str) -> list[HookCall]:
        """The calls of one hook, in order."""
        return [call for call in self.calls if call.name == hook]

    def clear(self) -> None:
        """Forget the calls recorded so far."""
        self.calls.clear()

    def _before(
        self, hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
    ) -> None:
        pass

    def _after(
        self,
        outcome: pluggy.Result[Any],
        hook_name: str,
        hook_impls: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, Any],
    ) -> None:
        try:
            result, exception = outcome.get_result(), None
        except BaseException as exc:  # what the hook raised, recorded; pluggy re-raises it
            result, exception = None, exc
        plugins = tuple(impl.plugin_name for impl in reversed(hook_impls))  # pluggy's call order
        self.calls.append(HookCall(hook_name, dict(kwargs), plugins, result, exception))


@contextlib.contextmanager
def recorded_hook_calls(plugins: Plugins | None = None) -> Iterator[HookRecorder]:
    """Record every hook call made through ``plugins`` (default: the process-wide manager).

    The recorder is removed when the block ends, even when it raises. It sees calls made
    through that manager only: after ``reset_plugin_manager()`` runyard builds a new one.
    """
    manager = plugins if plugins is not None else plugin_manager()
    recorder = HookRecorder()
    undo = manager.pm.add_hookcall_monitoring(recorder._before, recorder._after)
    try:
        yield recorder
    finally:
        undo()


@pytest.fixture
def runyard_home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh runyard home for this test; its store is closed after the test."""
    from runyard.store import close_store

    home = str(tmp_path / "runyard-home")
    monkeypatch.setenv("RUNYARD_HOME", home)
    try:
        yield home
    finally:
        close_store(home)  # else every test leaves a database connection open


@pytest.fixture
def runyard_plugins() -> Iterator[Plugins]:
    """The process-wide plugin manager, fresh for this test and discarded after it."""
    reset_plugin_manager()
    try:
        yield plugin_manager()
    finally:
        reset_plugin_manager()


@pytest.fixture
def runyard_hook_calls(runyard_plugins: Plugins) -> Iterator[HookRecorder]:
    """Every hook call made through this test's fresh plugin manager."""
    with recorded_hook_calls(runyard_plugins) as recorder:
        yield recorder
