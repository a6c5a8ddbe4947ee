"""The installed task modifier: ``RUNYARD_MIXED_PRECISION`` switches mixed precision on for
every task added in the process; unset, the plugin changes nothing."""

from __future__ import annotations

import warnings

import pytest
import runyard as run
import taskdefs
from runyard.plugins import Plugins, plugin_manager
from runyard.testing import HookRecorder
from runyard_mixed_precision.hooks import ENV

GUIDE_ENV = {"NCCL_P2P_DISABLE": "1", "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}


def add_trainer(executor_class: type[run.Executor], **plugins: object) -> run.Experiment:
    exp = run.Experiment("mixed-precision-hook")
    exp.add(
        run.Config(taskdefs.Trainer), executor=executor_class(env_vars={"MINE": "1"}), name="train", **plugins
    )
    return exp


def stored_precision(exp: run.Experiment) -> str:
    return exp.create_snapshot().tasks[0]["task"]["kwargs"].get("precision", "unset")


@pytest.mark.alone
def test_the_plugin_is_installed_with_its_hook_and_export(runyard_plugins: Plugins) -> None:
    info = {p.name: p for p in runyard_plugins.describe()}["mixed-precision"]
    assert (info.distribution, info.hooks, info.exports, info.error) == (
        "runyard-mixed-precision",
        ["runyard_modify_task"],
        ["MixedPrecisionPlugin"],
        None,
    )


def test_unset_the_installed_hook_changes_nothing(
    process_executor: type[run.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    exp = add_trainer(process_executor)
    assert stored_precision(exp) == "unset"
    assert exp.tasks[0].executor.env_vars == {"MINE": "1"}


@pytest.mark.parametrize("value", ["", "0"])
def test_empty_or_zero_is_off(
    value: str, process_executor: type[run.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, value)
    exp = add_trainer(process_executor)
    assert stored_precision(exp) == "unset"
    assert exp.tasks[0].executor.env_vars == {"MINE": "1"}


def test_one_switches_on_bf16_mixed_and_the_env_vars_for_every_task(
    process_executor: type[run.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "1")
    exp = add_trainer(process_executor)
    assert stored_precision(exp) == "bf16-mixed"
    assert exp.tasks[0].executor.env_vars == {"MINE": "1", **GUIDE_ENV}


def test_a_precision_name_switches_on_that_precision(
    process_executor: type[run.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "16-mixed")
    exp = add_trainer(process_executor)
    assert stored_precision(exp) == "16-mixed"


def test_tasks_without_precision_get_the_env_vars_and_no_warning(
    process_executor: type[run.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "1")
    exp = run.Experiment("mixed-precision-hook-quiet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exp.add(run.Script(inline="echo prep"), executor=process_executor(), name="prep")
        exp.add(run.Config(taskdefs.hello), executor=process_executor(), name="hello")
    assert [t.executor.env_vars for t in exp.tasks] == [GUIDE_ENV, GUIDE_ENV]


def test_an_unknown_precision_fails_add_naming_the_variable_and_stores_nothing(
    process_executor: type[run.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "fp8")
    exp = run.Experiment("mixed-precision-hook-bad")
    with pytest.raises(run.ConfigError, match=r"RUNYARD_MIXED_PRECISION='fp8': .*unknown precision 'fp8'"):
        exp.add(run.Config(taskdefs.Trainer), executor=process_executor())
    assert exp.tasks == []


def test_a_plugin_object_on_the_task_overrides_the_variable(
    process_executor: type[run.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "1")
    exp = add_trainer(process_executor, plugins=[run.MixedPrecisionPlugin("16-true")])
    assert stored_precision(exp) == "16-true"


@pytest.fixture
def blocked(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> type[run.Executor]:
    """The tests' executor, with a plugin manager built while RUNYARD_BLOCK_PLUGINS blocks this plugin."""
    monkeypatch.setenv("RUNYARD_BLOCK_PLUGINS", "runyard-mixed-precision")
    executor_class: type[run.Executor] = request.getfixturevalue("process_executor")
    return executor_class


def test_a_blocked_plugin_applies_nothing(
    blocked: type[run.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "1")
    exp = add_trainer(blocked)
    assert "mixed-precision" not in [p.name for p in plugin_manager().describe()]
    assert stored_precision(exp) == "unset"


def test_the_hook_is_called_once_for_each_task_added(
    process_executor: type[run.Executor], runyard_hook_calls: HookRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "1")
    exp = run.Experiment("mixed-precision-hook-calls")
    ids = exp.add([run.Config(taskdefs.Trainer), run.Config(taskdefs.Trainer)], executor=process_executor())

    calls = runyard_hook_calls.of("runyard_modify_task")
    assert [c.kwargs["spec"].task_id for c in calls] == ids
    assert all("mixed-precision" in c.plugins for c in calls)
    assert [c.kwargs["spec"].task.precision for c in calls] == ["bf16-mixed", "bf16-mixed"]


@pytest.mark.alone
def test_a_real_run_sees_the_precision_and_the_env_vars(
    process_executor: type[run.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "bf16-true")
    exp = run.Experiment("mixed-precision-hook-run")
    task_id = exp.add(
        run.Config(taskdefs.report_precision, env_names=sorted(GUIDE_ENV)), executor=process_executor()
    )
    monkeypatch.delenv(ENV)  # applied at add(): what runs is what was stored

    assert exp.run() == "SUCCEEDED"
    assert exp.get_logs(task_id).stdout == (
        "precision=bf16-true\nNCCL_P2P_DISABLE=1\nPYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128\n"
    )
