"""Failure kinds decide what ``max_retries`` re-runs: ``retry_on`` names the kinds (default
``error``, ``oom``, ``lost``, ``node_failure``), and a preempted attempt is always run again and
never counts against ``max_retries``.

The kinds come from real backends (a kernel OOM kill under a memory limit, a Slurm preemption:
tests/plugins/local/test_local_memory.py, tests/plugins/docker, tests/plugins/slurm); here a real
child-process backend is told to call some of its attempts preempted, which a real cluster
cannot be made to do on cue for every attempt of a test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import pytest
import runyard as run
import taskdefs
from helpers import ChildProcessBackend
from runyard.executor import Executor, JobStatus
from runyard.hookspecs import hookimpl
from runyard.registries import ExecutorRegistry
from runyard.states import State
from runyard.testing import registered_plugin


@attrs.define
class PreemptibleExecutor(Executor):
    kind: ClassVar[str] = "test-preemptible"


class PreemptingBackend(ChildProcessBackend):
    """Real runners; the attempts listed in ``preempted`` are reported preempted when they end
    (as a cluster that took the node back would), whatever their exit code."""

    preempted: ClassVar[set[int]] = set()

    def _poll(self, jobs: Any) -> dict[str, JobStatus]:
        out = super()._poll(jobs)
        for job in jobs:
            status = out.get(job.job_id)
            if status is not None and status.state.is_final and job.attempt in self.preempted:
                out[job.job_id] = JobStatus(State.FAILED, exit_code=143, reason="preempted by the test",
                                            failure="preempted")  # fmt: skip
        return out


class PreemptingPlugin:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(PreemptibleExecutor, PreemptingBackend)


@pytest.fixture
def preempting(runyard_plugins: Any) -> Iterator[type[PreemptingBackend]]:
    PreemptingBackend.preempted = set()
    with registered_plugin(PreemptingPlugin(), name="preempting"):
        yield PreemptingBackend


def run_one(task: Any, executor: Executor | None = None, **options: Any) -> run.Experiment:
    exp = run.Experiment("kinds", **options)
    exp.add(task, executor=executor, name="t")
    exp.run()
    return exp


def kinds(exp: run.Experiment) -> list[tuple[str, str | None]]:
    return [(a.status, a.failure) for a in exp.attempts("t")]


def test_preempted_attempts_are_run_again_without_using_up_max_retries(
    preempting: type[PreemptingBackend], tmp_path: Any
) -> None:
    preempting.preempted = {1, 2}
    exp = run_one(run.Config(taskdefs.hello), PreemptibleExecutor(), max_retries=0)
    assert exp.status() == "SUCCEEDED"
    assert kinds(exp) == [("FAILED", "preempted"), ("FAILED", "preempted"), ("SUCCEEDED", None)]


def test_retries_left_are_counted_without_the_preempted_attempts(
    preempting: type[PreemptingBackend], tmp_path: Any
) -> None:
    """max_retries=1: one failure may be retried; a preemption between them changes nothing."""
    preempting.preempted = {2}
    exp = run_one(run.Config(taskdefs.exit_with, 4), PreemptibleExecutor(), max_retries=1)
    assert kinds(exp) == [("FAILED", "error"), ("FAILED", "preempted"), ("FAILED", "error")]
    [t] = exp.tasks
    assert (t.status, t.failure, t.attempts) == ("FAILED", "error", 3)


def test_the_reason_of_a_task_waiting_to_run_again_says_how_its_attempt_ended(
    preempting: type[PreemptingBackend],
) -> None:
    preempting.preempted = {1}
    exp = run_one(run.Config(taskdefs.exit_with, 4), PreemptibleExecutor(), max_retries=2)
    reruns = [data["reason"] for *_, kind, data in exp.store.events(exp.id) if data.get("event") == "rerun"]
    assert reruns == [
        "retrying (attempt 1 was preempted: preempted by the test)",
        "retrying (attempt 1 of 3 failed: exit code 4)",
        "retrying (attempt 2 of 3 failed: exit code 4)",
    ]


def test_a_failure_kind_left_out_of_retry_on_is_not_retried() -> None:
    exp = run_one(run.Config(taskdefs.exit_with, 4), max_retries=3, retry_on=["oom"])
    assert kinds(exp) == [("FAILED", "error")]


def test_retry_on_default_retries_errors() -> None:
    exp = run_one(run.Config(taskdefs.exit_with, 4), max_retries=1)
    assert kinds(exp) == [("FAILED", "error"), ("FAILED", "error")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["eror"], "'eror' is not a failure kind that can be retried; the kinds are: error, oom, timeout"),
        (["cancelled"], "'cancelled' is not a failure kind that can be retried"),
        (5, "retry_on must be a list of failure kinds, got 5"),
    ],
)
def test_retry_on_names_only_failure_kinds(value: Any, message: str) -> None:
    with pytest.raises(run.ConfigError, match=message.replace("(", r"\(")):
        run.Experiment("kinds", retry_on=value)


def test_retry_on_and_max_parallel_survive_a_snapshot(tmp_path: Any) -> None:
    exp = run.Experiment("kinds", max_retries=2, retry_on=["oom", "lost"], max_parallel=3)
    exp.add(run.Config(taskdefs.hello), name="t")
    path = tmp_path / "snap.json"
    exp.create_snapshot().save(str(path))
    again = run.ExperimentSnapshot.load(str(path)).reproduce()
    settings = again._engine.record.settings
    assert (settings.retry_kinds, settings.max_parallel, settings.max_retries) == (["oom", "lost"], 3, 2)


def test_a_job_that_ended_with_no_result_is_lost_and_retried_by_default(tmp_path: Any) -> None:
    """The runner killed with its task (kill -9 of the whole session): nothing says how it
    ended, so the attempt is ``lost``, which the default retry_on re-runs."""
    marker = tmp_path / "killed"
    script = run.Script(
        inline=f'if [ ! -e {marker} ]; then touch {marker}; kill -KILL -- -$(ps -o sid= $$ | tr -d " "); fi; echo ok'
    )
    exp = run_one(script, max_retries=1)
    assert kinds(exp) == [("FAILED", "lost"), ("SUCCEEDED", None)]
