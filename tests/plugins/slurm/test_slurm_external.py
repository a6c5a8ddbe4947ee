"""Jobs Slurm ended or ran again without runyard asking: each ending has its failure kind
(``cancelled``, ``timeout``, ``oom``, ``node_failure``, ``preempted``), also when Slurm has
forgotten the job and only its ``slurm.out`` tells; a requeued job's runs are attempts of
their own, each with its own logs.

On the real cluster: ``scancel`` from outside, a job past its time limit, and ``scontrol
requeue`` (which runs the job again as a requeue after a node failure does). NODE_FAIL
itself would need the test cluster's only node taken down under every other test, so its
lines (squeue's restart count, sacct's record per run) are fed in as Slurm 22.05 prints them.
"""

from __future__ import annotations

import json

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster, job_refs, until
from runyard.executor import JobRef
from runyard.states import State
from runyard_slurm import backend, status
from runyard_slurm.backend import SlurmBackend
from runyard_slurm.status import SlurmJob
from runyard_slurm.tunnel import session_for


# --------------------------------------------------------------------------- Slurm's words
@pytest.mark.parametrize(
    ("state", "failure"),
    [("TIMEOUT", "timeout"), ("DEADLINE", "timeout"), ("OUT_OF_MEMORY", "oom"), ("NODE_FAIL", "node_failure"),
     ("BOOT_FAIL", "node_failure"), ("PREEMPTED", "preempted")],
)  # fmt: skip
def test_each_slurm_ending_has_its_failure_kind(state: str, failure: str) -> None:
    decided = status.job_status(SlurmJob("51", state), {"exit_code": 143, "start": 1.0, "end": 2.0})

    assert decided is not None and (decided.state, decided.failure) == (State.FAILED, failure)


def test_a_job_cancelled_in_slurm_says_it_was_cancelled_outside_runyard() -> None:
    decided = status.job_status(SlurmJob("1", "CANCELLED"), None)
    dropped = status.job_status(SlurmJob("2", "CANCELLED", "DependencyNeverSatisfied"), None)

    assert decided is not None and (decided.state, decided.failure) == (State.CANCELLED, "cancelled")
    assert "outside runyard" in (decided.reason or "")
    assert dropped is not None and (dropped.failure, dropped.reason) == ("dependency", "dependency failed")


@pytest.mark.parametrize(
    ("line", "state"),
    [
        ("slurmstepd-n1: error: *** JOB 12 ON n1 CANCELLED AT 2026-12-01T16:11:21 ***", "CANCELLED"),
        ("slurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2026-12-01T16:11:21 DUE TO TIME LIMIT ***", "TIMEOUT"),
        ("slurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2026-12-01T16:11:21 DUE TO PREEMPTION ***", "PREEMPTED"),
        ("slurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2026-12-01T16:11:21 DUE TO NODE FAILURE ***", "NODE_FAIL"),
        ("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=12.batch. Some of your processes may have "
         "been killed by the cgroup out-of-memory handler.", "OUT_OF_MEMORY"),
        ("slurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2026-12-01T16:11:21 DUE TO JOB REQUEUE ***", None),
        ("CANCELLED AT noon, said the task itself", None),
    ],
)  # fmt: skip
def test_slurmstepds_last_words_in_the_output_say_how_slurm_ended_the_job(
    line: str, state: str | None
) -> None:
    assert status.ending_in_output(f"step 1\nloss: 0.5\n{line}\n") == state


def test_squeue_counts_the_restarts_of_a_requeued_job() -> None:
    _, jobs = status.parse_squeue(
        "1764262000\n61|RUNNING|None|1\n62_3|PENDING|BeginTime|2\n63|RUNNING|None|0\n"
    )

    assert [jobs[j].restarts for j in ("61", "62_3", "63")] == [1, 2, 0]


@pytest.mark.parametrize(
    ("before", "failure"), [("NODE_FAIL", "node_failure"), ("PREEMPTED", "preempted"), ("REQUEUED", None)]
)
def test_sacct_lists_each_run_of_a_requeued_job_and_how_the_one_before_ended(
    before: str, failure: str | None
) -> None:
    [job] = status.parse_sacct(f"71|{before}|0:0|None\n71|RUNNING|0:0|None\n").values()

    assert (job.state, job.restarts, job.requeued_by) == ("RUNNING", 1, before)
    assert status.requeue_failure(job) == failure  # None: core says "preempted"


# --------------------------------------------------------------------------- on the cluster
def _launched(cluster: Cluster, task: object, **fields: object) -> tuple[run.Experiment, JobRef]:
    exp = run.Experiment("external")
    exp.add(task, executor=cluster.executor(array=False, **fields), name="t")
    exp.run(detach=True)
    [ref] = job_refs(exp, cluster.executor(array=False, **fields))
    assert ref.job_id
    return exp, ref


def _forgotten(cluster: Cluster, name: str) -> tuple[JobRef, str]:
    """A job id Slurm has never heard of (as one it forgot), and its attempt folder there."""
    ref = JobRef(
        experiment_id=name, task_id="gone", attempt=1, experiment_dir=f"/h/experiments/{name}",
        executor=cluster.executor(), job_id="987654321",
    )  # fmt: skip
    folder = f"{cluster.job_dir}/{name}/tasks/gone/attempt-1"
    cluster.sh(f"mkdir -p {folder}")
    return ref, folder


def test_a_job_cancelled_with_scancel_outside_runyard_is_cancelled_not_failed(cluster: Cluster) -> None:
    exp, ref = _launched(cluster, run.Config(taskdefs.sleep_then_print, 120))
    until(lambda: cluster.state(ref.job_id) == "RUNNING", "the job to run")

    cluster.sh(f"scancel {ref.job_id}")

    until(lambda: exp.tasks[0].status.is_final, "runyard to notice", timeout=120)
    [task] = exp.tasks
    assert (task.status, task.failure) == (State.CANCELLED, "cancelled")
    assert "cancelled outside runyard" in (task.reason or "")


# a minute at the least (Slurm's smallest time limit): in a group of its own, as above
@pytest.mark.slow
@pytest.mark.xdist_group("slurm-time-limit")
def test_a_job_past_its_time_limit_fails_with_timeout(cluster: Cluster) -> None:
    exp, _ = _launched(cluster, run.Config(taskdefs.sleep_then_print, 600), time=1)

    until(
        lambda: exp.tasks[0].status.is_final,
        "Slurm to end the job at its time limit",
        timeout=300,
        interval=1,
    )

    [task] = exp.tasks
    assert (task.status, task.failure) == (State.FAILED, "timeout")
    assert (task.reason or "").startswith("TIMEOUT: the job reached its time limit")


@pytest.mark.parametrize(
    ("words", "result", "expected"),
    [("CANCELLED AT 2026-12-01T16:11:21 ***", None, (State.CANCELLED, "cancelled")),
     ("CANCELLED AT 2026-12-01T16:11:21 DUE TO TIME LIMIT ***", 143, (State.FAILED, "timeout")),
     ("CANCELLED AT 2026-12-01T16:11:21 DUE TO NODE FAILURE ***", None, (State.FAILED, "node_failure"))],
)  # fmt: skip
def test_a_job_slurm_forgot_is_named_by_what_slurm_wrote_in_its_output(
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    words: str,
    result: int | None,
    expected: tuple[State, str],
) -> None:
    monkeypatch.setattr(backend, "LOST_GRACE", 0.0)
    ref, folder = _forgotten(cluster, "stepd-exp")
    session = session_for(cluster.tunnel())
    line = f"loss: 0.5\nslurmstepd-node1: error: *** JOB 987654321 ON node1 {words}\n"
    session.write(f"{folder}/slurm.out", line.encode())
    if result is not None:
        session.write(
            f"{folder}/result.json", json.dumps({"exit_code": result, "start": 1.0, "end": 2.0}).encode()
        )
    try:
        decided = SlurmBackend().poll([ref])[ref.job_id]
    finally:
        cluster.sh(f"rm -rf {cluster.job_dir}/stepd-exp")

    assert (decided.state, decided.failure) == expected


def test_a_node_fail_requeue_is_reported_as_the_next_attempt_with_node_failure(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """squeue and sacct as they answer for a job that NODE_FAIL requeued and that runs again."""
    ref, folder = _forgotten(cluster, "nodefail-exp")
    ref.handle = {"attempt": 1}
    monkeypatch.setattr(status, "squeue_command", lambda ids: "date +%s && echo '987654321|RUNNING|None|1'")
    monkeypatch.setattr(
        status,
        "sacct_command",
        lambda ids: "printf '987654321|NODE_FAIL|0:0|None\\n987654321|RUNNING|0:0|None\\n'",
    )
    try:
        running = SlurmBackend().poll([ref])[ref.job_id]
        # it ends: its result is the second attempt's
        monkeypatch.setattr(
            status, "squeue_command", lambda ids: "date +%s && echo '987654321|COMPLETED|None|1'"
        )
        cluster.sh(f"mkdir -p {folder[:-1]}2 && echo '{{\"exit_code\": 0}}' > {folder[:-1]}2/result.json")
        ended = SlurmBackend().poll([ref])[ref.job_id]
    finally:
        cluster.sh(f"rm -rf {cluster.job_dir}/nodefail-exp")

    # the run before ended by the node's failure; the new attempt's own outcome is apart from it
    assert (running.state, running.attempt, running.requeued_by, running.failure) == (
        State.RUNNING, 2, "node_failure", None,
    )  # fmt: skip
    assert (ended.state, ended.attempt, ended.requeued_by, ended.failure) == (
        State.SUCCEEDED,
        2,
        "node_failure",
        None,
    )


REQUEUED_TASK = 'echo "run $RUNYARD_ATTEMPT"; if [ "$RUNYARD_ATTEMPT" = 1 ]; then sleep 300; fi; echo done'


# Slurm holds a requeued job about two minutes before it runs it again: this test waits that
# long, with its one job mostly pending. It runs in a group of its own, beside the Slurm group
# (not at the end of that chain, the run's critical path).
@pytest.mark.slow
@pytest.mark.xdist_group("slurm-requeue")
def test_a_requeued_job_runs_its_next_attempt_with_its_own_logs(cluster: Cluster) -> None:
    exp, ref = _launched(cluster, run.Script(inline=REQUEUED_TASK), requeue=True)
    until(lambda: "run 1" in exp.get_logs("t").stdout, "the first run to start")

    cluster.sh(f"scontrol requeue {ref.job_id}")  # as Slurm does after a node failure
    # (it starts again after Slurm's credential delay, about two minutes: started sooner, on the
    # same node, it would fail to launch); meanwhile the task is on its next attempt, waiting
    until(lambda: (exp.tasks[0].attempts, exp.tasks[0].status) == (2, State.SUBMITTED), "runyard to see it")
    until(lambda: exp.tasks[0].status.is_final, "the second run to end", timeout=400, interval=1)
    [task] = exp.tasks
    first, second = exp.attempts("t")
    assert (task.status, task.attempts, task.job_id) == (State.SUCCEEDED, 2, ref.job_id)
    assert (first.status, first.failure) == (State.FAILED, "preempted")  # a requeue by hand: no NODE_FAIL
    assert (second.status, second.exit_code, second.job_id) == (State.SUCCEEDED, 0, ref.job_id)
    one, two = exp.get_logs("t", attempt=1), exp.get_logs("t", attempt=2)
    assert "run 1" in one.stdout and "run 2" not in one.stdout and "done" not in one.stdout
    assert two.stdout.split() == ["run", "2", "done"]
    # the second run's runner claimed attempt 2 itself (it did not exit 75 on attempt 1's claim)
    claim = json.loads(cluster.read(f"{cluster.job_dir}/{exp.experiment_id}/tasks/t/attempt-2/claim.json"))
    assert claim["slurm_job_id"] == ref.job_id
