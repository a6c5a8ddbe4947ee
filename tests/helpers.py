"""Helpers shared by every test folder (tests/ is on sys.path: ``from helpers import until``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from runyard.executor import Backend, JobRef, JobSpec, JobStatus, Launched
from runyard.jobfiles import read_local_result, runner_command, status_of_ended_job
from runyard.states import State

T = TypeVar("T")


def until(predicate: Callable[[], T], what: str = "", timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned); fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def _members(field: int, value: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if fields[0] not in (b"Z", b"X") and int(fields[field]) == value:
            out.append(int(entry))
    return out


def group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid``."""
    return _members(2, pgid)


def session_members(sid: int) -> list[int]:
    """Pids of live (non-zombie) processes in session ``sid``: for a local task, whose job id is
    its runner's pid and whose runner leads a session of its own, every process of the task
    (the runner puts the task in a process group of its own, inside that session)."""
    return _members(3, sid)


class ChildProcessBackend(Backend):
    """The smallest complete backend: start the in-job runner, read the files it writes."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _launch(self, job: JobSpec) -> Launched:
        os.makedirs(job.attempt_dir, exist_ok=True)
        env = {**os.environ, **job.env, "LAUNCHED_BY": type(self).__name__}
        proc = subprocess.Popen(
            runner_command(job, python=sys.executable), env=env, cwd=job.cwd, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.procs[str(proc.pid)] = proc
        return Launched(job_id=str(proc.pid))

    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        out = {}
        for job in jobs:
            proc = self.procs.get(job.job_id)
            if proc is None:
                continue  # not ours to judge: the store keeps its state
            if proc.poll() is None:
                out[job.job_id] = JobStatus(State.RUNNING)
            else:
                out[job.job_id] = status_of_ended_job(read_local_result(job.attempt_dir))
        return out

    def _cancel(self, job: JobRef) -> None:
        self._kill(job.job_id)

    def _kill(self, job_id: str) -> None:
        proc = self.procs.get(job_id)
        if proc is not None and proc.poll() is None:
            for pid in session_members(proc.pid):  # the runner and the task's own group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()

    def poll_interval(self) -> float:
        return 0.05

    def _close(self) -> None:
        for job_id in list(self.procs):
            self._kill(job_id)
