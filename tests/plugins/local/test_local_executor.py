"""LocalExecutor and its backend, with real processes: sessions, process groups, signals, the
environment and interpreter of tasks, and status read from the process table and the
runner's files by any process."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import runyard as run
import taskdefs
from _local_helpers import Start, alive, ref, session, stat, task
from helpers import until
from runyard.executor import JobRef
from runyard_local.backend import LocalBackend


def _background_child_script(pidfile: Path) -> run.Script:
    """A task that starts a background grandchild and one in a process group of its own
    (``set -m``), records their pids, and waits for them."""
    return run.Script(
        inline=f"sleep 60 & echo $! > {shlex.quote(str(pidfile))}.same; set -m; sleep 60 &"
        f" echo $! > {shlex.quote(str(pidfile))}; wait"
    )


def _children(pidfile: Path) -> list[int]:
    return [int(pidfile.read_text()), int(Path(f"{pidfile}.same").read_text())]


# ------------------------------------------------------------------------------ sessions
def test_each_task_runner_leads_its_own_process_group_and_session(start: Start) -> None:
    exp, task_id = start(run.Config(taskdefs.sleep_then_print, 30))
    pid = int(task(exp, task_id).job_id)
    st = stat(pid)
    assert st is not None
    _, pgid, sid, _ = st
    assert pgid == pid and sid == pid
    assert sid != os.getsid(0)


def test_cancel_ends_every_process_of_the_task_including_background_children(
    start: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    exp, task_id = start(_background_child_script(pidfile), ready=pidfile)
    sid = int(task(exp, task_id).job_id)
    same_group = int(Path(f"{pidfile}.same").read_text())
    assert same_group in session(sid)

    exp.cancel(task_id)

    until(lambda: not alive(same_group), "the task's background child to end", timeout=15)
    assert task(exp, task_id).status == "CANCELLED"


def test_pause_stops_every_process_of_the_task_in_every_process_group(start: Start, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    exp, task_id = start(_background_child_script(pidfile), ready=pidfile)
    sid = int(task(exp, task_id).job_id)
    children = _children(pidfile)
    assert len({session(sid)[pid][0] for pid in children}) == 2  # two process groups

    exp.pause(task_id)

    until(lambda: {s for _, s in session(sid).values()} == {"T"}, "every process to be stopped (state T)")
    assert set(children) <= set(session(sid))
    assert task(exp, task_id).status == "PAUSED"


def test_resume_continues_every_process_of_the_task_in_every_process_group(
    start: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    exp, task_id = start(_background_child_script(pidfile), ready=pidfile)
    sid = int(task(exp, task_id).job_id)
    exp.pause(task_id)
    until(lambda: {s for _, s in session(sid).values()} == {"T"}, "every process to be stopped")

    exp.resume(task_id)

    until(lambda: "T" not in {s for _, s in session(sid).values()}, "every process to continue")
    assert set(_children(pidfile)) <= set(session(sid))
    assert task(exp, task_id).status == "RUNNING"


def test_cancelling_a_paused_task_ends_every_process_of_it(start: Start, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    exp, task_id = start(
        run.Script(inline=f"sleep 60 & echo $! > {shlex.quote(str(pidfile))}; wait"), ready=pidfile
    )
    sid = int(task(exp, task_id).job_id)
    exp.pause(task_id)
    until(lambda: {s for _, s in session(sid).values()} == {"T"}, "every process to be stopped")

    exp.cancel(task_id)

    until(lambda: not session(sid), "every process of the paused task to end", timeout=15)
    assert task(exp, task_id).status == "CANCELLED"


# ------------------------------------------------------------------------------ what a task sees
def test_env_vars_reach_the_task() -> None:
    exp = run.Experiment("env")
    executor = run.LocalExecutor(env_vars={"RUNYARD_TEST_GREETING": "hello there"})
    task_id = exp.add(run.Config(taskdefs.print_env, "RUNYARD_TEST_GREETING"), executor=executor)
    assert exp.run() == "SUCCEEDED"
    assert exp.get_logs(task_id).stdout == "RUNYARD_TEST_GREETING=hello there\n"


def test_python_tasks_run_on_the_interpreter_running_runyard() -> None:
    exp = run.Experiment("interpreter")
    task_id = exp.add(run.Config(taskdefs.print_executable))
    assert exp.run() == "SUCCEEDED"
    assert exp.get_logs(task_id).stdout.strip() == sys.executable


# ------------------------------------------------------------------------------ status
def test_task_killed_from_outside_ends_failed_as_lost(start: Start) -> None:
    exp, task_id = start(run.Config(taskdefs.sleep_then_print, 30))
    os.kill(int(task(exp, task_id).job_id), signal.SIGKILL)

    assert exp.wait(timeout=60) == "FAILED"
    view = task(exp, task_id)
    assert view.status == "FAILED"
    assert "lost" in view.reason and "killed" in view.reason


def test_status_of_a_task_launched_by_another_process_is_read_from_this_one(
    start: Start, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    waits = run.Script(inline=f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done")
    exp, task_id = start(waits)  # launched by the supervisor
    job = ref(exp, task_id)
    backend = LocalBackend()  # has launched nothing itself
    assert backend.poll([job])[job.job_id].state == "RUNNING"

    gate.touch()
    until(lambda: not alive(int(job.job_id)), "the task process to end")
    status = backend.poll([job])[job.job_id]
    assert status.state == "SUCCEEDED" and status.exit_code == 0


def test_a_recycled_pid_is_not_taken_for_the_task(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        st = stat(stranger.pid)
        assert st is not None
        host = socket.gethostname()

        def job(starttime: int) -> JobRef:
            handle = {"pid": stranger.pid, "starttime": starttime, "host": host}
            return JobRef(
                experiment_id="exp", task_id="task", attempt=1, experiment_dir=str(tmp_path),
                executor=run.LocalExecutor(), job_id=str(stranger.pid), handle=handle,
            )  # fmt: skip

        backend = LocalBackend()
        assert backend.poll([job(st[3])])[str(stranger.pid)].state == "RUNNING"  # same process

        recycled = job(st[3] - 1)  # same pid, started at another time: another process
        status = backend.poll([recycled])[str(stranger.pid)]
        assert status.state == "FAILED" and "lost" in status.reason
        backend.cancel(recycled)
        time.sleep(0.2)
        assert alive(stranger.pid)  # the stranger was not signalled
    finally:
        stranger.kill()
        stranger.wait()
