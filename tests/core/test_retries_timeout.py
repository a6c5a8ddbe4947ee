"""max_retries, timeout and checkpoint_interval on the local executor."""

from __future__ import annotations

import time

import runyard as run
import taskdefs
from _core_helpers import task, tree_gone, wait_until
from runyard.store import Store


def _runs(path) -> int:
    return len(path.read_text().splitlines())


# --- max_retries --------------------------------------------------------------------------------
def test_a_task_that_succeeds_first_time_has_one_attempt() -> None:
    exp = run.Experiment("once", max_retries=3)
    t = exp.add(run.Config(taskdefs.hello))
    exp.run()
    assert (task(exp, t).status, task(exp, t).attempts) == ("SUCCEEDED", 1)


def test_a_task_failing_twice_then_succeeding_ends_succeeded_after_three_attempts(tmp_path) -> None:
    counter = tmp_path / "runs"
    exp = run.Experiment("flaky", max_retries=2)
    t = exp.add(run.Config(taskdefs.count_runs, str(counter), fail_until=3), name="flaky")
    assert exp.run() == "SUCCEEDED"
    view = task(exp, t)
    assert (view.status, view.attempts, view.exit_code) == ("SUCCEEDED", 3, 0)
    assert _runs(counter) == 3


def test_retries_stop_at_the_first_success(tmp_path) -> None:
    counter = tmp_path / "runs"
    exp = run.Experiment("flaky-once", max_retries=5)
    t = exp.add(run.Config(taskdefs.count_runs, str(counter), fail_until=2))
    assert exp.run() == "SUCCEEDED"
    assert task(exp, t).attempts == 2
    assert _runs(counter) == 2


def test_without_max_retries_a_failed_task_runs_once(tmp_path) -> None:
    counter = tmp_path / "runs"
    exp = run.Experiment("no-retries")
    t = exp.add(run.Config(taskdefs.count_runs, str(counter), fail_until=2))
    assert exp.run() == "FAILED"
    assert (task(exp, t).status, task(exp, t).attempts) == ("FAILED", 1)
    assert _runs(counter) == 1


def test_a_dependent_waits_for_the_final_outcome_of_a_retried_task(tmp_path) -> None:
    counter = tmp_path / "runs"
    exp = run.Experiment("flaky-dep", max_retries=2)
    flaky = exp.add(run.Config(taskdefs.count_runs, str(counter), fail_until=3), name="flaky")
    child = exp.add(run.Config(taskdefs.hello), name="child", dependencies=[flaky])
    assert exp.run() == "SUCCEEDED"
    assert task(exp, child).status == "SUCCEEDED"
    assert task(exp, child).attempts == 1
    assert task(exp, child).start_time >= task(exp, flaky).end_time


def test_a_task_that_exhausts_its_retries_ends_failed_with_exit_code_and_reason() -> None:
    exp = run.Experiment("exhausted", max_retries=1)
    t = exp.add(run.Config(taskdefs.exit_with, 3), name="bad")
    child = exp.add(run.Config(taskdefs.hello), name="child", dependencies=[t])
    assert exp.run() == "FAILED"
    view = task(exp, t)
    assert (view.status, view.attempts, view.exit_code) == ("FAILED", 2, 3)
    assert "3" in view.reason
    assert (task(exp, child).status, task(exp, child).reason) == ("CANCELLED", "dependency failed")


def test_a_python_exception_is_the_reason_of_a_failed_task() -> None:
    exp = run.Experiment("exception", max_retries=1)
    t = exp.add(run.Config(taskdefs.fail, message="kaboom"))
    exp.run()
    view = task(exp, t)
    assert (view.status, view.attempts, view.exit_code) == ("FAILED", 2, 1)
    assert "RuntimeError: kaboom" in view.reason


# --- timeout ----------------------------------------------------------------------------------------
def test_a_task_running_past_the_timeout_ends_failed_with_reason_timeout_and_its_process_ends() -> None:
    exp = run.Experiment("timeout", timeout=1)
    t = exp.add(run.Config(taskdefs.sleep_then_print, seconds=60), name="sleeper")
    assert exp.run() == "FAILED"
    view = task(exp, t)
    assert (view.status, view.reason) == ("FAILED", "timeout")
    assert tree_gone(int(view.job_id)), f"process group {view.job_id} is still alive"


def test_pending_tasks_end_cancelled_at_the_timeout() -> None:
    exp = run.Experiment("timeout-pending", timeout=1)
    sleeper = exp.add(run.Config(taskdefs.sleep_then_print, seconds=60), name="sleeper")
    child = exp.add(run.Config(taskdefs.hello), name="child", dependencies=[sleeper])
    assert exp.run() == "FAILED"
    view = task(exp, child)
    assert view.status == "CANCELLED"
    assert view.attempts == 0
    assert view.reason == "timeout"


def test_tasks_that_ended_before_the_timeout_keep_their_state() -> None:
    exp = run.Experiment("timeout-mixed", timeout=1.5)
    quick = exp.add(run.Config(taskdefs.hello), name="quick")
    exp.add(run.Config(taskdefs.sleep_then_print, seconds=60), name="sleeper")
    exp.run()
    assert task(exp, quick).status == "SUCCEEDED"


def test_a_timed_out_task_is_not_retried() -> None:
    exp = run.Experiment("timeout-retries", timeout=1, max_retries=3)
    t = exp.add(run.Config(taskdefs.sleep_then_print, seconds=60))
    exp.run()
    assert (task(exp, t).status, task(exp, t).attempts) == ("FAILED", 1)


# --- checkpoint_interval ------------------------------------------------------------------------
def test_tasks_see_the_checkpoint_interval() -> None:
    exp = run.Experiment("checkpoint-env", checkpoint_interval=0.5)
    t = exp.add(run.Config(taskdefs.print_env, "RUNYARD_CHECKPOINT_INTERVAL"))
    exp.run()
    assert exp.get_logs(t).stdout == "RUNYARD_CHECKPOINT_INTERVAL=0.5\n"


def test_the_driver_heartbeat_is_never_older_than_the_checkpoint_interval(runyard_home: str) -> None:
    interval = 0.5
    exp = run.Experiment("checkpoint-heartbeat", checkpoint_interval=interval)
    t = exp.add(run.Config(taskdefs.sleep_then_print, seconds=4), name="sleeper")
    exp.run(detach=True)
    reader = Store(runyard_home)  # a connection of its own, as another process would have
    try:
        wait_until(lambda: task(exp, t).status == "RUNNING", what="the task to run")
        ages, beats = [], set()
        deadline = time.time() + 2.5
        while time.time() < deadline and task(exp, t).status == "RUNNING":
            beat = reader.experiment(exp.experiment_id).driver_heartbeat
            ages.append(time.time() - beat)
            beats.add(beat)
            time.sleep(0.05)
        # the heartbeat moves while the task runs, and is never older than the interval
        # (plus a little slack for one turn of the driver's loop)
        assert len(beats) >= 3, f"the heartbeat was refreshed only {len(beats)} times in 2.5 s"
        assert max(ages) <= interval + 0.3, f"heartbeat ages seen: {sorted(ages)[-5:]}"
    finally:
        reader.close()
    exp.cancel_all()
    exp.wait(timeout=30)
