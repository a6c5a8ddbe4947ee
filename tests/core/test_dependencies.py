"""Dependencies, sequential and direct runs on the local executor."""

from __future__ import annotations

import itertools
import os

import runyard as run
import taskdefs
from _core_helpers import task, wait_until


def _sleep(seconds: float, message: str = "done") -> run.Config:
    return run.Config(taskdefs.sleep_then_print, seconds=seconds, message=message)


def _assert_after(exp: run.Experiment, dependent: str, *dependencies: str) -> None:
    later = task(exp, dependent)
    for dep in dependencies:
        earlier = task(exp, dep)
        assert earlier.status == "SUCCEEDED"
        assert later.start_time >= earlier.end_time, (
            f"{dependent} started at {later.start_time}, before {dep} ended at {earlier.end_time}"
        )


# --- dependencies ------------------------------------------------------------------------------
def test_a_dependent_starts_only_after_every_dependency_succeeded() -> None:
    exp = run.Experiment("deps")
    slow = exp.add(_sleep(0.8), name="slow")
    fast = exp.add(_sleep(0.1), name="fast")
    after = exp.add(run.Config(taskdefs.hello), name="after", dependencies=[slow, fast])
    assert exp.run() == "SUCCEEDED"
    _assert_after(exp, after, slow, fast)


def test_a_chain_runs_in_dependency_order_even_when_later_links_are_quicker() -> None:
    exp = run.Experiment("chain")
    a = exp.add(_sleep(0.5), name="a")
    b = exp.add(_sleep(0.2), name="b", dependencies=[a])
    c = exp.add(_sleep(0.0), name="c", dependencies=b)  # a single id is accepted too
    assert exp.run() == "SUCCEEDED"
    _assert_after(exp, b, a)
    _assert_after(exp, c, b)


def test_fan_out_then_fan_in() -> None:
    exp = run.Experiment("fan")
    root = exp.add(_sleep(0.2), name="root")
    variants = exp.add([_sleep(1.0), _sleep(1.0), _sleep(1.0)], name="variants", dependencies=[root])
    join = exp.add(run.Config(taskdefs.hello), name="join", dependencies=variants)
    assert variants == ["variants-0", "variants-1", "variants-2"]
    assert exp.run() == "SUCCEEDED"
    for v in variants:
        _assert_after(exp, v, root)
    _assert_after(exp, join, *variants)
    views = [task(exp, v) for v in variants]
    # the variants ran in parallel: each started before any of them ended
    assert max(v.start_time for v in views) < min(v.end_time for v in views)


def test_dependents_of_a_failed_task_are_cancelled_transitively() -> None:
    exp = run.Experiment("cascade")
    bad = exp.add(run.Config(taskdefs.fail), name="bad")
    child = exp.add(run.Config(taskdefs.hello), name="child", dependencies=[bad])
    grandchild = exp.add(run.Config(taskdefs.hello), name="grandchild", dependencies=[child])
    assert exp.run() == "FAILED"
    assert task(exp, bad).status == "FAILED"
    for t in (child, grandchild):
        view = task(exp, t)
        assert view.status == "CANCELLED"
        assert view.reason == "dependency failed"
        assert view.attempts == 0 and view.start_time is None  # never started


def test_one_failed_dependency_among_several_cancels_the_dependent() -> None:
    exp = run.Experiment("one-bad")
    good = exp.add(run.Config(taskdefs.hello), name="good")
    bad = exp.add(run.Config(taskdefs.exit_with, 2), name="bad")
    both = exp.add(run.Config(taskdefs.hello), name="both", dependencies=[good, bad])
    exp.run()
    assert task(exp, good).status == "SUCCEEDED"
    assert (task(exp, both).status, task(exp, both).reason) == ("CANCELLED", "dependency failed")


def test_independent_tasks_still_run_when_another_branch_fails() -> None:
    exp = run.Experiment("independent")
    bad = exp.add(run.Config(taskdefs.fail), name="bad")
    exp.add(run.Config(taskdefs.hello), name="child", dependencies=[bad])
    solo = exp.add(_sleep(0.3, "solo"), name="solo")
    solo_child = exp.add(run.Config(taskdefs.hello), name="solo-child", dependencies=[solo])
    assert exp.run() == "FAILED"
    assert task(exp, solo).status == "SUCCEEDED"
    assert task(exp, solo_child).status == "SUCCEEDED"
    assert exp.get_logs(solo).stdout == "solo\n"


def test_dependents_of_a_cancelled_task_are_cancelled() -> None:
    exp = run.Experiment("cancelled-dep")
    long = exp.add(_sleep(30), name="long")
    child = exp.add(run.Config(taskdefs.hello), name="child", dependencies=[long])
    grandchild = exp.add(run.Config(taskdefs.hello), name="grandchild", dependencies=[child])
    solo = exp.add(run.Config(taskdefs.hello), name="solo")
    exp.run(detach=True)
    wait_until(lambda: task(exp, long).status == "RUNNING", what="long to run")
    exp.cancel(long)
    assert exp.wait(timeout=30) == "FAILED"
    assert task(exp, long).status == "CANCELLED"
    for t in (child, grandchild):
        assert (task(exp, t).status, task(exp, t).reason) == ("CANCELLED", "dependency failed")
    assert task(exp, solo).status == "SUCCEEDED"


# --- sequential ---------------------------------------------------------------------------------
def test_sequential_runs_one_task_at_a_time_in_the_order_added() -> None:
    exp = run.Experiment("sequential")
    ids = exp.add([_sleep(0.3, "first"), _sleep(0.1, "second"), _sleep(0.2, "third")], name="step")
    assert exp.run(sequential=True) == "SUCCEEDED"
    views = [task(exp, i) for i in ids]
    for earlier, later in itertools.pairwise(views):
        assert later.start_time >= earlier.end_time, f"{later.id} overlapped {earlier.id}"


def test_sequential_still_honours_dependencies() -> None:
    exp = run.Experiment("sequential-deps")
    a = exp.add(run.Config(taskdefs.fail), name="a")
    b = exp.add(run.Config(taskdefs.hello), name="b", dependencies=[a])
    c = exp.add(run.Config(taskdefs.hello), name="c")
    assert exp.run(sequential=True) == "FAILED"
    assert (task(exp, b).status, task(exp, b).reason) == ("CANCELLED", "dependency failed")
    assert task(exp, c).status == "SUCCEEDED"
    assert task(exp, c).start_time >= task(exp, a).end_time


# --- direct -----------------------------------------------------------------------------------------
def test_direct_runs_python_tasks_in_the_calling_process(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    exp = run.Experiment("direct")
    exp.add(run.Config(taskdefs.write_pid, str(pid_file)), name="where")
    assert exp.run(direct=True) == "SUCCEEDED"
    assert int(pid_file.read_text()) == os.getpid()


def test_direct_records_the_task_output_in_its_logs() -> None:
    exp = run.Experiment("direct-logs")
    ok = exp.add(run.Config(taskdefs.hello, name="direct"), name="ok")
    bad = exp.add(run.Config(taskdefs.fail, message="direct boom"), name="bad")
    assert exp.run(direct=True) == "FAILED"
    assert exp.get_logs(ok).stdout == "hello direct\n"
    assert exp.get_logs(ok).exit_code == 0
    logs = exp.get_logs(bad)
    assert logs.exit_code == 1
    assert "about to fail" in logs.stdout
    assert "RuntimeError: direct boom" in logs.stderr


def test_direct_honours_dependencies() -> None:
    exp = run.Experiment("direct-deps")
    a = exp.add(_sleep(0.2), name="a")
    b = exp.add(run.Config(taskdefs.hello), name="b", dependencies=[a])
    bad = exp.add(run.Config(taskdefs.fail), name="bad")
    after_bad = exp.add(run.Config(taskdefs.hello), name="after-bad", dependencies=[bad])
    assert exp.run(direct=True) == "FAILED"
    _assert_after(exp, b, a)
    assert task(exp, after_bad).status == "CANCELLED"
    assert task(exp, after_bad).reason == "dependency failed"
    assert task(exp, after_bad).attempts == 0


def test_direct_runs_through_the_driver_of_every_run_holding_its_lease() -> None:
    exp = run.Experiment("direct-driver")
    exp.add(run.Config(taskdefs.hello), name="only")
    assert exp.run(direct=True) == "SUCCEEDED"
    claims = [data for _, _, _, kind, data in exp.store.events(exp.experiment_id) if kind == "driver"]
    assert [(c["pid"], c["kind"]) for c in claims] == [(os.getpid(), "direct")]
    assert exp.store.experiment(exp.experiment_id).driver_pid is None  # released at the end
    assert not exp.driver_alive()


def test_direct_retries_a_failed_task_by_the_same_rule_as_any_backend(tmp_path) -> None:
    counter = tmp_path / "runs"
    exp = run.Experiment("direct-retry", max_retries=2)
    t = exp.add(run.Config(taskdefs.count_runs, str(counter), fail_until=2), name="flaky")
    assert exp.run(direct=True) == "SUCCEEDED"
    assert len(counter.read_text().splitlines()) == 2
    first, second = exp.attempts(t)
    assert (first.status, first.failure, first.reason) == ("FAILED", "error", "RuntimeError: failing run 1")
    assert (second.status, second.exit_code) == ("SUCCEEDED", 0)
    assert "RuntimeError: failing run 1" in exp.get_logs(t, attempt=1).stderr


def test_direct_ends_what_has_not_started_when_the_timeout_passes_between_tasks() -> None:
    exp = run.Experiment("direct-timeout", timeout=0.5)
    slow = exp.add(_sleep(1.0), name="slow")
    later = exp.add(run.Config(taskdefs.hello), name="later")
    assert exp.run(direct=True) == "FAILED"
    assert task(exp, slow).status == "SUCCEEDED"  # it had ended when the timeout was checked
    view = task(exp, later)
    assert (view.status, view.reason, view.failure, view.attempts) == ("CANCELLED", "timeout", "timeout", 0)
