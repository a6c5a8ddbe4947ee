"""What ``import runyard`` costs, and how names that plugins export resolve.

Import costs are checked in a fresh interpreter (this one has imported everything already).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import runyard as run
from runyard import plugins
from runyard.errors import PluginNotInstalledError
from runyard.plugins import reset_plugin_manager

HEAVY = ["paramiko", "docker", "pluggy", "cattrs", "sqlite3", "rich"]


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_runyard_loads_no_plugin_module() -> None:
    loaded = modules_after("import runyard")

    assert "runyard" in loaded
    assert sorted(m for m in loaded if m.startswith("runyard_")) == []


@pytest.mark.parametrize("module", HEAVY)
def test_import_runyard_loads_nothing_heavy(module: str) -> None:
    assert module not in modules_after("import runyard")


def test_a_core_name_does_not_load_the_plugin_manager() -> None:
    loaded = modules_after("import runyard as run\nrun.Config")

    assert "runyard.config" in loaded
    assert "runyard.plugins" not in loaded
    assert "pluggy" not in loaded


def test_local_executor_is_imported_only_when_first_used() -> None:
    code = (
        "import runyard as run\n"
        "before = 'runyard_local' in sys.modules\n"
        "cls = run.LocalExecutor\n"
        "print(json.dumps([before, cls.__module__, cls.kind]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", f"import json, sys\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout

    assert json.loads(out) == [False, "runyard_local.executor", "local"]


def test_local_executor_is_the_local_plugins_class() -> None:
    from runyard_local.executor import LocalExecutor

    assert run.LocalExecutor is LocalExecutor


# ------------------------------------------------------------------------------ missing plugins
@pytest.fixture
def absent_plugin(monkeypatch: pytest.MonkeyPatch) -> str:
    """A public name that a known plugin distribution provides, which is not installed here
    (every plugin of this repository is installed in the development venv)."""
    monkeypatch.setitem(plugins.KNOWN_EXPORTS, "QuantumExecutor", "runyard-quantum")
    return "QuantumExecutor"


def test_a_name_from_a_plugin_that_is_not_installed_says_what_to_install(absent_plugin: str) -> None:
    with pytest.raises(ImportError) as err:
        getattr(run, absent_plugin)

    assert isinstance(err.value, PluginNotInstalledError)
    assert str(err.value) == (
        "run.QuantumExecutor is provided by the runyard-quantum plugin, which is not installed: "
        "pip install runyard-quantum"
    )


def test_from_import_of_a_missing_plugins_name_raises_the_same_error(absent_plugin: str) -> None:
    with pytest.raises(PluginNotInstalledError, match="pip install runyard-quantum"):
        from runyard import QuantumExecutor  # type: ignore[attr-defined]  # noqa: F401


def test_a_blocked_plugins_name_says_it_is_blocked() -> None:
    code = (
        "import runyard as run\n"
        "try:\n    run.SlurmExecutor\nexcept ImportError as e:\n    print(type(e).__name__, e)\n"
    )
    env = {**os.environ, "RUNYARD_BLOCK_PLUGINS": "runyard-slurm"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, env=env
    ).stdout

    assert out == (
        "PluginNotInstalledError run.SlurmExecutor is provided by the runyard-slurm plugin, "
        "which RUNYARD_BLOCK_PLUGINS blocks\n"
    )


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        run.NoSuchThing  # noqa: B018
    assert not hasattr(run, "NoSuchThing")


def test_from_import_of_an_unknown_name_is_an_import_error() -> None:
    with pytest.raises(ImportError, match="NoSuchThing") as err:
        from runyard import NoSuchThing  # noqa: F401

    assert not isinstance(err.value, PluginNotInstalledError)


# ------------------------------------------------------------------------------ exports
@pytest.fixture
def exporting_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway distribution that exports ``ThrowawayExecutor`` under ``runyard.exports``."""
    site = tmp_path / "site"
    info = site / "runyard_throwaway-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: runyard-throwaway\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[runyard.exports]\nThrowawayExecutor = runyard_throwaway_exports:ThrowawayExecutor\n"
    )
    (site / "runyard_throwaway_exports.py").write_text("class ThrowawayExecutor:\n    kind = 'throwaway'\n")
    monkeypatch.syspath_prepend(str(site))
    reset_plugin_manager()  # forget exports read before the folder was on sys.path
    yield site
    reset_plugin_manager()
    vars(run).pop("ThrowawayExecutor", None)
    sys.modules.pop("runyard_throwaway_exports", None)


def test_a_name_exported_by_an_installed_distribution_resolves(exporting_dist: Path) -> None:
    assert "ThrowawayExecutor" in dir(run)
    assert "runyard_throwaway_exports" not in sys.modules  # listed from metadata, not imported

    cls = run.ThrowawayExecutor

    assert cls.__module__ == "runyard_throwaway_exports"
    assert cls.kind == "throwaway"


def test_an_exported_name_resolves_in_a_fresh_process(exporting_dist: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(exporting_dist), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", "from runyard import ThrowawayExecutor as cls; print(cls.kind)"],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    ).stdout  # fmt: skip

    assert out == "throwaway\n"
