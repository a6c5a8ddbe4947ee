"""Helpers shared by every test folder (tests/ is on sys.path: ``from helpers import until``)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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


class Relay:
    """A relay in front of a service: the network (or the socket) between runyard and it, made
    to fail on cue without touching the service other tests use. TCP on 127.0.0.1:<port> for
    ``target=(host, port)`` (the test sshd); a unix socket at ``path`` for ``target=PATH``
    (the Docker engine's socket).

    ``stop()`` drops every connection and refuses new ones (a host, a daemon that went away;
    a unix socket's file is removed); ``start()`` brings it back. ``blackhole()`` keeps every
    connection open but forwards nothing more either way (a network that swallows packets: no
    reset, no error) until ``release()``; ``mute_replies()`` forwards what runyard sends but
    not what the service answers, so a command runs while its reply is lost; ``stop_on(b"DELETE
    ")`` stops the relay when runyard sends a request that starts so, the request lost."""

    def __init__(self, target: tuple[str, int] | str, path: str | None = None) -> None:
        self.target = target
        self.unix = isinstance(target, str)
        if self.unix:
            assert path is not None, "a unix-socket relay listens at a path"
            self.path = path
        else:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
            probe.close()
        self.stopped = threading.Event()  # set while it is stopped
        self.stops = 0  # how many times it was
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()  # set: bytes go both ways
        self._flowing.set()
        self._replies = threading.Event()  # set: the service's bytes go back to runyard
        self._replies.set()
        self._trap: bytes | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def _socket(self) -> socket.socket:
        return socket.socket(socket.AF_UNIX if self.unix else socket.AF_INET)

    def start(self) -> None:
        server = self._socket()
        if self.unix:
            server.bind(self.path)
        else:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", self.port))
        server.listen(32)
        self._server = server
        self.stopped.clear()
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = self._socket()
            upstream.connect(self.target)
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, reply: bool) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                if reply:
                    self._replies.wait()
                elif self._trap is not None and data.startswith(self._trap):
                    self._trap = None
                    self.stop()
                    return
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def blackhole(self) -> None:
        self._flowing.clear()

    def mute_replies(self) -> None:
        self._replies.clear()

    def stop_on(self, prefix: bytes) -> None:
        self._trap = prefix

    def release(self) -> None:
        self._flowing.set()
        self._replies.set()

    def stop(self) -> None:
        """Drop every connection and refuse new ones (a blackhole ends: the bytes held are lost)."""
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._server.close()
            self._server = None
        if self.unix:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        with self._lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._open = []
        self.stops += 1
        self.stopped.set()
        self.release()


def end_everything(home: str, timeout: float = 30.0) -> list[str]:
    """Cancel what the experiments in ``home`` left live and wait (up to ``timeout`` s each)
    for their drivers to exit; the ids of the experiments, for a fixture to clean up after."""
    import runyard as run
    from runyard.states import FINAL_STATES
    from runyard.store import open_store, pid_alive

    store = open_store(home)
    ids = []
    for record in store.experiments():
        ids.append(record.id)
        if record.launched_at and any(s not in FINAL_STATES for s in store.task_states(record.id)):
            run.Experiment.from_id(record.id, base_dir=home).cancel_all()
        pid = store.experiment(record.id).driver_pid
        deadline = time.monotonic() + timeout
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return ids


def assert_trained(points: list[Any]) -> None:
    """The metrics of ``metrictasks.train(steps=2, lr=0.5)``, from any backend: the ``loss:``
    lines it printed (parsed) and the accuracy it logged with ``runyard.job.log_metrics``."""
    assert [(p.name, p.step, p.value, p.source, p.attempt) for p in points if p.name == "loss"] == [
        ("loss", 1, 0.5, "parsed", 1), ("loss", 2, 0.25, "parsed", 1),
    ]  # fmt: skip
    assert [(p.name, p.step, p.value, p.source) for p in points if p.name == "accuracy"] == [
        ("accuracy", 1, 0.5, "logged"), ("accuracy", 2, 0.75, "logged"),
    ]  # fmt: skip
