"""LocalExecutor and its backend, with real processes: process groups, signals, the
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from helpers import until as _until
from runyard.executor import JobRef
from runyard_local.backend import LocalBackend

Start = Callable[..., tuple[run.Experiment, str]]


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state letter, process group, session, start time) of a process, None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # nothing may reap orphans here


def _group(pgid: int) -> dict[int, str]:
    """Live processes of a process group: pid -> state letter."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                out[int(entry)] = stat[0]
    return out


def _task(exp: run.Experiment, task_id: str) -> Any:
    return next(t for t in exp.tasks if t.id == task_id)


@pytest.fixture
def start() -> Iterator[Start]:
    """Start one task, detached; returns (experiment, task id) once it runs. Cleans up after."""
    started: list[run.Experiment] = []

    def _start(task: Any, executor: run.LocalExecutor | None = None, ready: Path | None = None) -> Any:
        exp = run.Experiment("local")
        started.append(exp)
        task_id = exp.add(task, executor=executor, name="task")
        exp.run(detach=True)
        _until(lambda: _task(exp, task_id).status == "RUNNING", "the task to run")
        if ready is not None:
            _until(lambda: ready.exists() and ready.read_text().strip(), f"{ready.name} to be written")
        return exp, task_id

    yield _start
    for exp in started:
        exp.cancel_all()
        _until(lambda exp=exp: exp.store.experiment(exp.id).driver_pid is None, "the supervisor to end")


def _background_child_script(pidfile: Path) -> run.Script:
    """A task that starts a background grandchild, records its pid, and waits for it."""
    return run.Script(inline=f"sleep 60 & echo $! > {shlex.quote(str(pidfile))}; wait")


# ------------------------------------------------------------------------------ process groups
def test_each_task_leads_its_own_process_group_and_session(start: Start) -> None:
    exp, task_id = start(run.Config(taskdefs.sleep_then_print, 30))
    pid = int(_task(exp, task_id).job_id)
    stat = _stat(pid)
    assert stat is not None
    _, pgid, sid, _ = stat
    assert pgid == pid and sid == pid
    assert sid != os.getsid(0)


def test_cancel_ends_every_process_of_the_task_including_background_children(
    start: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    exp, task_id = start(_background_child_script(pidfile), ready=pidfile)
    pgid = int(_task(exp, task_id).job_id)
    grandchild = int(pidfile.read_text())
    assert grandchild in _group(pgid)

    exp.cancel(task_id)

    _until(lambda: not _group(pgid), "every process of the task's group to end", timeout=15)
    assert not _alive(grandchild)
    assert _task(exp, task_id).status == "CANCELLED"


def test_pause_stops_every_process_of_the_task(start: Start, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    exp, task_id = start(_background_child_script(pidfile), ready=pidfile)
    pgid = int(_task(exp, task_id).job_id)

    exp.pause(task_id)

    _until(lambda: set(_group(pgid).values()) == {"T"}, "every process to be stopped (state T)")
    assert int(pidfile.read_text()) in _group(pgid)
    assert _task(exp, task_id).status == "PAUSED"


def test_resume_continues_every_process_of_the_task(start: Start, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    exp, task_id = start(_background_child_script(pidfile), ready=pidfile)
    pgid = int(_task(exp, task_id).job_id)
    exp.pause(task_id)
    _until(lambda: set(_group(pgid).values()) == {"T"}, "every process to be stopped")

    exp.resume(task_id)

    _until(lambda: "T" not in _group(pgid).values(), "every process to continue")
    assert len(_group(pgid)) > 1
    assert _task(exp, task_id).status == "RUNNING"


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
    os.kill(int(_task(exp, task_id).job_id), signal.SIGKILL)

    assert exp.wait(timeout=60) == "FAILED"
    task = _task(exp, task_id)
    assert task.status == "FAILED"
    assert "lost" in task.reason and "killed" in task.reason


def _ref(exp: run.Experiment, task_id: str) -> JobRef:
    record = exp.store.task(exp.id, task_id)
    assert record is not None and record.job_id is not None
    return JobRef(record.job_id, record.handle, _task(exp, task_id).local_directory, record.attempts,
                  run.LocalExecutor())  # fmt: skip


def test_status_of_a_task_launched_by_another_process_is_read_from_this_one(start: Start) -> None:
    exp, task_id = start(run.Config(taskdefs.sleep_then_print, 0.5))  # launched by the supervisor
    ref = _ref(exp, task_id)
    backend = LocalBackend()  # has launched nothing itself
    assert backend.poll([ref])[ref.job_id].state == "RUNNING"

    _until(lambda: not _alive(int(ref.job_id)), "the task process to end")
    status = backend.poll([ref])[ref.job_id]
    assert status.state == "SUCCEEDED" and status.exit_code == 0


def test_a_recycled_pid_is_not_taken_for_the_task(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        stat = _stat(stranger.pid)
        assert stat is not None
        host = socket.gethostname()

        def ref(starttime: int) -> JobRef:
            handle = {"pid": stranger.pid, "starttime": starttime, "host": host}
            return JobRef(str(stranger.pid), handle, str(tmp_path), 1, run.LocalExecutor())

        backend = LocalBackend()
        assert backend.poll([ref(stat[3])])[str(stranger.pid)].state == "RUNNING"  # same process

        recycled = ref(stat[3] - 1)  # same pid, started at another time: another process
        status = backend.poll([recycled])[str(stranger.pid)]
        assert status.state == "FAILED" and "lost" in status.reason
        backend.cancel(recycled)
        time.sleep(0.2)
        assert _alive(stranger.pid)  # the stranger was not signalled
    finally:
        stranger.kill()
        stranger.wait()
