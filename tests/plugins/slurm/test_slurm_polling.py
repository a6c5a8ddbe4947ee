"""Status from the real cluster: one squeue for all jobs, sacct for jobs squeue forgot, the
runner's files for jobs both forgot, a job killed by hand, and polling that backs off."""

from __future__ import annotations

import json
import time

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster, job_refs, until
from runyard.executor import JobRef, JobStatus
from runyard.plugins import plugin_manager
from runyard.states import State
from runyard_slurm import backend, status
from runyard_slurm.backend import SlurmBackend
from runyard_slurm.tunnel import session_for


def launched(cluster: Cluster, tasks: list[object], **fields: object) -> tuple[run.Experiment, list[JobRef]]:
    """An experiment whose tasks were all launched (detached, no supervisor needed), and their refs."""
    exp = run.Experiment("polling")
    for i, task in enumerate(tasks):
        exp.add(task, executor=cluster.executor(array=False, **fields), name=f"t{i}")
    exp.run(detach=True)
    refs = job_refs(exp, cluster.executor(array=False, **fields))
    assert all(r.job_id for r in refs)
    return exp, refs


def forgotten_ref(cluster: Cluster, exp_id: str, job_id: str = "987654321") -> JobRef:
    """A job id Slurm has never heard of, for a task of the experiment."""
    return JobRef(
        experiment_id=exp_id, task_id="gone", attempt=1, experiment_dir=f"/h/experiments/{exp_id}",
        executor=cluster.executor(), job_id=job_id,
    )  # fmt: skip


def test_one_poll_of_many_jobs_is_one_command(cluster: Cluster) -> None:
    _, refs = launched(cluster, [run.Config(taskdefs.sleep_then_print, 0.2) for _ in range(6)])
    session = session_for(cluster.tunnel())
    until(lambda: all(cluster.state(r.job_id) == "COMPLETED" for r in refs), "the jobs to end")

    before = session.commands
    statuses = SlurmBackend().poll(refs)  # a fresh backend: due at once

    assert session.commands - before == 1  # squeue only; the results come over SFTP
    assert {s.state for s in statuses.values()} == {State.SUCCEEDED}
    assert len(statuses) == 6


def test_a_job_both_squeue_and_sacct_forgot_gets_its_state_from_the_runners_result(cluster: Cluster) -> None:
    ref = forgotten_ref(cluster, "forgotten-exp")
    folder = f"{cluster.job_dir}/forgotten-exp/tasks/gone/attempt-1"
    cluster.sh(f"mkdir -p {folder}")
    session_for(cluster.tunnel()).write(
        f"{folder}/result.json",
        json.dumps({"exit_code": 6, "start": 1.0, "end": 2.0, "error": "boom"}).encode(),
    )
    try:
        statuses = SlurmBackend().poll([ref])
    finally:
        cluster.sh(f"rm -rf {cluster.job_dir}/forgotten-exp")

    assert (statuses[ref.job_id].state, statuses[ref.job_id].exit_code) == (State.FAILED, 6)
    assert statuses[ref.job_id].reason == "boom"


def test_a_forgotten_job_whose_runner_started_and_stopped_beating_is_lost(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "LOST_GRACE", 0.0)
    ref = forgotten_ref(cluster, "lost-exp")
    folder = f"{cluster.job_dir}/lost-exp/tasks/gone/attempt-1"
    cluster.sh(f"mkdir -p {folder} && touch -d '10 minutes ago' {folder}/heartbeat")
    try:
        statuses = SlurmBackend().poll([ref])
    finally:
        cluster.sh(f"rm -rf {cluster.job_dir}/lost-exp")

    assert statuses[ref.job_id].state is State.FAILED
    assert statuses[ref.job_id].reason.startswith("lost: Slurm no longer knows job 987654321")


def test_a_forgotten_job_whose_runner_still_beats_is_not_lost(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "LOST_GRACE", 0.0)
    ref = forgotten_ref(cluster, "beating-exp")
    folder = f"{cluster.job_dir}/beating-exp/tasks/gone/attempt-1"
    cluster.sh(f"mkdir -p {folder} && touch {folder}/heartbeat")
    try:
        statuses = SlurmBackend().poll([ref])
    finally:
        cluster.sh(f"rm -rf {cluster.job_dir}/beating-exp")

    assert statuses == {}  # no news: it is still running somewhere


def test_sacct_answers_for_jobs_squeue_forgot(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    exp, refs = launched(cluster, [run.Config(taskdefs.exit_with, 3)])
    until(lambda: cluster.state(refs[0].job_id) == "FAILED", "the job to fail")
    until(lambda: "FAILED" in cluster.sh(f"sacct -X -n -j {refs[0].job_id} -o State"), "sacct to record it")
    # squeue as on a cluster with a short MinJobAge: it has forgotten the job
    monkeypatch.setattr(status, "squeue_command", lambda ids: "date +%s")
    cluster.sh(f"rm -f {cluster.job_dir}/{exp.experiment_id}/tasks/t0/attempt-1/result.json")  # and no result
    session = session_for(cluster.tunnel())
    before = session.commands

    statuses = SlurmBackend().poll(refs)

    assert session.commands - before == 2  # squeue, then sacct
    assert statuses[refs[0].job_id].state is State.FAILED
    assert "without a result" in statuses[refs[0].job_id].reason


def test_a_job_cancelled_by_hand_outside_runyard_is_cancelled(cluster: Cluster) -> None:
    exp, refs = launched(cluster, [run.Config(taskdefs.sleep_then_print, 60)])
    until(lambda: cluster.state(refs[0].job_id) == "RUNNING", "the job to run")

    cluster.sh(f"scancel {refs[0].job_id}")

    until(lambda: exp.tasks[0].status.is_final, "runyard to notice")
    task = exp.tasks[0]
    assert (task.status, task.reason) == ("CANCELLED", "cancelled outside runyard (scancel in Slurm)")


def test_polling_backs_off_while_nothing_changes(cluster: Cluster) -> None:
    exp, refs = launched(cluster, [run.Config(taskdefs.sleep_then_print, 60)])
    poller = plugin_manager().backend("slurm")  # the one cancel() goes through
    until(lambda: poller.poll(refs).get(refs[0].job_id, None) is not None
          and poller.poll_interval() > backend.POLL_MIN, "a poll with no news")  # fmt: skip
    session = session_for(cluster.tunnel())
    intervals = []
    for _ in range(3):
        time.sleep(poller.poll_interval())
        poller.poll(refs)
        intervals.append(poller.poll_interval())
    before = session.commands

    assert poller.poll(refs) == {}  # asked again before it is due: no command at all

    assert session.commands == before
    assert intervals == sorted(intervals) and intervals[-1] > intervals[0]
    exp.cancel("t0")
    seen = poller.poll(refs)
    assert refs[0].job_id in seen  # after a cancel the next poll is due at once
    deadline = time.monotonic() + 60
    while seen.get(refs[0].job_id, JobStatus(State.RUNNING)).state is not State.CANCELLED:
        assert time.monotonic() < deadline, "the job was never seen CANCELLED"
        time.sleep(0.05)
        seen = poller.poll(refs)
    assert poller.poll_interval() == backend.POLL_MIN  # a change: polling is quick again
