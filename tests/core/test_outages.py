"""A backend that cannot be reached for a while (a cluster's login node gone, a daemon
restarting) never fails a task and never makes a read hang: a launch waits (no attempt is
used), a cancel is recorded at once and its job ended when the backend is back, and status
answers from the store with a line that says the backend is unreachable since when.

The outage is a switch on a real child-process backend (helpers.ChildProcessBackend: real
runners, real processes): what a real service cannot be made to do on cue. The same on the
real Slurm bed, through a relay that cuts the network, is in tests/plugins/slurm."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import pytest
import runyard as run
from _core_helpers import task, wait_until
from helpers import ChildProcessBackend
from runyard.errors import UnreachableError
from runyard.executor import Executor, JobRef, JobSpec, JobStatus, Launched
from runyard.hookspecs import hookimpl
from runyard.registries import ExecutorRegistry
from runyard.store import pid_alive
from runyard.testing import registered_plugin


@attrs.define
class FlakyExecutor(Executor):
    kind: ClassVar[str] = "test-outage"


class OutageBackend(ChildProcessBackend):
    """Runs jobs as child processes; while ``down`` is set, every call fails as an unreachable
    service does, and while ``hang`` is set a poll blocks (a network that swallows packets)."""

    down = threading.Event()
    hang = threading.Event()
    since = 0.0
    launches = 0

    def _unreachable(self) -> None:
        if self.down.is_set():
            raise UnreachableError(
                f"cannot reach the test service (unreachable since {self.since:.0f})", self.since
            )

    def _launch(self, job: JobSpec) -> Launched:
        self._unreachable()
        type(self).launches += 1
        return super()._launch(job)

    def _poll(self, jobs: Any) -> dict[str, JobStatus]:
        while self.hang.is_set():
            time.sleep(0.05)
        self._unreachable()
        return super()._poll(jobs)

    def _cancel(self, job: JobRef) -> None:
        self._unreachable()
        super()._cancel(job)


class OutagePlugin:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(FlakyExecutor, OutageBackend)


@pytest.fixture
def outage(runyard_plugins: Any) -> Iterator[type[OutageBackend]]:
    OutageBackend.down.clear()
    OutageBackend.hang.clear()
    OutageBackend.launches = 0
    with registered_plugin(OutagePlugin(), name="outage"):
        yield OutageBackend
    OutageBackend.down.clear()
    OutageBackend.hang.clear()


def _attached(exp: run.Experiment) -> threading.Thread:
    """``exp.run()`` driven from a thread of this process (where the test backend lives)."""
    driving = threading.Thread(target=exp.run, name="driver")
    driving.start()
    return driving


def test_a_task_ready_while_its_backend_is_unreachable_waits_and_uses_no_attempt(outage) -> None:
    outage.down.set()
    outage.since = time.time()
    exp = run.Experiment("outage-launch", max_retries=0)
    t = exp.add(run.Script(inline="echo ran"), name="t", executor=FlakyExecutor())
    driving = _attached(exp)
    try:
        view = wait_until(
            lambda: (v := task(exp, t)).reason and v.reason.startswith("waiting") and v, what="waiting"
        )
        assert (view.status, view.attempts, view.failure) == ("PENDING", 0, None)
        assert "cannot reach the test service" in view.reason
        time.sleep(1.0)  # an outage of any length: the task keeps waiting, no attempt is used
        assert (task(exp, t).status, task(exp, t).attempts, outage.launches) == ("PENDING", 0, 0)
    finally:
        outage.down.clear()
    driving.join(timeout=60)
    view = task(exp, t)
    assert (view.status, view.attempts, exp.get_logs(t).stdout) == ("SUCCEEDED", 1, "ran\n")
    assert [a.status for a in exp.attempts(t)] == ["SUCCEEDED"]


def test_a_cancel_while_the_backend_is_unreachable_is_recorded_and_carried_out_when_it_is_back(
    outage,
) -> None:
    exp = run.Experiment("outage-cancel")
    t = exp.add(run.Script(inline="sleep 60"), name="t", executor=FlakyExecutor())
    driving = _attached(exp)
    wait_until(lambda: task(exp, t).status == "RUNNING", what="the task to run")
    runner = int(task(exp, t).job_id)
    outage.down.set()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        exp.cancel(t)  # at once: no waiting for the backend
    assert any("could not be ended yet" in str(w.message) for w in said)
    assert (task(exp, t).status, task(exp, t).failure) == ("CANCELLED", "cancelled")
    time.sleep(0.5)
    assert pid_alive(runner)  # the job runs on meanwhile: nothing could reach it
    outage.down.clear()
    # the driver ends it when the backend is back (or, if it ended first, the next read does)
    wait_until(lambda: exp.status() and not pid_alive(runner), what="the job to be ended")
    driving.join(timeout=30)
    assert not driving.is_alive()
    record = exp.store.task(exp.experiment_id, t)
    assert record is not None and not record.handle.get("cancel_pending")
    assert task(exp, t).status == "CANCELLED"


def test_cancel_all_ends_every_job_of_a_backend_in_one_call(outage, monkeypatch) -> None:
    calls: list[int] = []
    original = OutageBackend.cancel_many

    def counting(self: OutageBackend, jobs: Any) -> Any:
        calls.append(len(jobs))
        return original(self, jobs)

    monkeypatch.setattr(OutageBackend, "cancel_many", counting)
    exp = run.Experiment("outage-cancel-all")
    ids = exp.add([run.Script(inline="sleep 60") for _ in range(5)], name="s", executor=FlakyExecutor())
    driving = _attached(exp)
    wait_until(lambda: all(t.status == "RUNNING" for t in exp.tasks), what="every task to run")
    assert sorted(exp.cancel_all()) == sorted(ids)
    driving.join(timeout=30)
    assert calls == [5]
    assert {t.status for t in exp.tasks} == {"CANCELLED"}


def test_status_answers_from_the_store_at_once_while_the_backend_does_not_answer(outage, monkeypatch) -> None:
    monkeypatch.setattr("runyard.running.SYNC_WAIT", 0.5)
    exp = run.Experiment("outage-status")
    t = exp.add(run.Script(inline="sleep 60"), name="t", executor=FlakyExecutor())
    driving = _attached(exp)
    wait_until(lambda: task(exp, t).status == "RUNNING", what="the task to run")
    # the driver goes away (as a dead supervisor would); reads now sync with the backend themselves
    exp.store.release_driver(exp.experiment_id, os.getpid())
    outage.hang.set()
    try:
        started = time.monotonic()
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert exp.status() == "RUNNING"
        assert time.monotonic() - started < 30  # a guard against a hang, not a timing
        assert any("did not answer within 0.5s" in str(w.message) for w in said)
    finally:
        outage.hang.clear()
    # the late poll goes on in the background, and records its news when it gets them
    wait_until(lambda: not any(t.name == "runyard-sync" for t in threading.enumerate()), what="the late poll")
    outage.down.set()
    outage.since = time.time() - 60
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert exp.status() == "RUNNING"
    assert any("unreachable since" in str(w.message) and "last recorded" in str(w.message) for w in said)
    outage.down.clear()
    exp.cancel(t)
    driving.join(timeout=30)
