"""States: str enums equal to their names, and the experiment's state from its tasks'."""

from __future__ import annotations

import pytest
import runyard as run
import taskdefs
from _core_helpers import task, wait_until
from runyard.states import experiment_state

S = run.State
NAMES = ["CREATED", "PENDING", "SUBMITTED", "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED"]


def test_there_are_exactly_the_eight_documented_states() -> None:
    assert [s.name for s in S] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_a_state_equals_its_name(name: str) -> None:
    assert S[name] == name
    assert name == S[name]
    assert S(name) is S[name]
    assert isinstance(S[name], str)


@pytest.mark.parametrize("name", NAMES)
def test_str_and_f_strings_give_the_bare_name(name: str) -> None:
    assert str(S[name]) == name
    assert f"{S[name]}" == name
    assert f"{S[name]:>10}" == f"{name:>10}"
    assert "state: %s" % S[name] == f"state: {name}"


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ([], "SUCCEEDED"),
        (["SUCCEEDED", "SUCCEEDED"], "SUCCEEDED"),
        (["SUCCEEDED", "FAILED"], "FAILED"),
        (["SUCCEEDED", "CANCELLED"], "FAILED"),
        (["CANCELLED"], "FAILED"),
        (["PENDING", "PENDING"], "PENDING"),
        (["PENDING", "PAUSED"], "PAUSED"),
        (["PAUSED", "SUBMITTED"], "SUBMITTED"),
        (["SUBMITTED", "RUNNING", "PAUSED"], "RUNNING"),
        (["RUNNING", "FAILED"], "RUNNING"),  # not every task has ended: not FAILED yet
        (["SUCCEEDED", "PENDING"], "RUNNING"),  # some ended, others wait their turn
    ],
)
def test_the_experiment_state_rules(tasks: list[str], expected: str) -> None:
    assert experiment_state([S(t) for t in tasks]) == expected


def test_a_new_experiment_never_launched_is_created_and_its_tasks_pending() -> None:
    exp = run.Experiment("states-new")
    exp.add(run.Config(taskdefs.hello))
    assert exp.status() == "CREATED"
    assert exp.tasks[0].status == "PENDING"


def test_an_experiment_whose_tasks_all_succeeded_is_succeeded() -> None:
    exp = run.Experiment("states-ok")
    exp.add([run.Config(taskdefs.hello), run.Config(taskdefs.hello)])
    assert exp.run() == "SUCCEEDED"
    assert exp.status() == "SUCCEEDED"
    assert f"{exp.status()}" == "SUCCEEDED"


def test_an_experiment_with_a_failed_task_is_failed_once_all_ended() -> None:
    exp = run.Experiment("states-failed")
    exp.add(run.Config(taskdefs.hello))
    exp.add(run.Config(taskdefs.exit_with, 1))
    assert exp.run() == "FAILED"
    assert [t.status for t in exp.tasks] == ["SUCCEEDED", "FAILED"]


def test_an_experiment_with_a_running_task_is_running() -> None:
    exp = run.Experiment("states-running")
    sleeper = exp.add(run.Config(taskdefs.sleep_then_print, seconds=60), name="sleeper")
    exp.add(run.Config(taskdefs.hello), name="quick")
    exp.run(detach=True)
    wait_until(lambda: task(exp, "quick").status == "SUCCEEDED" and task(exp, sleeper).status == "RUNNING")
    assert exp.status() == "RUNNING"
    exp.cancel(sleeper)
    assert exp.wait(timeout=30) == "FAILED"  # a cancelled task makes the ended experiment FAILED


def test_task_times_are_timezone_aware() -> None:
    exp = run.Experiment("states-times")
    exp.add(run.Config(taskdefs.hello))
    assert exp.tasks[0].start_time is None and exp.tasks[0].end_time is None
    exp.run()
    view = exp.tasks[0]
    assert view.start_time.utcoffset() is not None
    assert view.end_time.utcoffset() is not None
    assert view.start_time <= view.end_time
