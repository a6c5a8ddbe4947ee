"""Dependencies on one cluster are Slurm's: dependents are submitted at once with
``--dependency=afterok:...``, so a detached all-Slurm experiment needs no supervisor, and
the dependents of a failed job are cancelled in the queue instead of pending forever."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster, until


def supervisor_started(exp: run.Experiment) -> bool:
    return os.path.exists(os.path.join(exp.directory, "supervisor.log"))


def all_ended(exp: run.Experiment) -> bool:
    return all(t.status.is_final for t in exp.tasks)  # reading .tasks brings the news from Slurm


@pytest.mark.alone
def test_a_dependent_is_submitted_at_once_chained_with_afterok(cluster: Cluster) -> None:
    exp = run.Experiment("chained")
    first = exp.add(
        run.Config(taskdefs.sleep_then_print, 2, "first"), executor=cluster.executor(), name="first"
    )
    exp.add(
        run.Config(taskdefs.hello, "second"), executor=cluster.executor(), name="second", dependencies=[first]
    )

    exp.run(detach=True)

    tasks = {t.id: t for t in exp.store.tasks(exp.experiment_id)}
    assert tasks["second"].job_id is not None  # submitted while "first" is still in the queue
    job = cluster.job(tasks["second"].job_id)
    assert job["Dependency"].startswith(f"afterok:{tasks['first'].job_id}")
    assert exp.wait(timeout=60) == "SUCCEEDED"
    views = {t.id: t for t in exp.tasks}
    assert views["second"].start_time >= views["first"].end_time
    assert exp.get_logs("second").stdout == "hello second\n"


def test_a_detached_all_slurm_experiment_needs_no_supervisor(cluster: Cluster) -> None:
    exp = run.Experiment("no-supervisor")
    a = exp.add(run.Config(taskdefs.hello, "a"), executor=cluster.executor(), name="a")
    b = exp.add(run.Config(taskdefs.hello, "b"), executor=cluster.executor(), name="b", dependencies=[a])
    exp.add(run.Config(taskdefs.hello, "c"), executor=cluster.executor(), name="c", dependencies=[a, b])

    exp.run(detach=True)

    assert not supervisor_started(exp)
    assert exp.store.experiment(exp.experiment_id).driver_pid is None
    # another process, later: it reads the news from Slurm itself (its own connection)
    code = "import runyard as run, sys; e = run.Experiment.from_id(sys.argv[1]); print(e.wait(timeout=60))"
    done = subprocess.run([sys.executable, "-c", code, exp.experiment_id], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.stdout == "SUCCEEDED\n", done.stderr
    assert exp.status() == "SUCCEEDED"
    assert exp.get_logs("c").stdout == "hello c\n"


def test_the_dependents_of_a_failed_job_are_cancelled_in_the_queue(cluster: Cluster) -> None:
    exp = run.Experiment("chain-breaks")
    bad = exp.add(run.Config(taskdefs.exit_with, 4), executor=cluster.executor(), name="bad")
    after = exp.add(run.Config(taskdefs.hello), executor=cluster.executor(), name="after", dependencies=[bad])
    exp.add(run.Config(taskdefs.hello), executor=cluster.executor(), name="later", dependencies=[after])

    exp.run(detach=True)
    jobs = {t.id: t.job_id for t in exp.store.tasks(exp.experiment_id)}

    # Slurm itself takes them out of the queue: no runyard process is looking meanwhile
    for name in ("after", "later"):
        until(lambda name=name: cluster.state(jobs[name]) == "CANCELLED", f"Slurm to cancel {name}")
    until(lambda: all_ended(exp), "runyard to read it (at its next poll)")
    tasks = {t.id: t for t in exp.tasks}
    assert (tasks["bad"].status, tasks["bad"].exit_code) == ("FAILED", 4)
    for name in ("after", "later"):
        assert (tasks[name].status, tasks[name].reason) == ("CANCELLED", "dependency failed")
    assert cluster.read(f"{cluster.job_dir}/{exp.experiment_id}/tasks/after/attempt-1/result.json") == b""


def test_a_mixed_executor_dependency_is_not_chained(cluster: Cluster) -> None:
    """Jobs on different clusters cannot wait for each other in Slurm: the driver waits."""
    from runyard.executor import JobRef, JobSpec
    from runyard_slurm.backend import SlurmBackend

    here = cluster.executor()
    elsewhere = cluster.executor(tunnel=run.LocalTunnel(job_dir="/tmp/jobs"))

    def ref(executor: run.SlurmExecutor) -> JobRef:
        return JobRef(
            experiment_id="e", task_id="a", attempt=1, experiment_dir="/h/experiments/e",
            executor=executor, job_id="1",
        )  # fmt: skip

    spec = JobSpec(
        experiment_id="e", task_id="b", attempt=1, experiment_dir="/h/experiments/e", executor=here,
        is_script=False, argv=[], env={},
    )  # fmt: skip

    assert not SlurmBackend().can_chain(spec, [ref(elsewhere)])
    assert SlurmBackend().can_chain(spec, [ref(cluster.executor())])
