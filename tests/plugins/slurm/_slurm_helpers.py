"""Helpers of the runyard-slurm tests (tests/plugins/slurm): the test cluster as the tests
use it, and waiting with a deadline. Imported by name, so the module name is unique."""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helpers
import runyard as run
from helpers import Relay as Relay  # the network between runyard and the cluster
from runyard.errors import UnreachableError
from runyard.executor import JobRef

TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def until(predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.1) -> Any:
    """``helpers.until`` with this folder's longer default timeout (a container or a job takes time)."""
    return helpers.until(predicate, what, timeout, interval)


def answer(session: Any, command: str) -> str | None:
    """``command``'s output through ``session``; None while the cluster cannot be reached
    (for ``until``: the session to reconnect)."""
    try:
        return str(session.run(command).stdout)
    except UnreachableError:
        return None


def returns_within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``'s result, or the exception it raised; fails the test if it is still running
    after ``seconds`` (a loose guard against a hang, not a time measurement)."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(call())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, f"still running after {seconds}s: it hangs"
    return out[0]


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


def known_hosts_for(cluster: Cluster, path: Path, port: int) -> str:
    """A known_hosts file with the test sshd's key listed for 127.0.0.1:<port>."""
    line = Path(cluster.facts.known_hosts).read_text().split(maxsplit=1)[1]
    path.write_text(f"[127.0.0.1]:{port} {line}")
    return str(path)


def a_dropped_link_fails_nothing(
    cluster: Any, tunnel: Any, link: Relay, title: str, error: type[Exception]
) -> None:
    """A 3 s task on ``tunnel``; ``link`` (the network on its way to the cluster) goes away while
    it runs: each poll raises ``error`` ("cannot reach") and changes nothing; once the link is back
    the task succeeds with its output."""
    import pytest
    import taskdefs
    from runyard.plugins import plugin_manager

    exp = run.Experiment(title)
    exp.add(
        run.Config(taskdefs.sleep_then_print, 3, "survived"),
        executor=cluster.executor(tunnel=tunnel),
        name="t",
    )
    exp.run(detach=True)  # all on Slurm: no supervisor; reading .tasks polls from here
    backend = plugin_manager().backend("slurm")
    refs = job_refs(exp, exp.tasks[0].executor)

    link.stop()
    time.sleep(backend.poll_interval())
    with pytest.raises(error, match="cannot reach"):  # what the driver gets while it is away
        backend.poll(refs)
    for _ in range(2):  # each look polls, fails to reach the cluster, and changes nothing
        time.sleep(backend.poll_interval())
        assert exp.tasks[0].status in ("SUBMITTED", "RUNNING")
    link.start()

    until(lambda: exp.tasks[0].status.is_final, "the task to end")
    assert exp.tasks[0].status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == "survived\n"
