"""Experiments that mix Slurm and local tasks: dependencies across executors go through
runyard's driver (attached) or its supervisor (detached), never through Slurm."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
import runyard as run
import taskdefs
from helpers import end_everything

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def slurm(slurm_cluster: Any, monkeypatch: pytest.MonkeyPatch, runyard_home: str) -> Iterator[Any]:
    """``run.SlurmExecutor`` on the test cluster through the cluster defaults; job folders
    removed afterwards."""
    job_dir = f"{slurm_cluster.job_dir}/mixed-{os.getpid()}"
    for var, value in {"HOST": slurm_cluster.host, "PORT": str(slurm_cluster.port), "USER": slurm_cluster.user,
                       "KEY": slurm_cluster.key, "KNOWN_HOSTS": slurm_cluster.known_hosts, "JOB_DIR": job_dir,
                       "CONFIG": os.path.join(runyard_home, "none.toml"),
                       "POLL_MAX": str(slurm_cluster.poll_max)}.items():  # fmt: skip
        monkeypatch.setenv(f"RUNYARD_SLURM_{var}", value)
    yield lambda **fields: run.SlurmExecutor(code=TESTS, **fields)
    from runyard_slurm.tunnel import session_for

    end_everything(runyard_home)
    session_for(run.SlurmExecutor().tunnel).run(f"rm -rf {shlex.quote(job_dir)}")


def test_local_then_slurm_then_local_runs_in_order(slurm: Any) -> None:
    exp = run.Experiment("mixed")
    prep = exp.add(run.Config(taskdefs.hello, "prep"), executor=run.LocalExecutor(), name="prep")
    train = exp.add(run.Config(taskdefs.hello, "train"), executor=slurm(), name="train", dependencies=[prep])
    exp.add(
        run.Config(taskdefs.hello, "eval"), executor=run.LocalExecutor(), name="eval", dependencies=[train]
    )

    assert exp.run() == "SUCCEEDED"

    tasks = {t.id: t for t in exp.tasks}
    assert tasks["train"].executor.kind == "slurm" and tasks["train"].job_id.isdigit()
    assert tasks["prep"].end_time <= tasks["train"].start_time
    assert tasks["train"].end_time <= tasks["eval"].start_time
    assert [exp.get_logs(i).stdout for i in ("prep", "train", "eval")] == [
        "hello prep\n",
        "hello train\n",
        "hello eval\n",
    ]


def test_a_slurm_task_after_a_local_one_is_submitted_only_when_it_succeeded(slurm: Any) -> None:
    exp = run.Experiment("mixed-detached")
    first = exp.add(run.Config(taskdefs.sleep_then_print, 1.5), executor=run.LocalExecutor(), name="local")
    exp.add(run.Config(taskdefs.hello), executor=slurm(), name="slurm", dependencies=[first])

    exp.run(detach=True)

    record = exp.store.task(exp.experiment_id, "slurm")
    assert record is not None and record.job_id is None  # not chained: Slurm cannot wait for a local job
    assert exp.store.experiment(exp.experiment_id).driver_pid is not None  # a supervisor drives it
    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert exp.get_logs("slurm").stdout == "hello world\n"


def test_a_failed_slurm_task_cancels_its_local_dependent(slurm: Any) -> None:
    exp = run.Experiment("mixed-failure")
    bad = exp.add(run.Config(taskdefs.exit_with, 9), executor=slurm(), name="bad")
    exp.add(run.Config(taskdefs.hello), executor=run.LocalExecutor(), name="after", dependencies=[bad])

    assert exp.run() == "FAILED"

    tasks = {t.id: t for t in exp.tasks}
    assert (tasks["bad"].status, tasks["bad"].exit_code) == ("FAILED", 9)
    assert (tasks["after"].status, tasks["after"].reason) == ("CANCELLED", "dependency failed")
