"""runyard-nice's own tests, written with runyard's pytest plugin (``runyard.testing``):
``runyard_home`` gives each test an empty runyard home, ``runyard_plugins`` a freshly
loaded plugin manager, ``runyard_hook_calls`` the hook calls it made, and
``registered_plugin`` registers a plugin in-process for a ``with`` block.

They expect runyard-nice to be installed (its entry points are how runyard finds it).
"""

from __future__ import annotations

import os

import nice_tasks
import pytest
import runyard as run
from runyard.plugins import Plugins
from runyard.testing import HookRecorder, recorded_hook_calls, registered_plugin
from runyard_nice import NiceExecutor, plugin


@pytest.fixture(autouse=True)
def _home(runyard_home: str) -> str:
    return runyard_home


def expected_niceness(added: int) -> int:
    return max(-20, min(19, os.nice(0) + added))  # nice -n adds to the launcher's niceness


def test_a_script_task_runs_with_the_added_niceness(runyard_plugins: Plugins) -> None:
    exp = run.Experiment("nice-script")
    task_id = exp.add(run.Script(inline="nice"), executor=run.NiceExecutor(niceness=5))

    assert exp.run() == "SUCCEEDED"
    assert int(exp.get_logs(task_id).stdout) == expected_niceness(5)


def test_a_python_task_runs_with_the_added_niceness(runyard_plugins: Plugins) -> None:
    exp = run.Experiment("nice-python")
    task_id = exp.add(run.Config(nice_tasks.report_niceness), executor=run.NiceExecutor(niceness=3))

    assert exp.run() == "SUCCEEDED"
    assert int(exp.get_logs(task_id).stdout) == expected_niceness(3)


def test_a_task_runs_on_the_chosen_cpus(runyard_plugins: Plugins) -> None:
    cpu = str(min(os.sched_getaffinity(0)))
    exp = run.Experiment("nice-cpus")
    task_id = exp.add(
        run.Script(inline="grep Cpus_allowed_list /proc/self/status"),
        executor=run.NiceExecutor(niceness=1, cpus=cpu),
    )

    assert exp.run() == "SUCCEEDED"
    assert exp.get_logs(task_id).stdout.split() == ["Cpus_allowed_list:", cpu]


def test_the_executor_is_rebuilt_from_the_store_in_any_process(runyard_plugins: Plugins) -> None:
    exp = run.Experiment("nice-stored")
    exp.add(run.Script(inline="true"), executor=NiceExecutor(niceness=7, cpus="0", env_vars={"A": "b"}))

    [task] = run.Experiment.from_id(exp.experiment_id).tasks
    assert task.executor == NiceExecutor(niceness=7, cpus="0", env_vars={"A": "b"})
    assert task.executor.describe() == "nice 7 cpus 0"


@pytest.mark.parametrize("field", [{"niceness": 20}, {"niceness": "5"}, {"cpus": "all"}, {"cpus": 0}])
def test_invalid_fields_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(run.ConfigError, match="NiceExecutor"):
        NiceExecutor(**field)  # type: ignore[arg-type]


def test_the_plugin_is_installed_with_its_hook_and_export(runyard_plugins: Plugins) -> None:
    info = {p.name: p for p in runyard_plugins.describe()}["nice"]
    assert (info.distribution, info.hooks, info.exports) == (
        "runyard-nice",
        ["runyard_register_executors"],
        ["NiceExecutor"],
    )
    assert run.NiceExecutor is NiceExecutor


@pytest.fixture
def plugins_without_autoload(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Plugins:
    """A fresh plugin manager that loads no installed plugin: only what the test registers."""
    monkeypatch.setenv("RUNYARD_DISABLE_PLUGIN_AUTOLOAD", "1")
    manager: Plugins = request.getfixturevalue("runyard_plugins")  # built after the variable is set
    return manager


def test_the_hook_module_registered_in_process_runs_tasks(plugins_without_autoload: Plugins) -> None:
    with recorded_hook_calls() as calls, registered_plugin(plugin, name="nice-under-test"):
        exp = run.Experiment("nice-registered")
        task_id = exp.add(run.Script(inline="echo ran"), executor=NiceExecutor())
        assert exp.run() == "SUCCEEDED"
        assert exp.get_logs(task_id).stdout == "ran\n"

    assert [c.plugins for c in calls.of("runyard_register_executors")] == [("nice-under-test",)]
    assert plugins_without_autoload.executors.names() == []  # unregistered when the block ended


def test_the_hook_calls_show_the_registration(
    runyard_hook_calls: HookRecorder, runyard_plugins: Plugins
) -> None:
    runyard_plugins.executors.executor_class("nice")
    assert ("nice",) in [c.plugins for c in runyard_hook_calls.of("runyard_register_executors")]
