"""Ctrl+C on an attached run: cancels its tasks (default), or hands them to a supervisor
(RUNYARD_ON_INTERRUPT=detach)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import runyard as run
from helpers import session_members as _session_members
from helpers import until as _until

SCRIPT = """\
import runyard as run
import taskdefs

exp = run.Experiment("interrupted")
exp.add([run.Config(taskdefs.sleep_then_print, {seconds}, "slept") for _ in range(2)], name="sleeper")
print(exp.experiment_id, flush=True)
exp.run()
"""


def _interrupt(
    tmp_path: Path, seconds: float, **env: str
) -> tuple[subprocess.CompletedProcess[str], Any, list[str]]:
    """Start an attached run in a child, SIGINT it once its tasks run; returns (result, exp, job ids)."""
    script = tmp_path / "attached.py"
    script.write_text(SCRIPT.format(seconds=seconds))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path, env={**os.environ, "RUNYARD_PLAIN": "1", **env},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        exp = run.Experiment.from_id(proc.stdout.readline().strip())
        _until(lambda: all(t.status == "RUNNING" for t in exp.tasks), "both tasks to run")
        jobs = [t.job_id for t in exp.tasks]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), exp, jobs


def test_ctrl_c_cancels_the_tasks_and_exits(tmp_path: Path) -> None:
    result, exp, _ = _interrupt(tmp_path, seconds=30)
    assert result.returncode != 0
    assert f"interrupted: cancelled the tasks of {exp.id}" in result.stdout
    for task in exp.tasks:
        assert task.status == "CANCELLED"
        assert "interrupted" in task.reason


def test_ctrl_c_leaves_no_task_process_behind(tmp_path: Path) -> None:
    _, exp, jobs = _interrupt(tmp_path, seconds=30)
    for job in jobs:  # each task is a process group led by its runner
        _until(lambda job=job: not _session_members(int(job)), f"the processes of task {job} to end", 15)
    assert exp.status() == "FAILED"  # every task was cancelled


def test_ctrl_c_with_on_interrupt_detach_hands_the_tasks_to_a_supervisor(tmp_path: Path) -> None:
    result, exp, jobs = _interrupt(tmp_path, seconds=3, RUNYARD_ON_INTERRUPT="detach")
    assert "detached: a supervisor" in result.stdout, result.stdout + result.stderr
    record = exp.store.experiment(exp.id)
    assert exp.status().is_final or (record.driver_kind == "supervisor" and exp.driver_alive())

    assert exp.wait(timeout=60) == "SUCCEEDED"
    for task, job in zip(exp.tasks, jobs, strict=True):
        assert task.attempts == 1 and task.job_id == job  # the same processes, not relaunched
        assert task.exit_code == 0
    _until(lambda: exp.store.experiment(exp.id).driver_pid is None, "the supervisor to let go")
