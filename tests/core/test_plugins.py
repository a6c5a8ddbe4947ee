"""The plugin manager: registries, entry point loading, blocking, and the test kit.

Entry point tests build a throwaway distribution on disk (``<name>-0.1.dist-info`` with
``METADATA`` and ``entry_points.txt``, plus the plugin module) and put it on ``sys.path``
(in this process) or ``PYTHONPATH`` (for a ``runyard`` subprocess).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import runyard as run
import taskdefs
from runyard.artifacts import ArtifactStoreRegistry, LocalArtifactStore
from runyard.errors import ConfigError, PluginError
from runyard.executor import Executor
from runyard.hookspecs import hookimpl
from runyard.plugins import ExecutorRegistry, Plugins, plugin_manager, reset_plugin_manager
from runyard.testing import registered_plugin
from runyard_local.backend import LocalBackend

_unique = itertools.count()

GOOD_MODULE = """
from runyard.artifacts import LocalArtifactStore
from runyard.hookspecs import hookimpl


class Store(LocalArtifactStore):
    name = "{store}"


@hookimpl
def runyard_register_artifact_stores(registry):
    registry.add(Store())
"""

BROKEN_MODULE = 'raise RuntimeError("boom on import")\n'


@attrs.define
class SiteDir:
    """A folder of throwaway distributions, on sys.path for this test."""

    path: Path

    def add(
        self,
        dist: str,
        modules: dict[str, str],
        plugins: dict[str, str] | None = None,
        exports: dict[str, str] | None = None,
    ) -> None:
        info = self.path / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        groups = {"runyard.plugins": plugins or {}, "runyard.exports": exports or {}}
        (info / "entry_points.txt").write_text(
            "".join(
                f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                for group, eps in groups.items()
                if eps
            )
        )
        for module, source in modules.items():
            (self.path / f"{module}.py").write_text(source)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SiteDir:
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]))
    return SiteDir(path)


@pytest.fixture(autouse=True)
def _forget_manager() -> Iterator[None]:
    """Tests here rebuild the process-wide manager; the next test must not see theirs."""
    yield
    reset_plugin_manager()


def fresh_manager() -> Plugins:
    """The process-wide manager, rebuilt now (after the test changed sys.path or env vars)."""
    reset_plugin_manager()
    return plugin_manager()


def names() -> tuple[str, str, str]:
    """Unique (distribution, entry point, module) names, so no test sees another's modules."""
    n = next(_unique)
    return f"runyard-test-plugin-{n}", f"test-ep-{n}", f"runyard_test_plugin_{n}"


def runyard_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard", *args], capture_output=True, text=True, timeout=60, check=False
    )


# ------------------------------------------------------------------------------ registries
@attrs.define
class OneKindExecutor(Executor):
    kind: ClassVar[str] = "test-contested"


@attrs.define
class SameKindExecutor(Executor):
    kind: ClassVar[str] = "test-contested"


class RegistersOneKind:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(OneKindExecutor, LocalBackend)


class RegistersSameKind:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(SameKindExecutor, LocalBackend)


def test_two_plugins_registering_one_executor_kind_are_refused_naming_both(runyard_plugins: Plugins) -> None:
    with (
        registered_plugin(RegistersOneKind(), name="first-provider"),
        registered_plugin(RegistersSameKind(), name="second-provider"),
        pytest.raises(PluginError) as err,
    ):
        runyard_plugins.executors.executor_class("test-contested")

    message = str(err.value)
    assert "'test-contested'" in message
    assert "'first-provider'" in message
    assert "'second-provider'" in message


def test_an_artifact_store_named_like_an_installed_one_is_refused_naming_both(
    runyard_plugins: Plugins,
) -> None:
    class Impostor:
        @hookimpl
        def runyard_register_artifact_stores(self, registry: ArtifactStoreRegistry) -> None:
            registry.add(LocalArtifactStore())

    with registered_plugin(Impostor(), name="impostor"), pytest.raises(PluginError) as err:
        runyard_plugins.artifact_store("local")

    assert "'runyard.builtin'" in str(err.value)
    assert "'impostor'" in str(err.value)


def test_an_executor_class_without_a_kind_is_refused(runyard_plugins: Plugins) -> None:
    @attrs.define
    class Kindless(Executor):
        pass

    class Registers:
        @hookimpl
        def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
            registry.add(Kindless, LocalBackend)

    with registered_plugin(Registers()), pytest.raises(PluginError, match="Kindless has no 'kind'"):
        runyard_plugins.executors.names()


def test_a_plugin_implementing_an_unknown_hook_is_refused_and_left_unregistered(
    runyard_plugins: Plugins,
) -> None:
    class Misspelled:
        @hookimpl
        def runyard_register_executor(self, registry: Any) -> None:  # no such hook: one 's' short
            raise AssertionError("never called")

    with pytest.raises(PluginError, match="runyard_register_executor"):
        runyard_plugins.register(Misspelled(), name="misspelled")

    assert "misspelled" not in [p.name for p in runyard_plugins.describe()]


# ------------------------------------------------------------------------------ the test kit
def test_registered_plugin_unregisters_even_when_the_block_raises(runyard_plugins: Plugins) -> None:
    with pytest.raises(RuntimeError), registered_plugin(RegistersOneKind(), name="short-lived"):
        assert "test-contested" in runyard_plugins.executors.names()
        raise RuntimeError("the test body failed")

    assert "short-lived" not in [p.name for p in runyard_plugins.describe()]
    assert "test-contested" not in runyard_plugins.executors.names()


def test_runyard_plugins_fixture_is_the_process_wide_manager_with_installed_plugins(
    runyard_plugins: Plugins,
) -> None:
    assert runyard_plugins is plugin_manager()
    assert {"runyard.builtin", "local"} <= {p.name for p in runyard_plugins.describe()}
    assert "local" in runyard_plugins.executors.names()


# ------------------------------------------------------------------------------ entry points
def test_an_installed_plugin_is_loaded_and_listed_with_its_distribution_and_hooks(site: SiteDir) -> None:
    dist, ep, module = names()
    site.add(dist, {module: GOOD_MODULE.format(store=ep)}, plugins={ep: module})

    pm = fresh_manager()

    assert {"local", ep} <= set(pm.artifact_stores.names())  # installed plugins may add stores too
    info = {p.name: p for p in pm.describe()}[ep]
    assert (info.distribution, info.version, info.error) == (dist, "0.1", None)
    assert info.hooks == ["runyard_register_artifact_stores"]


def test_a_broken_plugin_is_reported_by_name_distribution_and_version(site: SiteDir) -> None:
    dist, ep, module = names()
    site.add(dist, {module: BROKEN_MODULE}, plugins={ep: module})

    with pytest.warns(RuntimeWarning, match=f"{ep}.*boom on import"):
        pm = fresh_manager()

    failure = pm.failures[ep]
    assert (failure.name, failure.distribution, failure.version) == (ep, dist, "0.1")
    assert failure.error == "RuntimeError: boom on import"
    assert failure in pm.describe()


def test_an_installed_plugin_implementing_an_unknown_hook_is_reported_as_failed(site: SiteDir) -> None:
    dist, ep, module = names()
    source = (
        "from runyard.hookspecs import hookimpl\n\n@hookimpl\ndef runyard_modify_tasks(spec):\n    pass\n"
    )
    site.add(dist, {module: source}, plugins={ep: module})

    with pytest.warns(RuntimeWarning, match=ep):
        pm = fresh_manager()

    assert pm.failures[ep].error is not None
    assert "runyard_modify_tasks" in pm.failures[ep].error
    assert ep not in [p.name for p in pm.describe() if p.error is None]


def test_a_broken_plugin_leaves_everything_else_working(site: SiteDir) -> None:
    dist, ep, module = names()
    site.add(dist, {module: BROKEN_MODULE}, plugins={ep: module})
    with pytest.warns(RuntimeWarning):
        pm = fresh_manager()

    assert "local" in [p.name for p in pm.describe() if p.error is None]
    exp = run.Experiment("despite-a-broken-plugin")
    task_id = exp.add(run.Config(taskdefs.hello), executor=run.LocalExecutor())
    assert exp.run() == "SUCCEEDED"
    assert exp.get_logs(task_id).stdout == "hello world\n"


def test_runyard_plugins_command_shows_a_broken_plugin_and_the_working_ones(site: SiteDir) -> None:
    dist, ep, module = names()
    site.add(dist, {module: BROKEN_MODULE}, plugins={ep: module})

    result = runyard_cli("plugins")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"{ep} ({dist} 0.1)  FAILED TO LOAD: RuntimeError: boom on import" in lines
    assert f"local (runyard-local {metadata.version('runyard-local')})" in lines
    assert "  exports: LocalExecutor" in lines


def test_runyard_plugins_json_lists_hooks_exports_and_errors(site: SiteDir) -> None:
    good_dist, good_ep, good_module = names()
    site.add(good_dist, {good_module: GOOD_MODULE.format(store=good_ep)}, plugins={good_ep: good_module})
    bad_dist, bad_ep, bad_module = names()
    site.add(bad_dist, {bad_module: BROKEN_MODULE}, plugins={bad_ep: bad_module})

    result = runyard_cli("plugins", "--json")

    assert result.returncode == 0, result.stderr
    by_name = {p["name"]: p for p in json.loads(result.stdout)}
    assert by_name[good_ep] == {
        "name": good_ep, "distribution": good_dist, "version": "0.1",
        "hooks": ["runyard_register_artifact_stores"], "exports": [], "error": None,
    }  # fmt: skip
    assert by_name[bad_ep]["error"] == "RuntimeError: boom on import"
    assert by_name["local"]["exports"] == ["LocalExecutor"]
    assert by_name["runyard.builtin"]["distribution"] == "runyard"


def test_block_plugins_skips_a_plugin_named_by_its_entry_point(
    site: SiteDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist, ep, module = names()
    site.add(dist, {module: BROKEN_MODULE}, plugins={ep: module})
    monkeypatch.setenv("RUNYARD_BLOCK_PLUGINS", f"someone-else, {ep}")

    pm = fresh_manager()  # no warning: the broken module is never imported

    assert pm.failures == {}
    assert module not in sys.modules
    assert "local" in pm.executors.names()


def test_block_plugins_skips_a_plugin_named_by_its_distribution(
    site: SiteDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist, ep, module = names()
    site.add(dist, {module: GOOD_MODULE.format(store=ep)}, plugins={ep: module})
    monkeypatch.setenv("RUNYARD_BLOCK_PLUGINS", dist)

    pm = fresh_manager()

    assert ep not in [p.name for p in pm.describe()]
    assert ep not in pm.artifact_stores.names()


def test_disable_autoload_loads_no_entry_point(site: SiteDir, monkeypatch: pytest.MonkeyPatch) -> None:
    dist, ep, module = names()
    site.add(dist, {module: GOOD_MODULE.format(store=ep)}, plugins={ep: module})
    monkeypatch.setenv("RUNYARD_DISABLE_PLUGIN_AUTOLOAD", "1")

    pm = fresh_manager()

    assert [p.name for p in pm.describe()] == ["runyard.builtin"]
    assert module not in sys.modules
    assert pm.executors.names() == []


def test_disable_autoload_makes_add_say_the_local_executor_is_not_registered_and_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNYARD_DISABLE_PLUGIN_AUTOLOAD", "1")
    fresh_manager()
    exp = run.Experiment("autoload-off")

    with pytest.raises(ConfigError, match=r"executor kind named 'local'.*RUNYARD_DISABLE_PLUGIN_AUTOLOAD"):
        exp.add(run.Config(taskdefs.hello))


def test_with_autoload_disabled_a_test_registers_the_plugin_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    from runyard_local import plugin as local_plugin

    monkeypatch.setenv("RUNYARD_DISABLE_PLUGIN_AUTOLOAD", "1")
    fresh_manager()

    with registered_plugin(local_plugin, name="local"):
        exp = run.Experiment("registered-by-hand")
        exp.add(run.Config(taskdefs.hello))
        assert exp.run() == "SUCCEEDED"
