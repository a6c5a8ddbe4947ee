"""Training workloads on the real two-node bed: torchrun on both nodes through srun (real
torch.distributed with gloo on the CPU), a head node without an address, preemption by a
higher-priority partition with the warning signal, and ``max_parallel`` as a job array's %N.

The torch jobs run with the bed's torch venv (``torch_python``); the nodes are both this
machine (docs/testing.md). Slow tests run in xdist groups of their own, beside the Slurm group.
"""

from __future__ import annotations

import io
import re
import shlex
import time

import pytest
import runyard as run
import taskdefs
import trainingdefs
from _slurm_helpers import Cluster, until
from runyard.jobfiles import CLAIM, RESULT, STDOUT
from runyard.states import State


def attempt_dir(cluster: Cluster, exp: run.Experiment, task: str, attempt: int = 1) -> str:
    return f"{cluster.job_dir}/{exp.experiment_id}/tasks/{task}/attempt-{attempt}"


def lines(text: str) -> list[str]:
    """The ``rank=...`` lines of some output (torch may print warnings beside them)."""
    return [line for line in text.splitlines() if line.startswith("rank=")]


def torch_executor(cluster: Cluster, torch_python: str, **fields: object) -> object:
    return cluster.executor(
        partition=cluster.facts.multi_partition, nodes=2, python=torch_python,
        launcher=run.Torchrun(nproc_per_node=2), **fields,
    )  # fmt: skip


# ------------------------------------------------------------------------------ torchrun


@pytest.mark.slow
@pytest.mark.xdist_group("slurm-torch")
def test_torchrun_on_two_nodes_gives_four_ranks_that_all_reduce_and_keeps_every_ranks_output(
    cluster: Cluster, torch_python: str
) -> None:
    exp = run.Experiment("slurm-ddp")
    exp.add(run.Config(trainingdefs.allreduce), executor=torch_executor(cluster, torch_python), name="t")

    assert exp.run() == "SUCCEEDED", exp.tasks[0].reason

    [task] = exp.tasks
    rank0 = lines(exp.get_logs("t").stdout)
    others = [
        lines(cluster.read(f"{attempt_dir(cluster, exp, 't')}/ranks/{r}/stdout.log").decode())
        for r in (1, 2, 3)
    ]
    found = rank0 + [line for rank in others for line in rank]
    ranks = {int(re.search(r"rank=(\d+)", line).group(1)): line for line in found}  # type: ignore[union-attr]
    assert len(rank0) == 1 and rank0[0].startswith("rank=0 ")  # rank 0 is the task's output
    assert sorted(ranks) == [0, 1, 2, 3] and len(found) == 4  # each rank ran the task once
    assert all(" world=4 sum=6 " in line for line in found)  # 0 + 1 + 2 + 3
    nodes = sorted(line.rsplit("node=", 1)[1] for line in found)
    assert nodes == ["node1", "node1", "node2", "node2"]  # two ranks on each node
    # one torchrun agent per node, through srun, meeting at the first node's address
    job = cluster.job(task.job_id)
    assert (job["NumNodes"], job["Partition"]) == ("2", cluster.facts.multi_partition)


@pytest.mark.slow
@pytest.mark.xdist_group("slurm-torch")
def test_a_failing_rank_fails_the_task(cluster: Cluster, torch_python: str) -> None:
    exp = run.Experiment("slurm-ddp-fail")
    exp.add(
        run.Config(trainingdefs.allreduce, fail_rank=3),
        executor=torch_executor(cluster, torch_python),
        name="t",
    )

    assert exp.run() == "FAILED"

    [task] = exp.tasks
    assert (task.status, task.failure) == (State.FAILED, "error")
    # whichever node rank 3 ran on (srun stops the other node's runner), the reason names it
    assert task.reason.startswith("rank 3 failed: RuntimeError: rank 3 fails on purpose"), task.reason
    ranks = attempt_dir(cluster, exp, "t") + "/ranks/3"
    assert "RuntimeError: rank 3 fails on purpose" in cluster.read(f"{ranks}/stderr.log").decode()


def test_a_first_node_without_an_address_fails_the_job_at_once_and_no_rank_trains(
    cluster: Cluster, torch_python: str
) -> None:
    """The head is the first node of the allocation (SLURM_JOB_NODELIST), its address Slurm's
    NodeAddr; here the job's node list names a node Slurm does not know (the job's own
    env_vars, exported before the rendezvous lines), as a head without an address would be."""
    executor = torch_executor(cluster, torch_python, env_vars={"SLURM_JOB_NODELIST": "no-such-node"})
    exp = run.Experiment("slurm-ddp-no-head")
    exp.add(run.Config(trainingdefs.allreduce), executor=executor, name="t")

    assert exp.run() == "FAILED"

    [task] = exp.tasks
    assert (task.status, task.failure) == (State.FAILED, "error")  # not "lost": its script said why
    assert (
        "runyard: cannot start torchrun: Slurm knows no address (NodeAddr) of node 'no-such-node', the first"
        f" of job {task.job_id}"
    ) in (task.reason or "")
    assert cluster.state(task.job_id) == "FAILED"
    folder = attempt_dir(cluster, exp, "t")
    listed = set(cluster.sh(f"ls {shlex.quote(folder)}").split())
    assert "slurm.out" in listed and not listed & {CLAIM, STDOUT, RESULT, "ranks"}  # no runner ran


def test_the_dry_run_shows_the_launcher_lines(cluster: Cluster, torch_python: str) -> None:
    exp = run.Experiment("slurm-ddp-dry")
    exp.add(
        run.Config(trainingdefs.allreduce),
        executor=torch_executor(cluster, torch_python, signal="USR1@90"),
        name="t",
    )

    shown = exp.dry_run(file=io.StringIO())["t"]

    assert "#SBATCH --signal='B:USR1@90'" in shown and "export RUNYARD_PREEMPT_SIGNAL=USR1" in shown
    assert 'RUNYARD_RDZV_ENDPOINT="$rdzv_addr:$((29500 + SLURM_JOB_ID % 1000))"' in shown
    assert 'exec srun --nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1' in shown
    assert "export RUNYARD_LAUNCHER=" in shown


# ---------------------------------------------------------------------------- preemption


def submit_high(cluster: Cluster) -> str:
    """A job of the high partition that needs the whole node the low partition's jobs run on."""
    out = cluster.sh(
        f"sbatch --parsable -p {cluster.facts.high_partition} --exclusive -o /dev/null --wrap 'sleep 1'"
    )
    return out.strip()


# Slurm holds a requeued job ~120 s before it may start again; `scontrol update StartTime=now`
# lets it start at once, so this takes seconds (on node2: the low and high partitions)
def test_a_preempted_task_is_warned_requeued_and_runs_a_new_attempt_that_max_retries_does_not_stop(
    cluster: Cluster,
) -> None:
    exp = run.Experiment("slurm-preempt", max_retries=0)
    executor = cluster.executor(partition=cluster.facts.low_partition, requeue=True, signal="USR1@90")
    exp.add(run.Config(trainingdefs.wait_for_preemption), executor=executor, name="t")
    exp.run(detach=True)
    high = ""
    try:
        until(lambda: "waiting" in exp.get_logs("t").stdout, "attempt 1 to run", timeout=120)
        job_id = exp.tasks[0].job_id
        high = submit_high(cluster)
        until(lambda: exp.tasks[0].attempts == 2, "runyard to see the job requeued", timeout=120)
        until(lambda: cluster.state(job_id) == "PENDING", "Slurm to hold the requeued job")
        cluster.sh(f"scontrol update jobid={job_id} StartTime=now")  # skip Slurm's ~120 s delay
        until(lambda: exp.tasks[0].status.is_final, "attempt 2 to end", timeout=180, interval=0.5)
    finally:
        if high:
            cluster.sh(f"scancel {high}")
    [task] = exp.tasks
    first, second = exp.attempts("t")
    assert (task.status, task.attempts, task.job_id) == (State.SUCCEEDED, 2, job_id)
    assert (first.status, first.failure) == (State.FAILED, "preempted")
    assert (second.status, second.exit_code, second.failure) == (State.SUCCEEDED, 0, None)
    said = exp.get_logs("t", attempt=1).stdout.split("\n")
    assert "waiting" in said and "terminated preempting=True" in said  # the warning came, TERM or not first
    assert "warned" in said  # runyard.job.on_preempt's callback ran
    assert exp.get_logs("t", attempt=2).stdout == "resumed on attempt 2\n"
    runs = cluster.sh(f"sacct -X -D -n -P -j {job_id} -o State").split()
    assert runs[:1] == ["PREEMPTED"]


# --------------------------------------------------------------------------- max_parallel


def running_elements(cluster: Cluster, array: str) -> int:
    out = cluster.sh(f"squeue -h -r -t RUNNING -j {shlex.quote(array)} -o %i || true")
    return len(out.split())


@pytest.mark.slow
@pytest.mark.xdist_group("slurm-max-parallel")
def test_max_parallel_makes_the_group_an_array_with_a_throttle_that_slurm_keeps(cluster: Cluster) -> None:
    """The cpu partition's node runs two one-CPU jobs at once; with max_parallel=1 Slurm runs one
    element of the array at a time."""
    exp = run.Experiment("slurm-max-parallel", max_parallel=1)
    exp.add(
        [run.Config(taskdefs.sleep_then_print, 2, str(i)) for i in range(3)],
        executor=cluster.executor(),
        name="v",
    )
    exp.run(detach=True)
    until(lambda: all(t.job_id for t in exp.tasks), "the array to be submitted")
    array = exp.tasks[0].job_id.split("_")[0]
    assert {t.job_id for t in exp.tasks} == {f"{array}_{i}" for i in range(3)}
    assert cluster.job(f"{array}_0").get("ArrayTaskThrottle") == "1"
    most, deadline = 0, time.monotonic() + 120  # (a loose guard against a hang)
    while not all(t.status.is_final for t in exp.tasks) and time.monotonic() < deadline:
        most = max(most, running_elements(cluster, array))
        time.sleep(0.2)
    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert most == 1
    assert [exp.get_logs(f"v-{i}").stdout for i in range(3)] == ["0\n", "1\n", "2\n"]
