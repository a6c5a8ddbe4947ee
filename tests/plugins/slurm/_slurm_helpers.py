"""Helpers of the runyard-slurm tests (tests/plugins/slurm): the test cluster as the tests
use it, and waiting with a deadline. Imported by name, so the module name is unique."""

from __future__ import annotations

import os
import shlex
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helpers
import runyard as run
from runyard.executor import JobRef

TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def until(predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.1) -> Any:
    """``helpers.until`` with this folder's longer default timeout (a container or a job takes time)."""
    return helpers.until(predicate, what, timeout, interval)


def job_refs(exp: run.Experiment, executor: Any) -> list[JobRef]:
    """The jobs of an experiment's tasks (their latest attempts) as a backend is given them."""
    return [
        JobRef(r.experiment_id, r.id, r.attempts, exp.directory, executor, r.job_id or "", r.handle)
        for r in exp.store.tasks(exp.experiment_id)
    ]


@dataclass
class Cluster:
    """The test cluster as the tests use it: its facts, and commands run on it over SSH."""

    facts: Any  # conftest.SlurmCluster
    job_dir: str

    def tunnel(self, **overrides: Any) -> Any:
        f = self.facts
        fields = {
            "host": f.host, "port": f.port, "user": f.user, "identity": f.key,
            "known_hosts": f.known_hosts, "job_dir": self.job_dir, **overrides,
        }  # fmt: skip
        return run.SSHTunnel(**fields)

    def executor(self, **fields: Any) -> Any:
        """A SlurmExecutor on the test cluster (through the defaults) shipping tests/."""
        fields.setdefault("code", TESTS)
        return run.SlurmExecutor(**fields)

    def sh(self, command: str) -> str:
        """Run a command on the cluster over SSH; its stdout (fails the test if it fails)."""
        from runyard_slurm.tunnel import session_for

        done = session_for(self.tunnel()).run(command)
        assert done.exit_code == 0, f"{command!r} exited {done.exit_code}: {done.output}"
        return done.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (Key=Value fields)."""
        out = self.sh(f"scontrol show job {shlex.quote(job_id)} --oneliner")
        fields: dict[str, str] = {}
        for word in out.split():
            key, sep, value = word.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def state(self, job_id: str) -> str:
        """The job's state in squeue (ended jobs included), or "" when Slurm forgot it."""
        return self.sh(f"squeue -h -t all -j {shlex.quote(job_id)} -o %T || true").strip()

    def read(self, path: str) -> bytes:
        from runyard_slurm.tunnel import session_for

        return session_for(self.tunnel()).read(path)


class Relay:
    """A TCP relay on 127.0.0.1:<port> in front of the test sshd: the network between runyard
    and the cluster, made to fail on cue without touching the services other tests use.

    ``stop()`` drops every connection and refuses new ones (a host that went away);
    ``start()`` brings it back. ``blackhole()`` keeps every connection open but forwards
    nothing more either way (a network that swallows packets: no reset, no error) until
    ``release()``; ``mute_replies()`` forwards what runyard sends but not what the server
    answers, so a command runs on the cluster while its reply is lost."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()  # set: bytes go both ways
        self._flowing.set()
        self._replies = threading.Event()  # set: the server's bytes go back to runyard
        self._replies.set()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
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
        with self._lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._open = []
        self.release()


def known_hosts_for(cluster: Cluster, path: Path, port: int) -> str:
    """A known_hosts file with the test sshd's key listed for 127.0.0.1:<port>."""
    line = Path(cluster.facts.known_hosts).read_text().split(maxsplit=1)[1]
    path.write_text(f"[127.0.0.1]:{port} {line}")
    return str(path)
