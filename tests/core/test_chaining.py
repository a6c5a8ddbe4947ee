"""Chained launches: a backend that can hold a job until its dependencies succeed (Slurm's
``--dependency=afterok``) gets dependents submitted at once, and a detached experiment whose
jobs all went to such a self-driving backend needs no supervisor.

A fake queue stands in for the batch scheduler here (the Slurm plugin's tests use a real
one): its jobs are local processes that wait for their dependencies' result files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import ClassVar

import attrs
import runyard as run
import taskdefs
from runyard.executor import JobRef, JobSpec, JobStatus
from runyard.hookspecs import hookimpl
from runyard.plugins import ExecutorRegistry
from runyard.states import State
from runyard.testing import registered_plugin
from runyard_local.backend import LocalBackend
from runyard_local.executor import LocalExecutor

WAIT_FOR_DEPENDENCIES = r"""
for dir in "${DEPS[@]}"; do
  until [[ -e $dir/result.json ]]; do sleep 0.05; done
  grep -q '"exit_code": 0[,}]' "$dir/result.json" || exit 0   # a dependency failed: never run
done
exec "$@"
"""


@attrs.define
class QueueExecutor(LocalExecutor):
    kind: ClassVar[str] = "test-queue"


class QueueBackend(LocalBackend):
    """Local processes that queue behind their dependencies like a batch scheduler."""

    self_driving = True
    chained: ClassVar[list[tuple[str, list[str]]]] = []

    def can_chain(self, job: JobSpec, dependencies: Sequence[JobRef]) -> bool:
        return True

    def command(self, job: JobSpec, argv: list[str]) -> list[str]:
        QueueBackend.chained.append((job.task_id, [ref.job_id for ref in job.after]))
        if not job.after:
            return argv
        deps = " ".join(f"'{ref.attempt_dir}'" for ref in job.after)
        script = f"DEPS=({deps})\n{WAIT_FOR_DEPENDENCIES}"
        return ["bash", "-c", script, "queued", *argv]

    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        out = super()._poll(jobs)
        for job in jobs:  # ended without running because a dependency failed: the queue dropped it
            status = out.get(job.job_id)
            if (
                status is not None
                and status.state is State.FAILED
                and not os.path.exists(os.path.join(job.attempt_dir, "result.json"))
            ):
                out[job.job_id] = JobStatus(State.CANCELLED, reason="dependency never satisfied")
        return out


class QueuePlugin:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(QueueExecutor, QueueBackend)


def supervisor_started(exp: run.Experiment) -> bool:
    return os.path.exists(os.path.join(exp.directory, "supervisor.log"))


def wait_all_ended(exp: run.Experiment, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(t.status.is_final for t in exp.tasks):  # .tasks reads the backend's news
        assert time.monotonic() < deadline, [(t.id, t.status) for t in exp.tasks]
        time.sleep(0.05)


def test_dependents_are_submitted_at_once_chained_after_their_dependencies(tmp_path) -> None:
    QueueBackend.chained.clear()
    marker = str(tmp_path / "order")
    with registered_plugin(QueuePlugin(), name="queue"):
        exp = run.Experiment("chained")
        first = exp.add(
            run.Config(taskdefs.sleep_then_print, 0.5, "first"), executor=QueueExecutor(), name="first"
        )
        second = exp.add(
            run.Config(taskdefs.write_file, marker, "second"), executor=QueueExecutor(), name="second",
            dependencies=[first],
        )  # fmt: skip
        exp.run(detach=True)
        # both are with the backend before the first has ended
        tasks = {t.id: t for t in exp.store.tasks(exp.experiment_id)}
        assert tasks[second].job_id is not None and tasks[first].status is not State.SUCCEEDED
        assert QueueBackend.chained == [("first", []), ("second", [tasks[first].job_id])]
        assert exp.wait(timeout=30) == "SUCCEEDED"
    assert open(marker).read() == "second"
    views = {t.id: t for t in exp.tasks}
    assert views[second].start_time >= views[first].end_time


def test_a_detached_experiment_on_a_self_driving_backend_needs_no_supervisor() -> None:
    with registered_plugin(QueuePlugin(), name="queue"):
        exp = run.Experiment("no-supervisor")
        a = exp.add(run.Config(taskdefs.hello), executor=QueueExecutor(), name="a")
        exp.add(run.Config(taskdefs.hello, "b"), executor=QueueExecutor(), name="b", dependencies=[a])
        exp.run(detach=True)
        assert not supervisor_started(exp)
        assert exp.store.experiment(exp.experiment_id).driver_pid is None
        # any process reading it brings the store up to date with the backend
        again = run.Experiment.from_id(exp.experiment_id)
        wait_all_ended(again)
        assert again.status() == "SUCCEEDED"
        assert again.get_logs("b").stdout == "hello b\n"


def test_a_chained_dependent_of_a_failed_job_ends_cancelled() -> None:
    with registered_plugin(QueuePlugin(), name="queue"):
        exp = run.Experiment("chain-breaks")
        bad = exp.add(run.Config(taskdefs.exit_with, 4), executor=QueueExecutor(), name="bad")
        after = exp.add(
            run.Config(taskdefs.hello), executor=QueueExecutor(), name="after", dependencies=[bad]
        )
        exp.run(detach=True)
        wait_all_ended(exp)
        tasks = {t.id: t for t in exp.tasks}
    assert tasks[bad].status == "FAILED" and tasks[bad].exit_code == 4
    assert tasks[after].status == "CANCELLED"
    assert tasks[after].reason in ("dependency failed", "dependency never satisfied")
    assert not os.path.exists(os.path.join(tasks[after].local_directory, "attempt-1", "result.json"))


def test_with_retries_dependents_wait_for_the_final_outcome_instead_of_chaining() -> None:
    QueueBackend.chained.clear()
    with registered_plugin(QueuePlugin(), name="queue"):
        exp = run.Experiment("no-chain-with-retries", max_retries=1)
        a = exp.add(run.Config(taskdefs.sleep_then_print, 0.3), executor=QueueExecutor(), name="a")
        exp.add(run.Config(taskdefs.hello), executor=QueueExecutor(), name="b", dependencies=[a])
        assert exp.run() == "SUCCEEDED"
    assert QueueBackend.chained == [("a", []), ("b", [])]


def test_the_local_backend_never_chains() -> None:
    exp = run.Experiment("local-waits")
    a = exp.add(run.Config(taskdefs.sleep_then_print, 0.3), name="a")
    b = exp.add(run.Config(taskdefs.hello), name="b", dependencies=[a])
    exp.run(detach=True)
    assert supervisor_started(exp)  # a local experiment with work left is driven by a supervisor
    tasks = {t.id: t for t in exp.store.tasks(exp.experiment_id)}
    assert tasks[b].job_id is None
    assert exp.wait(timeout=30) == "SUCCEEDED"
    events = [e for e in exp.store.events(exp.experiment_id) if e[1] == b and e[3] == "state"]
    assert json.dumps(events[0][4]["to"]) == '"SUBMITTED"'
