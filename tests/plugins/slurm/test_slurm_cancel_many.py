"""Cancelling many Slurm jobs is one round trip: ``SlurmBackend.cancel_many`` runs one
``scancel`` per cluster for all of its jobs, and says per job what kept it from ending."""

from __future__ import annotations

from pathlib import Path

import runyard as run
import taskdefs
from _slurm_helpers import Cluster, Relay, job_refs, known_hosts_for, until
from runyard.errors import UnreachableError
from runyard.plugins import plugin_manager
from runyard_slurm.backend import _scancel_failures
from runyard_slurm.tunnel import CommandResult, session_for

LATER = {"begin": "now+3600"}  # a job Slurm keeps pending for an hour


def pending_jobs(cluster: Cluster, count: int, **tunnel: object) -> tuple[run.Experiment, run.SlurmExecutor]:
    executor = cluster.executor(tunnel=cluster.tunnel(**tunnel), array=False, additional_parameters=LATER)
    exp = run.Experiment("cancel-many")
    for i in range(count):
        exp.add(run.Config(taskdefs.hello, str(i)), executor=executor, name=f"t-{i}")
    exp.run(detach=True)
    return exp, executor


def test_cancelling_many_jobs_of_a_cluster_is_one_scancel(cluster: Cluster) -> None:
    exp, executor = pending_jobs(cluster, 6)
    refs = job_refs(exp, executor)
    session = session_for(executor.tunnel)
    backend = plugin_manager().backend("slurm")
    commands = session.commands

    assert backend.cancel_many(refs) == [None] * 6

    assert session.commands - commands == 1
    for ref in refs:
        until(lambda ref=ref: cluster.state(ref.job_id) == "CANCELLED", f"job {ref.job_id} to be cancelled")


def test_a_job_that_ended_already_is_no_error_and_the_others_still_end(cluster: Cluster) -> None:
    exp, executor = pending_jobs(cluster, 3)
    refs = job_refs(exp, executor)
    cluster.sh(f"scancel {refs[1].job_id}")  # ended outside runyard
    until(lambda: cluster.state(refs[1].job_id) == "CANCELLED", "the job to end")

    assert plugin_manager().backend("slurm").cancel_many(refs) == [None] * 3

    for ref in refs:
        until(lambda ref=ref: cluster.state(ref.job_id) == "CANCELLED", f"job {ref.job_id} to be cancelled")


def test_a_cluster_that_cannot_be_reached_gives_each_of_its_jobs_the_error(
    cluster: Cluster, relay: Relay, tmp_path: Path
) -> None:
    kh = known_hosts_for(cluster, tmp_path / "kh", relay.port)
    exp, executor = pending_jobs(cluster, 2, port=relay.port, known_hosts=kh, retry_for=0.5)
    refs = job_refs(exp, executor)
    relay.stop()
    try:
        results = plugin_manager().backend("slurm").cancel_many(refs)
    finally:
        relay.start()

    assert all(isinstance(r, UnreachableError) and "cannot reach" in str(r) for r in results), results
    assert [cluster.state(r.job_id) for r in refs] == ["PENDING", "PENDING"]  # nothing ended
    backend = plugin_manager().backend("slurm")
    until(lambda: backend.cancel_many(refs) == [None, None], "the jobs to be cancelled once it is back")
    exp.cancel_all()  # (the store too, while the relay is up)


def test_scancel_errors_name_the_jobs_it_did_not_end() -> None:
    # (a refusal the test cluster cannot make on cue: every test job is root's own)
    done = CommandResult(
        1, "",
        "scancel: error: Kill job error on job id 12: Access/permission denied\n"
        "scancel: error: Kill job error on job id 14_2: Job/step already completing or completed\n",
    )  # fmt: skip
    assert _scancel_failures(done, ["12", "13", "14_2"]) == {
        "12": "scancel: error: Kill job error on job id 12: Access/permission denied"
    }
    refused = CommandResult(1, "", "scancel: error: Invalid job id 1x\n")
    assert _scancel_failures(refused, ["1x", "2"]) == dict.fromkeys(
        ["1x", "2"], "scancel: error: Invalid job id 1x"
    )
