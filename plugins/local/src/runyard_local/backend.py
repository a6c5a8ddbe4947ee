"""``LocalBackend``: tasks as sessions of processes on this machine.

Each attempt is ``runner.py`` (Python tasks, on ``sys.executable``) or ``runner.sh`` (Script
tasks: no Python start) started as the leader of a new session. The runner's pid is the job
id and the session id of every process of the attempt: the runner runs the task in a process
group of its own inside that session, forwards TERM to it, SIGKILLs it after
``RUNYARD_CANCEL_GRACE`` seconds by itself, and kills whatever the task left in its group
when it ends (the runner protocol, in the docstring of core's ``runner.py``). Hence:

- cancel: SIGTERM to the runner, and return at once: the runner escalates, so the task ends
  even when the process that asked dies right after (``timeout 2 runyard cancel``). A paused
  session gets SIGCONT first, in every process group, so that the task sees the TERM;
- pause / resume: SIGSTOP / SIGCONT to every process group of the session; a stopped runner
  is reported PAUSED;
- poll: the runner alive (same pid and start time: a recycled pid is never taken for it) →
  RUNNING or PAUSED. The runner gone → every process still in its session is SIGKILLed first
  (a task's whole tree ends with its attempt, even when its runner was killed), then its
  ``result.json`` says how the task ended; with none, a claim by another launch means that
  launch runs the attempt (``JobStatus.claim``), else the task was lost.

Status works from any process: the process table says whether the runner runs, its files
how the task ended. A read error other than "no such process or file" (too many open files,
permissions) is no answer, never "the process is gone": that job is left out of the poll
(BackendError when no job could be read). At most a quarter of the open-file limit goes to
pidfds; jobs beyond that are polled at a short interval.
"""

from __future__ import annotations

import errno
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from runyard.errors import BackendError
from runyard.executor import Backend, Executor, JobRef, JobSpec, JobStatus, Launched
from runyard.jobfiles import (
    CLAIMED_EXIT,
    claimed_by_other,
    read_local_claim,
    read_local_result,
    runner_command,
    status_of_ended_job,
    superseded_status,
)
from runyard.redact import masked
from runyard.states import State

from runyard_local import cgroups
from runyard_local.executor import LocalExecutor
from runyard_local.gpus import machine_gpus

ENDED = "ended"  # the runner has exited (gone or a zombie): its session may hold leftovers
RECYCLED = "recycled"  # the runner's pid belongs to another process now: nothing of it is left
CUDA_DEVICES = "CUDA_VISIBLE_DEVICES"
KILL_ROUNDS = 100  # at most this many scans (10 ms apart) until a session's leftovers are gone


@attrs.frozen
class Command:
    """What ``LocalBackend.launch`` starts: ``argv`` (the runner's, through ``command``),
    ``env`` (added to this process's environment) and ``cwd`` (None: this process's)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    cgroup: str | None = None  # the memory cgroup it starts in (LocalExecutor.mem)


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state letter, process group, session, start time in clock ticks) of a process, or
    None if there is no such process. Any other error is raised as BackendError."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        raise BackendError(f"cannot read the process table (/proc/{pid}/stat): {exc}") from None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19])


def _members(sessions: dict[int, int | None]) -> dict[int, list[tuple[int, int, str]]]:
    """Live (not zombie) processes of each session, as (pid, process group, state letter).

    ``sessions`` maps a session id to the start time of its leader: a process that started
    before the leader cannot belong to that session (its id was taken over by another one).
    """
    out: dict[int, list[tuple[int, int, str]]] = {sid: [] for sid in sessions}
    try:
        entries = os.listdir("/proc")
    except OSError as exc:
        raise BackendError(f"cannot read the process table (/proc): {exc}") from None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) not in out:
                continue  # (one system call tells, where reading its /proc file takes three)
        except ProcessLookupError:
            continue
        except OSError:
            pass  # (not told: its /proc file says)
        stat = _stat(int(entry))
        if stat is None or stat[2] not in out or stat[0] in ("Z", "X"):
            continue
        started = sessions[stat[2]]
        if started is None or stat[3] >= started:
            out[stat[2]].append((int(entry), stat[1], stat[0]))
    return out


def _signal_groups(groups: Iterable[int], sig: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise BackendError(f"cannot signal process group {pgid}: {exc}") from None


def _job_env(job: JobSpec) -> dict[str, str]:
    """The variables added to the runner's environment: the job's, and the GPUs it holds."""
    env = dict(job.env)
    gpus = job.resources.get("gpu")
    if gpus:
        env[CUDA_DEVICES] = ",".join(gpus)
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA counts them as the machine lists them
    return env


def _describe_exit(code: int) -> str:
    """The runner's own exit status, as the reason of a task that was lost with it."""
    if code < 0:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return f"lost: the runner was killed by signal {-code}{name} before the task ended"
    if code == CLAIMED_EXIT:
        return "lost: the runner found the attempt claimed by another runner and ran nothing"
    return f"lost: the runner exited with code {code} without writing a result"


class LocalBackend(Backend):
    def __init__(self) -> None:
        self._procs: dict[int, tuple[subprocess.Popen[bytes], int | None]] = {}  # pid -> child, starttime
        self._exits: dict[int, tuple[int | None, int]] = {}  # reaped children: pid -> starttime, code
        self._pidfds: dict[int, int] = {}
        self._unwatched = True  # some live job has no pidfd: poll often
        self._lock = threading.Lock()
        self._host = socket.gethostname()

    # --- launch ---------------------------------------------------------------------------
    def prepare(self, job: JobSpec) -> Command:
        """The runner's command line, the variables added to this process's environment, and
        the working directory (None: this process's, when ``job.cwd`` is not a folder here)."""
        executor = job.executor
        assert isinstance(executor, LocalExecutor)
        argv = self.command(job, runner_command(job, python=executor.python or sys.executable))
        cgroup = None
        if executor.mem is not None:  # the runner starts inside a memory cgroup of its own
            cgroup = cgroups.path_for(job.env.get("RUNYARD_LAUNCH_ID") or f"{os.getpid():x}{job.attempt:x}")
            argv = cgroups.join_command(cgroup, argv)
        cwd = job.cwd if job.cwd and os.path.isdir(job.cwd) else None
        return Command(argv, _job_env(job), cwd, cgroup)

    def _launch(self, job: JobSpec) -> Launched:
        command = self.prepare(job)
        os.makedirs(job.attempt_dir, exist_ok=True)
        if command.cgroup is not None:
            assert isinstance(job.executor, LocalExecutor) and job.executor.mem is not None
            cgroups.create(command.cgroup, cgroups.parse_size(job.executor.mem))
        try:
            with open(os.path.join(job.attempt_dir, "runner.log"), "ab") as log:
                proc = subprocess.Popen(
                    command.argv, cwd=command.cwd, env={**os.environ, **command.env},
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        except OSError as exc:
            raise BackendError(f"cannot start {command.argv[0]!r}: {exc}") from None
        try:
            stat = _stat(proc.pid)
        except BackendError:
            stat = None  # out of descriptors this instant: the pid alone still finds it
        starttime = stat[3] if stat else None
        with self._lock:
            self._procs[proc.pid] = (proc, starttime)
            self._unwatched = True
        handle = {"pid": proc.pid, "starttime": starttime, "host": self._host,
                  "launch": job.env.get("RUNYARD_LAUNCH_ID")}  # fmt: skip
        if command.cgroup is not None:
            handle["cgroup"] = command.cgroup
        return Launched(job_id=str(proc.pid), handle=handle, state=State.RUNNING)

    def command(self, job: JobSpec, argv: list[str]) -> list[str]:
        """The command line that starts one attempt; ``argv`` runs the in-job runner.

        The extension point for backends that run tasks through a wrapper: a subclass
        returns ``["nice", "-n", "10", *argv]``, say. The wrapper must ``exec`` the command
        it is given (``nice``, ``taskset``, ``chrt``, ``env`` do), so that the process
        started stays the runner: its pid is the job id, its session the task's.
        """
        return argv

    def adopt(self, job: JobSpec) -> Launched | None:
        """The runner that claimed this attempt on this machine (its ``claim.json``), if any."""
        claim = read_local_claim(job.attempt_dir)
        if not claim or claim.get("host") != self._host:
            return None
        pid = claim.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            return None
        starttime = claim.get("starttime")
        handle = {"pid": pid, "starttime": starttime if isinstance(starttime, int) else None,
                  "host": self._host, "launch": claim.get("launch")}  # fmt: skip
        return Launched(job_id=str(pid), handle=handle, state=State.RUNNING)

    # --- status ---------------------------------------------------------------------------------
    @staticmethod
    def _pid(job: JobRef) -> int:
        return int(job.handle.get("pid") or job.job_id)

    def _runner_state(self, job: JobRef) -> str:
        """The runner's state letter while it runs; ENDED once it has exited; RECYCLED when
        its pid belongs to another process now."""
        pid = self._pid(job)
        starttime = job.handle.get("starttime")
        child = self._procs.get(pid)
        if child is not None and child[0].poll() is not None:
            self._reap()
        if pid in self._exits and self._exits[pid][0] == starttime:
            stat = _stat(pid)
            recycled = stat is not None and starttime is not None and stat[3] != starttime
            return RECYCLED if recycled else ENDED
        stat = _stat(pid)
        if stat is None:
            return ENDED
        if starttime is not None and stat[3] != starttime:
            return RECYCLED
        return ENDED if stat[0] in ("Z", "X") else stat[0]

    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        self._reap()
        out: dict[str, JobStatus] = {}
        errors: list[BackendError] = []
        ended: list[tuple[JobRef, str]] = []
        for job in jobs:
            if job.handle.get("host") not in (None, self._host):
                continue  # launched on another machine: we cannot see it from here
            try:
                state = self._runner_state(job)
            except BackendError as exc:
                errors.append(exc)  # no answer: the store keeps the job's state
                continue
            if state in (ENDED, RECYCLED):
                ended.append((job, state))
            else:
                out[job.job_id] = JobStatus(State.PAUSED if state == "T" else State.RUNNING)
        try:
            self._end_sessions([job for job, state in ended if state == ENDED])
        except BackendError as exc:
            errors.append(exc)  # leftovers could not be looked for: report none of them yet
            ended = []
        for job, _ in ended:
            try:
                out[job.job_id] = self._ended(job)
            except BackendError as exc:
                errors.append(exc)
        if errors and not out:
            raise errors[0]
        return out

    def _ended(self, job: JobRef) -> JobStatus:
        """The status of a job whose runner has exited."""
        result = read_local_result(job.attempt_dir)
        cgroup = job.handle.get("cgroup")
        if isinstance(cgroup, str) and cgroup:
            status = self._memory_outcome(job, cgroup, result)
            if status is not None:
                return status
        if result is not None:
            return status_of_ended_job(result)
        claim = read_local_claim(job.attempt_dir)
        if claim and claimed_by_other(claim, job.handle.get("launch")):
            return superseded_status(claim)  # another launch runs the attempt: core adopts it
        known = self._exits.get(self._pid(job))  # we started the runner: we know how it ended
        ours = known is not None and known[0] == job.handle.get("starttime")
        return status_of_ended_job(None, _describe_exit(known[1]) if known and ours else None)

    def _memory_outcome(self, job: JobRef, cgroup: str, result: dict[str, Any] | None) -> JobStatus | None:
        """The status of an attempt that ran in a memory cgroup, when the kernel killed it for
        memory (the cgroup counted an OOM kill); the cgroup, empty now, is removed, the verdict
        kept in the attempt folder (``oom-killed``) for whoever asks next."""
        verdict = os.path.join(job.attempt_dir, "oom-killed")
        if os.path.isdir(cgroup):
            killed = cgroups.oom_kills(cgroup)
            if killed:
                with open(verdict, "w") as f:
                    f.write(f"{killed}\n")
            cgroups.remove(cgroup)
        if not os.path.exists(verdict):
            return None
        status = status_of_ended_job(result)
        status.failure = "oom"
        limit = getattr(job.executor, "mem", None)
        status.reason = (
            f"out of memory: killed by the kernel at its memory limit (LocalExecutor.mem={limit!r})"
        )
        return status

    def _reap(self) -> None:
        """Collect children that ended (also those nobody polled: cancelled elsewhere)."""
        with self._lock:
            for pid, (proc, starttime) in list(self._procs.items()):
                code = proc.poll()
                if code is not None:
                    del self._procs[pid]
                    self._exits[pid] = (starttime, code)

    def _end_sessions(self, jobs: Sequence[JobRef]) -> None:
        """SIGKILL every process left in the sessions of these jobs, whose runners have exited,
        and wait (briefly) until they are gone: a retry never runs beside them."""
        sessions = {self._pid(job): job.handle.get("starttime") for job in jobs}
        for _ in range(KILL_ROUNDS):
            if not sessions:
                return
            members = _members(sessions)
            sessions = {sid: sessions[sid] for sid, procs in members.items() if procs}
            for sid in sessions:
                _signal_groups({pgid for _, pgid, _ in members[sid]}, signal.SIGKILL)
            if sessions:
                time.sleep(0.01)

    # --- control --------------------------------------------------------------------------------
    def _signal_session(self, job: JobRef, sig: int) -> bool:
        """Send ``sig`` to every process group of the job's session, the runner's last; False
        when the runner is not running."""
        state = self._runner_state(job)
        if state in (ENDED, RECYCLED):
            return False
        pid = self._pid(job)
        done: set[int] = set()
        for _ in range(3):  # again for groups made meanwhile
            groups = {pgid for _, pgid, _ in _members({pid: job.handle.get("starttime")})[pid]} - done
            if not groups:
                break
            _signal_groups(sorted(groups - {pid}), sig)
            done |= groups
        _signal_groups([pid], sig)
        return True

    def _cancel(self, job: JobRef) -> None:
        state = self._runner_state(job)
        if state == RECYCLED:
            return
        if state == ENDED:
            self._end_sessions([job])
            return
        if state == "T":  # paused: every group must run to see the TERM (a stopped group of a
            self._signal_session(job, signal.SIGCONT)  # running runner gets its SIGKILL later)
        try:
            os.kill(self._pid(job), signal.SIGTERM)  # the runner forwards it, and escalates
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise BackendError(f"cannot signal task process {job.job_id}: {exc}") from None

    def _pause(self, job: JobRef) -> None:
        if not self._signal_session(job, signal.SIGSTOP):
            raise BackendError(f"task process {job.job_id} has ended: nothing to pause")

    def _resume(self, job: JobRef) -> None:
        if not self._signal_session(job, signal.SIGCONT):
            raise BackendError(f"task process {job.job_id} has ended: nothing to resume")

    # --- waiting --------------------------------------------------------------------------------
    def wakeup_fds(self, jobs: Sequence[JobRef]) -> list[int]:
        """A pidfd per job, up to a quarter of the open-file limit; the rest are polled."""
        if not hasattr(os, "pidfd_open"):
            return []
        budget = max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4)
        wanted = {self._pid(job) for job in jobs if job.handle.get("host") in (None, self._host)}
        for pid in list(self._pidfds):
            if pid not in wanted:
                os.close(self._pidfds.pop(pid))
        unwatched = False
        for pid in wanted - set(self._pidfds):
            if len(self._pidfds) >= budget:
                unwatched = True
                break
            try:
                self._pidfds[pid] = os.pidfd_open(pid)
            except OSError as exc:
                unwatched = True  # ended meanwhile, or out of descriptors: poll it
                if exc.errno != errno.ESRCH:
                    break
        self._unwatched = unwatched
        return list(self._pidfds.values())

    def poll_interval(self) -> float:
        if not hasattr(os, "pidfd_open"):
            return 0.05
        return 0.1 if self._unwatched else 1.0

    def resource_pool(self, executor: Executor) -> dict[str, list[str]]:
        """This machine's GPUs (``runyard_local.gpus``), for ``LocalExecutor(gpus=N)``."""
        gpus = machine_gpus()
        return {"gpu": gpus} if gpus else {}

    def dry_run(self, job: JobSpec) -> str:
        command = self.prepare(job)
        gpus = getattr(job.executor, "gpus", 0)
        if gpus and "gpu" not in job.resources:  # (leased at launch: which ones is not known yet)
            command.env[CUDA_DEVICES] = f"<{gpus} GPUs of this machine, the free ones at launch>"
        lines = [f"local: would start this command for task {job.task_id}, in a new session", ""]
        lines.append(f"command: {shlex.join(command.argv)}")
        lines.append("cwd: " + (command.cwd or "(the driver's)"))
        lines.append("env (added to the driver's):")
        env = masked(command.env)
        lines += [f"  {name}={shlex.quote(env[name])}" for name in sorted(env)]
        return "\n".join(lines)

    def _close(self) -> None:
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds = {}
