"""The driver under faults: nothing runs twice after a driver dies mid-launch, a stale driver
can change nothing, the heartbeat does not wait for slow work, a retry starts a new clock.

Dead drivers are made the honest way where it can be done on cue: the store is left exactly as
a driver killed between "SUBMITTED" and "job id recorded" leaves it, and the job that driver
started is started by hand, as it would have been.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import runyard as run
import taskdefs
from _core_helpers import task, wait_until
from helpers import ChildProcessBackend
from runyard.engine import Engine
from runyard.executor import Executor, JobRef, JobSpec
from runyard.hookspecs import hookimpl
from runyard.plugins import ExecutorRegistry, plugin_manager
from runyard.scheduler import STALE_AFTER
from runyard.states import Event, State
from runyard.store import Lease, LeaseLostError, open_store, pid_alive
from runyard.testing import registered_plugin


def _counting_script(counter: Path, seconds: float = 1.0) -> run.Script:
    """A Script that leaves one line in ``counter`` per execution."""
    return run.Script(inline=f"echo $$ >> {counter}; sleep {seconds}")


def _executions(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def _as_a_dead_driver_left_it(exp: run.Experiment, task_id: str, launch: str) -> JobSpec:
    """Record ``task_id`` SUBMITTED (attempt 1, launch id ``launch``, no job id), as a driver
    does just before it starts the job, and return the spec it would have launched."""
    store = exp.store
    store.mark_launched(exp.experiment_id, {"detach": True, "sequential": False, "tail_logs": False,
                                            "direct": False})  # fmt: skip
    assert store.transition(
        exp.experiment_id, task_id, Event.LAUNCH, attempts=1,
        handle={"launch": launch},
    )  # fmt: skip
    spec = Engine(store, exp.experiment_id).task(task_id).spec(1, with_secrets=True)
    spec.env["RUNYARD_LAUNCH_ID"] = launch
    return spec


def test_a_job_started_by_a_driver_that_died_before_recording_it_is_adopted_not_run_again(
    tmp_path: Path,
) -> None:
    counter = tmp_path / "runs"
    exp = run.Experiment("died-mid-launch")
    t = exp.add(_counting_script(counter), name="train")
    spec = _as_a_dead_driver_left_it(exp, t, launch="dead-driver-launch")
    backend = plugin_manager().backend("local")
    started = backend.launch(spec)  # the dead driver's job: it runs, but the store never heard of it
    wait_until(lambda: _executions(counter) == 1, what="the orphaned job to start")

    assert exp.takeover(detach=False) == "SUCCEEDED"

    view = task(exp, t)
    assert _executions(counter) == 1  # adopted, not launched a second time
    assert (view.attempts, view.job_id) == (1, started.job_id)


def test_a_runner_of_a_dead_driver_that_starts_late_runs_nothing(tmp_path: Path) -> None:
    """The driver died after starting the job but before its runner claimed the attempt: the
    new driver launches the same attempt again, and the late runner finds it claimed."""
    counter = tmp_path / "runs"
    exp = run.Experiment("late-runner")
    t = exp.add(_counting_script(counter, seconds=2), name="train")
    spec = _as_a_dead_driver_left_it(exp, t, launch="dead-driver-launch")
    backend = plugin_manager().backend("local")
    driving = threading.Thread(target=exp.takeover, kwargs={"detach": False})
    driving.start()
    wait_until(lambda: _executions(counter) == 1, what="the relaunched attempt to start")
    late = backend.launch(spec)  # now the dead driver's runner gets to run
    code = os.waitpid(int(late.job_id), 0)[1]
    driving.join(timeout=60)

    assert os.waitstatus_to_exitcode(code) == 75  # CLAIMED_EXIT: it ran nothing
    assert _executions(counter) == 1
    assert (task(exp, t).status, task(exp, t).attempts) == ("SUCCEEDED", 1)


def test_a_job_that_lost_the_claim_is_replaced_by_the_one_that_won_it(tmp_path: Path) -> None:
    """The recorded job's runner found the attempt claimed by the dead driver's runner: the
    driver follows the winner (whose result is the attempt's) instead of calling it lost."""
    counter = tmp_path / "runs"
    exp = run.Experiment("claim-lost")
    t = exp.add(_counting_script(counter, seconds=2), name="train")
    spec = _as_a_dead_driver_left_it(exp, t, launch="first")
    backend = plugin_manager().backend("local")
    winner = backend.launch(spec)
    wait_until(lambda: _executions(counter) == 1, what="the first job to start")
    spec.env["RUNYARD_LAUNCH_ID"] = "second"
    loser = backend.launch(spec)
    os.waitpid(int(loser.job_id), 0)
    exp.store.transition(
        exp.experiment_id,
        t,
        Event.LAUNCHED,
        State.RUNNING,
        attempt=1,
        job_id=loser.job_id,
        handle={**loser.handle, "launch": "second"},
        start_time=time.time(),
    )  # fmt: skip  (the store knows only the loser)

    assert exp.takeover(detach=False) == "SUCCEEDED"
    assert task(exp, t).job_id == winner.job_id
    assert _executions(counter) == 1


# ------------------------------------------------------------------------------ leases
def test_a_driver_whose_lease_was_taken_over_can_change_nothing(runyard_home: str) -> None:
    exp = run.Experiment("fenced")
    t = exp.add(run.Config(taskdefs.hello))
    store = open_store(runyard_home)
    first = store.claim_driver(exp.experiment_id, 111, "supervisor", STALE_AFTER)
    second = store.claim_driver(exp.experiment_id, 222, "supervisor", stale_after=0.0)  # took over
    assert first is not None and second is not None and second > first

    with pytest.raises(LeaseLostError, match="no longer drives"):
        store.transition(exp.experiment_id, t, Event.LAUNCH, attempts=1, lease=Lease(111, first))
    assert store.driver_heartbeat(exp.experiment_id, 111, first) is False
    assert task(exp, t).status == "PENDING"
    assert store.transition(exp.experiment_id, t, Event.LAUNCH, attempts=1, lease=Lease(222, second))


@pytest.mark.slow
def test_a_frozen_supervisor_gives_way_to_its_successor_and_nothing_runs_twice(tmp_path: Path) -> None:
    counters = [tmp_path / f"runs-{i}" for i in range(4)]
    exp = run.Experiment("frozen-supervisor")
    for i, counter in enumerate(counters):
        exp.add(
            _counting_script(counter, seconds=1.5),
            name=f"step-{i}",
            dependencies=[f"step-{i - 1}"] if i else None,
        )
    exp.run(detach=True)
    old = exp.store.experiment(exp.experiment_id).driver_pid
    assert old
    os.kill(old, signal.SIGSTOP)
    try:
        wait_until(lambda: not exp.driver_alive(), timeout=STALE_AFTER + 15, what="the heartbeat to go stale")
        exp.takeover()
        new = exp.store.experiment(exp.experiment_id).driver_pid
        assert new and new != old
    finally:
        os.kill(old, signal.SIGCONT)
    wait_until(lambda: not pid_alive(old), timeout=30, what="the stale supervisor to exit")
    assert exp.wait(timeout=120) == "SUCCEEDED"
    assert [_executions(c) for c in counters] == [1, 1, 1, 1]
    log = (Path(exp.directory) / "supervisor.log").read_text()
    assert "another driver took" in log


# ------------------------------------------------------------------------------ heartbeat
@attrs.define
class SlowCancelExecutor(Executor):
    """A test kind whose backend takes half a second to cancel a job."""

    kind: ClassVar[str] = "test-slow-cancel"


class SlowCancelBackend(ChildProcessBackend):
    def _cancel(self, job: JobRef) -> None:
        time.sleep(0.5)
        super()._cancel(job)


class SlowCancelPlugin:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(SlowCancelExecutor, SlowCancelBackend)


def test_the_driver_heartbeat_stays_fresh_while_a_timeout_is_enforced_over_many_slow_cancels(
    runyard_plugins: Any,
) -> None:
    with registered_plugin(SlowCancelPlugin(), name="slow-cancel"):
        exp = run.Experiment("slow-timeout", timeout=1.0)
        exp.add(
            [run.Script(inline="sleep 60") for _ in range(30)], name="sleeper", executor=SlowCancelExecutor()
        )
        ages: list[float] = []
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.2):
                record = exp.store.experiment(exp.experiment_id)
                if record.driver_heartbeat:
                    ages.append(time.time() - record.driver_heartbeat)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            state = exp.run()
        finally:
            done.set()
            watcher.join()
    assert state == "FAILED"
    assert {t.reason for t in exp.tasks} == {"timeout"}
    assert len(ages) > 20  # the enforcement took a while (30 cancels of 0.5 s) ...
    assert max(ages) < STALE_AFTER / 2  # ... and no other process would have taken the driver for dead


# ------------------------------------------------------------------------------ retry clock
def test_a_retry_after_the_experiment_timeout_has_passed_runs_with_a_new_clock(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    exp = run.Experiment("retry-late", timeout=1.0)
    t = exp.add(run.Config(taskdefs.count_runs, str(counter), fail_until=2), name="flaky")
    assert exp.run() == "FAILED"
    time.sleep(1.5)  # the experiment's timeout is long past
    exp.retry(t)
    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert (task(exp, t).status, task(exp, t).attempts) == ("SUCCEEDED", 2)


def test_a_retried_task_times_out_again_on_its_new_clock(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    exp = run.Experiment("retry-times-out", timeout=3.0)  # (time for each run to start, under load too)
    t = exp.add(_counting_script(counter, seconds=30), name="slow")
    assert exp.run() == "FAILED"
    exp.retry(t)
    assert exp.wait(timeout=60) == "FAILED"
    view = task(exp, t)
    assert (view.reason, view.attempts) == ("timeout", 2)
    assert _executions(counter) == 2  # the retry ran, then its own clock ran out
