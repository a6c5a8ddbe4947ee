"""Control from the API while an experiment runs: cancel, cancel_all, retry, pause, resume."""

from __future__ import annotations

import time

import runyard as run
import taskdefs
from _core_helpers import read_int, session_members, task, tree_gone, wait_until


def _sleeper(seconds: float = 60) -> run.Config:
    return run.Config(taskdefs.sleep_then_print, seconds=seconds)


def _counter(path) -> run.Script:
    """A script that writes an ever-increasing counter to ``path`` every 50 ms."""
    return run.Script(
        inline='i=0; while :; do i=$((i+1)); echo $i > "$1.tmp"; mv "$1.tmp" "$1"; sleep 0.05; done',
        args=[str(path)],
    )


def _running(exp: run.Experiment, task_id: str) -> run.TaskView:
    return wait_until(
        lambda: (v := task(exp, task_id)).status == "RUNNING" and v.job_id and v,
        what=f"{task_id} to run",
    )


# --- cancel ---------------------------------------------------------------------------------------
def test_cancelling_a_running_task_ends_its_process_group() -> None:
    exp = run.Experiment("cancel-running")
    t = exp.add(_sleeper(), name="sleeper")
    exp.run(detach=True)
    runner = int(_running(exp, t).job_id)
    assert session_members(runner)
    exp.cancel(t)
    assert task(exp, t).status == "CANCELLED"
    assert task(exp, t).reason == "cancelled by user"
    assert tree_gone(runner), f"processes {session_members(runner)} of the cancelled task are still alive"
    assert exp.wait(timeout=30) == "FAILED"


def test_cancelling_a_running_script_ends_its_whole_process_tree() -> None:
    exp = run.Experiment("cancel-tree")
    t = exp.add(run.Script(inline="sleep 60 & sleep 60 & wait"), name="tree")
    exp.run(detach=True)
    runner = int(_running(exp, t).job_id)
    wait_until(lambda: len(session_members(runner)) >= 3, what="the script's children to start")
    exp.cancel(t)
    assert tree_gone(runner), f"processes {session_members(runner)} of the cancelled task are still alive"
    assert task(exp, t).status == "CANCELLED"


def test_cancelling_a_pending_task_means_it_never_runs() -> None:
    exp = run.Experiment("cancel-pending")
    first = exp.add(_sleeper(1.0), name="first")
    later = exp.add(run.Config(taskdefs.hello), name="later", dependencies=[first])
    exp.run(detach=True)
    _running(exp, first)
    assert task(exp, later).status == "PENDING"
    exp.cancel(later)
    assert exp.wait(timeout=30) == "FAILED"
    view = task(exp, later)
    assert (view.status, view.reason, view.attempts, view.start_time) == (
        "CANCELLED",
        "cancelled by user",
        0,
        None,
    )
    assert task(exp, first).status == "SUCCEEDED"  # the other task was left alone


def test_cancel_all_cancels_every_task_that_has_not_ended_and_returns_their_ids() -> None:
    exp = run.Experiment("cancel-all")
    quick = exp.add(run.Config(taskdefs.hello), name="quick")
    a = exp.add(_sleeper(), name="a")
    b = exp.add(_sleeper(), name="b")
    c = exp.add(run.Config(taskdefs.hello), name="c", dependencies=[a])
    exp.run(detach=True)
    wait_until(lambda: task(exp, quick).status == "SUCCEEDED", what="quick to succeed")
    runners = [int(_running(exp, x).job_id) for x in (a, b)]
    cancelled = set(exp.cancel_all())
    # c may be cancelled as a dependent of a before cancel_all reaches it
    assert {a, b} <= cancelled <= {a, b, c}
    assert exp.wait(timeout=30) == "FAILED"
    assert task(exp, quick).status == "SUCCEEDED"
    assert [task(exp, x).status for x in (a, b, c)] == ["CANCELLED"] * 3
    for runner in runners:
        assert tree_gone(runner)


# --- retry --------------------------------------------------------------------------------------------
def test_retry_reruns_a_failed_task_and_its_dependents_and_nothing_else(tmp_path) -> None:
    counter = tmp_path / "runs"
    exp = run.Experiment("retry")
    flaky = exp.add(run.Config(taskdefs.count_runs, str(counter), fail_until=2), name="flaky")
    child = exp.add(run.Config(taskdefs.hello, name="child"), name="child", dependencies=[flaky])
    other = exp.add(run.Config(taskdefs.hello, name="other"), name="other")
    assert exp.run() == "FAILED"
    assert task(exp, child).status == "CANCELLED"
    other_before = task(exp, other)

    assert exp.retry(flaky) == [flaky, child]
    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert len(counter.read_text().splitlines()) == 2
    assert (task(exp, flaky).status, task(exp, flaky).attempts) == ("SUCCEEDED", 2)
    assert (task(exp, child).status, task(exp, child).attempts) == ("SUCCEEDED", 1)
    assert exp.get_logs(child).stdout == "hello child\n"
    other_after = task(exp, other)
    assert other_after.attempts == 1
    assert other_after.end_time == other_before.end_time


# --- pause and resume -------------------------------------------------------------------------------
def test_pausing_a_running_task_suspends_it_and_resuming_continues_it(tmp_path) -> None:
    path = tmp_path / "counter"
    exp = run.Experiment("pause-running")
    t = exp.add(_counter(path), name="counter")
    exp.run(detach=True)
    _running(exp, t)
    wait_until(lambda: (read_int(path) or 0) >= 3, what="the counter to advance")

    exp.pause(t)
    assert task(exp, t).status == "PAUSED"
    time.sleep(0.2)  # a write already under way may land
    held = read_int(path)
    time.sleep(0.8)
    assert read_int(path) == held, "the counter advanced while the task was paused"
    assert task(exp, t).status == "PAUSED"

    exp.resume(t)
    assert task(exp, t).status == "RUNNING"
    wait_until(lambda: (read_int(path) or 0) > held + 2, what="the counter to advance after resume")
    exp.cancel(t)


def test_pausing_a_pending_task_holds_it_and_resuming_releases_it() -> None:
    exp = run.Experiment("pause-pending")
    first = exp.add(_sleeper(0.5), name="first")
    held = exp.add(run.Config(taskdefs.hello, name="held"), name="held", dependencies=[first])
    exp.run(detach=True)
    exp.pause(held)
    assert task(exp, held).status == "PAUSED"
    wait_until(lambda: task(exp, first).status == "SUCCEEDED", what="first to succeed")
    time.sleep(0.8)  # its dependency succeeded, but it is held
    view = task(exp, held)
    assert (view.status, view.attempts) == ("PAUSED", 0)

    exp.resume(held)
    assert task(exp, held).status in ("PENDING", "SUBMITTED", "RUNNING", "SUCCEEDED")
    assert exp.wait(timeout=30) == "SUCCEEDED"
    assert exp.get_logs(held).stdout == "hello held\n"


def test_a_task_can_be_cancelled_from_an_experiment_rebuilt_with_from_id() -> None:
    exp = run.Experiment("cancel-from-id")
    t = exp.add(_sleeper(), name="sleeper")
    exp.run(detach=True)
    runner = int(_running(exp, t).job_id)
    run.Experiment.from_id(exp.experiment_id).cancel(t)
    assert tree_gone(runner)
    assert exp.wait(timeout=30) == "FAILED"
    assert task(exp, t).status == "CANCELLED"
