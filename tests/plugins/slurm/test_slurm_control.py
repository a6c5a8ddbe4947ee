"""Controlling Slurm jobs: cancel is scancel; pause and resume are scontrol hold/release for
a pending job and suspend/resume for a running one; retry resubmits; max_retries and the
experiment's timeout work as on any executor."""

from __future__ import annotations

import time

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster, until
from runyard.errors import BackendError
from runyard.executor import JobRef
from runyard_slurm.backend import SlurmBackend
from runyard_slurm.tunnel import CommandResult

LATER = {"begin": "now+3600"}  # a job Slurm keeps pending for an hour


def started(cluster: Cluster, task: object, name: str = "t", **fields: object) -> run.Experiment:
    exp = run.Experiment("control")
    exp.add(task, executor=cluster.executor(**fields), name=name)
    exp.run(detach=True)
    return exp


def job_of(exp: run.Experiment, name: str = "t") -> str:
    record = exp.store.task(exp.experiment_id, name)
    assert record is not None and record.job_id is not None
    return record.job_id


@pytest.mark.alone
def test_cancel_is_scancel(cluster: Cluster) -> None:
    exp = started(cluster, run.Config(taskdefs.sleep_then_print, 60))
    until(lambda: cluster.state(job_of(exp)) == "RUNNING", "the job to run")

    exp.cancel("t")

    assert (exp.tasks[0].status, exp.tasks[0].reason) == ("CANCELLED", "cancelled by user")
    until(lambda: cluster.state(job_of(exp)) == "CANCELLED", "Slurm to cancel it")


def test_a_pending_job_is_held_and_released(cluster: Cluster) -> None:
    exp = started(cluster, run.Config(taskdefs.hello), additional_parameters=LATER)
    job = job_of(exp)

    exp.pause("t")
    assert exp.tasks[0].status == "PAUSED"
    assert cluster.sh(f"squeue -h -j {job} -o %r").strip().startswith("JobHeld")

    exp.resume("t")
    assert exp.tasks[0].status == "SUBMITTED"
    state, _, reason = cluster.sh(f"squeue -h -j {job} -o %T/%r").strip().partition("/")
    assert state == "PENDING" and not reason.startswith("JobHeld")


def test_a_running_job_is_suspended_and_resumed(cluster: Cluster) -> None:
    exp = started(cluster, run.Config(taskdefs.print_lines, 30, 0.1))
    job = job_of(exp)
    until(lambda: cluster.state(job) == "RUNNING" and exp.get_logs("t").stdout, "the job to print")

    exp.pause("t")
    assert exp.tasks[0].status == "PAUSED" and cluster.state(job) == "SUSPENDED"
    frozen = exp.get_logs("t").stdout
    time.sleep(1.0)
    assert exp.get_logs("t").stdout == frozen  # suspended: it prints nothing more

    exp.resume("t")
    assert cluster.state(job) == "RUNNING"
    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert exp.get_logs("t").stdout.count("line") == 30


def test_pausing_an_ended_job_is_a_clear_error(cluster: Cluster) -> None:
    exp = started(cluster, run.Config(taskdefs.hello))
    until(lambda: cluster.state(job_of(exp)) == "COMPLETED", "the job to end")
    ref = JobRef(
        experiment_id=exp.experiment_id, task_id="t", attempt=1, experiment_dir=exp.directory,
        executor=cluster.executor(), job_id=job_of(exp),
    )  # fmt: skip

    with pytest.raises(BackendError, match=f"cannot pause job {ref.job_id}: Slurm says it is COMPLETED"):
        SlurmBackend().pause(ref)


def test_a_cluster_that_refuses_suspend_is_a_clear_error(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regular users may not suspend jobs on most clusters (the test cluster runs jobs as root,
    which may): Slurm's refusal, as scontrol prints it, reaches the user with what to do."""

    class Refusing:
        where = "login"

        def run(self, command: str, **kw: object) -> CommandResult:
            return CommandResult(1, "", "slurm_suspend error: Access/permission denied\n")

    backend = SlurmBackend()
    monkeypatch.setattr(backend, "_session_of", lambda job: Refusing())
    ref = JobRef(
        experiment_id="e", task_id="t", attempt=1, experiment_dir="/h/experiments/e",
        executor=cluster.executor(), job_id="12",
    )  # fmt: skip

    with pytest.raises(BackendError, match=r"Access/permission denied.*operator or administrator rights"):
        backend.pause(ref)


def test_retry_resubmits_the_task(cluster: Cluster) -> None:
    exp = run.Experiment("retry")
    exp.add(run.Config(taskdefs.exit_with, 2), executor=cluster.executor(), name="t")
    exp.run()
    first = exp.tasks[0].job_id

    exp.retry("t")
    exp.wait(timeout=60)

    task = exp.tasks[0]
    assert (task.status, task.attempts) == ("FAILED", 2)
    assert task.job_id != first and cluster.state(task.job_id) == "FAILED"


def test_max_retries_reruns_a_failed_task_as_a_new_job(cluster: Cluster) -> None:
    marker = f"{cluster.job_dir}/runs-{id(cluster)}.txt"
    exp = run.Experiment("retries", max_retries=2)
    exp.add(run.Config(taskdefs.count_runs, marker, fail_until=2), executor=cluster.executor(), name="t")
    try:
        assert exp.run() == "SUCCEEDED"
        assert cluster.read(marker) == b"run\nrun\n"
    finally:
        cluster.sh(f"rm -f {marker}")
    assert exp.tasks[0].attempts == 2
    assert exp.get_logs("t").attempt == 2


def test_the_experiment_timeout_cancels_the_job(cluster: Cluster) -> None:
    exp = run.Experiment("timeout", timeout=2)
    exp.add(run.Config(taskdefs.sleep_then_print, 60), executor=cluster.executor(), name="t")

    assert exp.run() == "FAILED"

    task = exp.tasks[0]
    assert (task.status, task.reason) == ("FAILED", "timeout")
    until(lambda: cluster.state(task.job_id) == "CANCELLED", "Slurm to cancel it")
