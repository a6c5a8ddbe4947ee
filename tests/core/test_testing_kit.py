"""runyard.testing, the kit for plugin authors: the hook-call recorder (which hooks runyard
called, with what, and what came back) and the clean-up behind the runyard_home fixture."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import runyard as run
import taskdefs
from runyard.executor import Executor
from runyard.hookspecs import hookimpl
from runyard.logs import LogSource
from runyard.plugins import ExecutorRegistry, Plugins, TaskSpec
from runyard.store import close_store, open_store
from runyard.testing import HookRecorder, recorded_hook_calls, registered_plugin

ROOT = Path(__file__).resolve().parents[2]


class TagsTasks:
    @hookimpl
    def runyard_modify_task(self, spec: TaskSpec) -> None:
        spec.executor.env_vars["TAGGED"] = "yes"


class Explodes:
    @hookimpl
    def runyard_modify_task(self, spec: TaskSpec) -> None:
        raise RuntimeError("modifier broke")


class NoLogs:
    @hookimpl
    def runyard_log_source(self, executor: Executor) -> LogSource | None:
        return None


def test_a_hook_call_is_recorded_with_its_arguments_and_plugins(runyard_hook_calls: HookRecorder) -> None:
    exp = run.Experiment("recorded")
    with registered_plugin(TagsTasks(), name="tagger"):
        task_id = exp.add(run.Config(taskdefs.hello))

    [call] = runyard_hook_calls.of("runyard_modify_task")
    assert call.kwargs["spec"].task_id == task_id
    assert call.kwargs["spec"].executor.env_vars["TAGGED"] == "yes"  # the live object, after the call
    assert "tagger" in call.plugins
    assert (call.result, call.exception) == ([], None)


def test_a_first_result_hook_records_the_value_it_returned(runyard_hook_calls: HookRecorder) -> None:
    exp = run.Experiment("recorded-logs")
    with registered_plugin(NoLogs(), name="no-logs"):
        task_id = exp.add(run.Config(taskdefs.hello))
        assert exp.run() == "SUCCEEDED"
        exp.get_logs(task_id)

    call = runyard_hook_calls.of("runyard_log_source")[0]
    # called in this order (installed executor plugins in between say None); builtin answers
    assert (call.plugins[0], call.plugins[-1]) == ("no-logs", "runyard.builtin")
    assert isinstance(call.result, LogSource)


def test_registrar_hooks_are_recorded_once_per_implementing_plugin(
    runyard_plugins: Plugins, runyard_hook_calls: HookRecorder
) -> None:
    class Registers:
        @hookimpl
        def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
            pass

    with registered_plugin(Registers(), name="registers-nothing"):
        runyard_plugins.executors.names()

    calls = runyard_hook_calls.of("runyard_register_executors")
    assert ("registers-nothing",) in [c.plugins for c in calls]
    assert all(len(c.plugins) == 1 for c in calls)
    assert all(isinstance(c.kwargs["registry"], ExecutorRegistry) for c in calls)


def test_an_exception_from_a_hook_is_recorded_and_still_raised(runyard_hook_calls: HookRecorder) -> None:
    exp = run.Experiment("recorded-error")
    with registered_plugin(Explodes(), name="explodes"), pytest.raises(RuntimeError, match="modifier broke"):
        exp.add(run.Config(taskdefs.hello))

    [call] = runyard_hook_calls.of("runyard_modify_task")
    assert isinstance(call.exception, RuntimeError)
    assert call.result is None


def test_names_lists_the_calls_in_order_and_clear_forgets_them(runyard_hook_calls: HookRecorder) -> None:
    exp = run.Experiment("recorded-names")
    task_id = exp.add(run.Config(taskdefs.hello))
    assert exp.run() == "SUCCEEDED"
    exp.get_logs(task_id)
    names = runyard_hook_calls.names()
    assert names.index("runyard_modify_task") < names.index("runyard_log_source")

    runyard_hook_calls.clear()
    assert runyard_hook_calls.calls == []


def test_the_recorder_stops_recording_when_its_block_ends_even_on_error(runyard_plugins: Plugins) -> None:
    exp = run.Experiment("recorder-removed")
    with pytest.raises(KeyError), recorded_hook_calls(runyard_plugins) as recorder:
        exp.add(run.Config(taskdefs.hello), name="inside")
        raise KeyError("leave the block")
    exp.add(run.Config(taskdefs.hello), name="outside")

    assert [c.kwargs["spec"].task_id for c in recorder.of("runyard_modify_task")] == ["inside"]


def test_the_plugin_guide_documents_the_recorder() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    for name in ("runyard_hook_calls", "recorded_hook_calls", "HookRecorder", "HookCall"):
        assert f"`{name}" in guide, name


def test_runyard_home_is_a_fresh_empty_folder_named_by_runyard_home(runyard_home: str) -> None:
    assert os.environ["RUNYARD_HOME"] == runyard_home
    assert not os.path.exists(runyard_home) or os.listdir(runyard_home) == []


def test_close_store_closes_the_homes_connection_and_the_next_open_is_a_new_store(tmp_path: Path) -> None:
    # what runyard_home does after each test, so a suite does not pile up open databases
    home = str(tmp_path / "discarded-home")
    store = open_store(home)
    close_store(home)

    with pytest.raises(sqlite3.ProgrammingError):
        store.experiments()
    assert open_store(home) is not store
    close_store(home)
