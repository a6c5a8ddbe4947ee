"""``LocalBackend``: tasks as process groups on this machine.

Each attempt is ``runner.py`` (Python tasks, on ``sys.executable``) or ``runner.sh`` (Script
tasks: no Python start) in a new session, so the process group is the task's whole tree:
cancel = SIGTERM (then SIGKILL after ``cancel_grace``) to the group, pause = SIGSTOP,
resume = SIGCONT. The job id is the pid; the handle keeps the process start time so that
a recycled pid is never taken for the task. Status works from any process: the process
table says whether it runs, the runner's ``result.json`` how it ended.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from runyard.errors import BackendError
from runyard.executor import Backend, JobRef, JobSpec, JobStatus, Launched
from runyard.jobfiles import read_local_result, runner_path, status_of_ended_job
from runyard.states import State

from runyard_local.executor import LocalExecutor


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


class LocalBackend(Backend):
    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._pidfds: dict[int, int] = {}
        self._lock = threading.Lock()
        self._runner_py = runner_path("runner.py")
        self._runner_sh = runner_path("runner.sh")
        self._host = socket.gethostname()

    # --- launch ---------------------------------------------------------------------------
    def _launch(self, job: JobSpec) -> Launched:
        executor = job.executor
        assert isinstance(executor, LocalExecutor)
        os.makedirs(job.attempt_dir, exist_ok=True)
        env = dict(os.environ)
        env.update(job.env)
        if job.is_script:
            argv = ["bash", self._runner_sh, job.task_dir, str(job.attempt), *job.argv]
        else:
            argv = [executor.python or sys.executable, self._runner_py, job.task_dir, str(job.attempt)]
        argv = self.command(job, argv)
        cwd = job.cwd if job.cwd and os.path.isdir(job.cwd) else None
        try:
            with open(os.path.join(job.attempt_dir, "runner.log"), "ab") as log:
                proc = subprocess.Popen(
                    argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        except OSError as exc:
            raise BackendError(f"cannot start {argv[0]!r}: {exc}") from None
        stat = _stat(proc.pid)
        with self._lock:
            self._procs[proc.pid] = proc
        return Launched(
            job_id=str(proc.pid),
            handle={"pid": proc.pid, "starttime": stat[1] if stat else None, "host": self._host},
            state=State.RUNNING,
        )

    def command(self, job: JobSpec, argv: list[str]) -> list[str]:
        """The command line that starts one attempt; ``argv`` runs the in-job runner.

        The extension point for backends that run tasks through a wrapper: a subclass
        returns ``["nice", "-n", "10", *argv]``, say. The wrapper must ``exec`` the command
        it is given (``nice``, ``taskset``, ``chrt``, ``env`` do), so that the process
        started stays the runner: its pid is the job id, its process group the task's.
        """
        return argv

    # --- status ---------------------------------------------------------------------------------
    def _alive(self, job: JobRef) -> str | None:
        """The state letter of the job's process if it is still that process, else None."""
        pid = int(job.handle.get("pid") or job.job_id)
        proc = self._procs.get(pid)
        if proc is not None and proc.poll() is not None:
            with self._lock:
                self._procs.pop(pid, None)
            return None
        stat = _stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return None
        if job.handle.get("starttime") is not None and stat[1] != job.handle["starttime"]:
            return None  # the pid was recycled: ours has gone
        return stat[0]

    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        self._reap()
        out = {}
        for job in jobs:
            if job.handle.get("host") not in (None, self._host):
                continue  # launched on another machine: we cannot see it from here
            letter = self._alive(job)
            if letter is None:
                out[job.job_id] = status_of_ended_job(read_local_result(job.attempt_dir))
            else:
                out[job.job_id] = JobStatus(State.PAUSED if letter == "T" else State.RUNNING)
        return out

    def _reap(self) -> None:
        """Collect children that ended while nobody polled them (cancelled elsewhere)."""
        with self._lock:
            for pid, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    del self._procs[pid]

    # --- control --------------------------------------------------------------------------------
    def _signal(self, job: JobRef, sig: int) -> bool:
        if self._alive(job) is None:
            pgid_alive = self._group_alive(job)
            if not pgid_alive:
                return False
        try:
            os.killpg(int(job.handle.get("pid") or job.job_id), sig)
        except ProcessLookupError:
            return False
        except PermissionError as exc:
            raise BackendError(f"cannot signal task process {job.job_id}: {exc}") from None
        return True

    def _group_alive(self, job: JobRef) -> bool:
        pid = int(job.handle.get("pid") or job.job_id)
        if job.handle.get("starttime") is not None:
            stat = _stat(pid)
            if stat is not None and stat[1] != job.handle["starttime"] and stat[0] not in ("Z", "X"):
                return False  # pid recycled by another process: not our group
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _cancel(self, job: JobRef) -> None:
        if not self._signal(job, signal.SIGCONT):  # a stopped group must run to see SIGTERM
            return
        self._signal(job, signal.SIGTERM)
        executor = job.executor
        grace = executor.cancel_grace if isinstance(executor, LocalExecutor) else 5.0
        deadline = time.monotonic() + min(grace, 0.2)
        while time.monotonic() < deadline:
            self._reap()
            if not self._group_alive(job):
                return
            time.sleep(0.01)
        # still there: SIGKILL the group after the grace period, from a thread that keeps
        # this process alive until it is done (so even Ctrl+C leaves no task behind)
        threading.Thread(target=self._kill_later, args=(job, grace), daemon=False).start()

    def _kill_later(self, job: JobRef, grace: float) -> None:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self._reap()
            if not self._group_alive(job):
                return
            time.sleep(0.05)
        self._signal(job, signal.SIGKILL)
        self._reap()

    def _pause(self, job: JobRef) -> None:
        if not self._signal(job, signal.SIGSTOP):
            raise BackendError(f"task process {job.job_id} has ended: nothing to pause")

    def _resume(self, job: JobRef) -> None:
        if not self._signal(job, signal.SIGCONT):
            raise BackendError(f"task process {job.job_id} has ended: nothing to resume")

    # --- waiting --------------------------------------------------------------------------------
    def wakeup_fds(self, jobs: Sequence[JobRef]) -> list[int]:
        if not hasattr(os, "pidfd_open"):
            return []
        wanted = set()
        fds = []
        for job in jobs:
            pid = int(job.handle.get("pid") or job.job_id)
            wanted.add(pid)
            fd = self._pidfds.get(pid)
            if fd is None:
                try:
                    fd = self._pidfds[pid] = os.pidfd_open(pid)
                except OSError:
                    continue
            fds.append(fd)
        for pid in list(self._pidfds):
            if pid not in wanted:
                os.close(self._pidfds.pop(pid))
        return fds

    def poll_interval(self) -> float:
        return 1.0 if hasattr(os, "pidfd_open") else 0.05

    def dry_run(self, job: JobSpec) -> str:
        what = " ".join(job.argv) if job.is_script else "the Python runner"
        return f"local: would run {what} for task {job.task_id} in a new process group"

    def _close(self) -> None:
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds = {}
