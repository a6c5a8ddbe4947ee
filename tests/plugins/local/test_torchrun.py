"""The torchrun launcher on the local executor, with real PyTorch (gloo on CPU, from the test
bed's torch venv, which has no runyard: the tasks import ``runyard.job`` through the stand-in
package every job carries). A task runs once per rank; rank 0's output is the task's, the
others' beside it in ``attempt-N/ranks/<rank>/``; the task fails when a rank fails; the
rendezvous port is free for every task; the workers stay in the runner's session, so cancel
and pause reach every one of them; the preemption warning reaches every rank and the agent
lives through it."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path
from typing import Any

import jobtasks
import pytest
import runyard as run
import taskdefs
from _local_helpers import Start, alive, session, task
from helpers import until
from runyard.naming import attempt_dir

pytestmark = pytest.mark.slow  # every torch process imports torch: seconds each, on 2 cores
TORCH_START = 120  # seconds: an agent and its ranks importing torch on a loaded machine (hangs only)


def torchrun(python: str, nproc: int = 2, **fields: Any) -> run.LocalExecutor:
    return run.LocalExecutor(python=python, launcher=run.Torchrun(nproc_per_node=nproc), **fields)


def ranks_seen(out_dir: Path, world: int = 2) -> list[dict[str, Any]]:
    return [json.loads((out_dir / f"rank-{rank}.json").read_text()) for rank in range(world)]


def test_a_python_task_runs_once_per_rank_and_its_ranks_all_reduce(torch_python: str, tmp_path: Path) -> None:
    exp = run.Experiment("ddp")
    task_id = exp.add(
        run.Config(jobtasks.allreduce, str(tmp_path)), executor=torchrun(torch_python), name="ddp"
    )

    assert exp.run() == "SUCCEEDED", task(exp, task_id).reason

    folder = attempt_dir(exp.directory, task_id, 1)
    runner = int(task(exp, task_id).job_id)
    for rank, seen in enumerate(ranks_seen(tmp_path)):
        assert (seen["rank"], seen["world_size"], seen["sum"]) == (rank, 2, 3.0)
        assert seen["info"] == {
            "experiment_id": exp.id, "task_id": task_id, "attempt": 1,
            "rank": rank, "world_size": 2, "local_rank": rank,
        }  # fmt: skip
        assert seen["attempt_dir"] == folder
        # in the runner's session (its pause and cancel reach them), each in a group of its own
        assert seen["sid"] == runner and seen["pgid"] == seen["pid"]
    logs = exp.get_logs(task_id)
    assert [json.loads(line)["rank"] for line in logs.stdout.splitlines()] == [0]  # rank 0 is the task's
    rank1 = Path(folder, "ranks", "1", "stdout.log").read_text()
    assert [json.loads(line)["rank"] for line in rank1.splitlines()] == [1]


def test_two_torchrun_tasks_at_once_each_get_a_rendezvous_of_their_own(
    torch_python: str, tmp_path: Path
) -> None:
    """Port 0: each agent's c10d store takes a free port, so two tasks never collide (their
    ranks wait for each other: both rendezvous happened at the same time)."""
    exp = run.Experiment("two-ddp")
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    for me, other in (("a", "b"), ("b", "a")):
        (tmp_path / me).mkdir()
        target = run.Config(jobtasks.allreduce_beside, str(tmp_path / me), str(meeting), me, other)
        exp.add(target, executor=torchrun(torch_python), name=me)

    assert exp.run() == "SUCCEEDED", [t.reason for t in exp.tasks]

    for me in ("a", "b"):
        for rank, seen in enumerate(ranks_seen(tmp_path / me)):
            assert (seen["rank"], seen["world_size"], seen["sum"]) == (rank, 2, 3.0)
            assert seen["info"]["task_id"] == me


def test_a_rank_that_raises_fails_the_task_with_that_ranks_error(torch_python: str, tmp_path: Path) -> None:
    exp = run.Experiment("ddp-fails")
    failing = run.Config(jobtasks.fail_on_rank, 1, "rank one broke", str(tmp_path))
    task_id = exp.add(failing, executor=torchrun(torch_python), name="t")

    assert exp.run() == "FAILED"

    view = task(exp, task_id)
    assert view.exit_code == 1
    assert "rank 1 failed: ValueError: rank one broke" in view.reason
    rank1 = Path(attempt_dir(exp.directory, task_id, 1), "ranks", "1")
    assert "ValueError: rank one broke" in (rank1 / "stderr.log").read_text()  # its traceback
    assert "rank 0 here" in exp.get_logs(task_id).stdout


def test_a_script_task_runs_once_per_rank(torch_python: str) -> None:
    exp = run.Experiment("ddp-script")
    task_id = exp.add(run.Script(inline='echo "rank $RANK of $WORLD_SIZE"'), executor=torchrun(torch_python))

    assert exp.run() == "SUCCEEDED", task(exp, task_id).reason

    assert exp.get_logs(task_id).stdout == "rank 0 of 2\n"
    rank1 = Path(attempt_dir(exp.directory, task_id, 1), "ranks", "1", "stdout.log")
    assert rank1.read_text() == "rank 1 of 2\n"


def _start_sleeping_ranks(
    start: Start, python: str, pid_dir: Path, grace: float = 1.0, **options: Any
) -> tuple[Any, str, int, list[int]]:
    exp, task_id = start(
        run.Config(jobtasks.sleep_in_every_rank, str(pid_dir), **options),
        torchrun(python, cancel_grace=grace),
    )
    for rank in (0, 1):
        until(
            lambda r=rank: (pid_dir / f"rank-{r}.pid").exists(), f"rank {rank} to start", timeout=TORCH_START
        )
    ranks = [int((pid_dir / f"rank-{rank}.pid").read_text()) for rank in (0, 1)]
    sid = int(task(exp, task_id).job_id)
    assert set(ranks) <= set(session(sid))
    return exp, task_id, sid, ranks


@pytest.mark.parametrize(
    ("ignore_sigterm", "grace", "exit_code", "error"),
    [(False, 60.0, 143, "terminated (SIGTERM)"), (True, 1.0, 137, "killed by signal 9 (SIGKILL)")],
    ids=["ranks-end-on-sigterm", "ranks-ignore-sigterm"],
)
def test_cancel_ends_the_agent_and_every_rank(
    start: Start,
    torch_python: str,
    tmp_path: Path,
    ignore_sigterm: bool,
    grace: float,
    exit_code: int,
    error: str,
) -> None:
    """TERM reaches the agent and the ranks: the attempt ends as a TERM (the agent's own exit
    code says nothing of it), or, with ranks deaf to it, everything is SIGKILLed after the
    grace."""
    exp, task_id, sid, ranks = _start_sleeping_ranks(
        start, torch_python, tmp_path, grace, ignore_sigterm=ignore_sigterm
    )

    exp.cancel(task_id)

    until(lambda: not session(sid), "every process of the task to end", timeout=90)
    assert not any(alive(pid) for pid in ranks)
    until(lambda: task(exp, task_id).status == "CANCELLED", "the task to be cancelled")
    result = json.loads(Path(attempt_dir(exp.directory, task_id, 1), "result.json").read_text())
    assert (result["exit_code"], result["error"]) == (exit_code, error)


def test_an_agent_killed_from_outside_takes_its_ranks_with_it(
    start: Start, torch_python: str, tmp_path: Path
) -> None:
    """As the kernel's OOM killer would: SIGKILL to the agent alone. The task fails with that
    signal and no rank is left running."""
    exp, task_id, sid, ranks = _start_sleeping_ranks(start, torch_python, tmp_path)
    agent = next(pid for pid in session(sid) if b"--agent" in Path(f"/proc/{pid}/cmdline").read_bytes())

    os.kill(agent, signal.SIGKILL)

    until(lambda: not any(alive(pid) for pid in ranks), "the ranks to end", timeout=60)
    until(lambda: task(exp, task_id).status == "FAILED", "the task to fail")
    assert task(exp, task_id).exit_code == 137 and "SIGKILL" in task(exp, task_id).reason


def test_pause_stops_every_rank_and_resume_continues_them(
    start: Start, torch_python: str, tmp_path: Path
) -> None:
    exp, task_id, sid, ranks = _start_sleeping_ranks(start, torch_python, tmp_path)

    exp.pause(task_id)

    until(lambda: {s for _, s in session(sid).values()} == {"T"}, "every process to be stopped (state T)")
    assert set(ranks) <= set(session(sid))
    exp.resume(task_id)
    until(lambda: "T" not in {s for _, s in session(sid).values()}, "every process to continue")


def test_the_preemption_warning_reaches_every_rank_and_the_agent_lives_through_it(
    start: Start, torch_python: str, tmp_path: Path
) -> None:
    """The signal (RUNYARD_PREEMPT_SIGNAL) sent to the runner: each rank's on_preempt callback
    runs and preempting() turns True; the ranks checkpoint and end well, and so does the task."""
    executor = torchrun(torch_python, env_vars={"RUNYARD_PREEMPT_SIGNAL": "USR1"})
    exp, task_id = start(run.Config(jobtasks.every_rank_waits_for_preemption, str(tmp_path)), executor)
    for rank in (0, 1):
        until(
            lambda r=rank: (tmp_path / f"ready-{r}").exists(), f"rank {rank} to be ready", timeout=TORCH_START
        )

    os.kill(int(task(exp, task_id).job_id), signal.SIGUSR1)

    assert exp.wait(timeout=120) == "SUCCEEDED", task(exp, task_id).reason
    for rank in (0, 1):
        assert len((tmp_path / f"called-{rank}").read_text().splitlines()) == 1  # once
    assert Path(attempt_dir(exp.directory, task_id, 1), "preempting").exists()
    assert "preempted: checkpointed" in exp.get_logs(task_id).stdout


def test_a_launcher_where_torch_is_missing_fails_the_task_saying_so() -> None:
    """The interpreter running runyard here has no torch (it is no dependency of runyard)."""
    assert importlib.util.find_spec("torch") is None, "this test needs a Python without torch"
    exp = run.Experiment("no-torch")
    task_id = exp.add(run.Config(taskdefs.hello), executor=run.LocalExecutor(launcher="torchrun"))

    assert exp.run() == "FAILED"

    view = task(exp, task_id)
    assert "the torchrun launcher needs PyTorch" in view.reason and "cannot import torch" in view.reason
    assert "needs PyTorch" in exp.get_logs(task_id).stderr
