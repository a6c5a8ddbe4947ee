"""A cluster that cannot be reached, against the real sshd behind the test relay: the first
operation that finds it unreachable gives up after ``retry_for`` (or a read's shorter
patience) with an ``UnreachableError`` saying where and since when; during the outage every
operation fails at once with the same ``since``, and a new connection is tried every few
seconds, so the session notices when the cluster is back. ``runyard logs`` of a Slurm task
fails within seconds, with that message."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import runyard as run
import taskdefs
from _slurm_helpers import Cluster, Relay, answer, known_hosts_for, returns_within, until
from runyard.errors import UnreachableError
from runyard_slurm.tunnel import session_for


def _tunnel(cluster: Cluster, relay: Relay, tmp_path: Path, **fields: Any) -> run.SSHTunnel:
    """A tunnel through the relay that would retry a lost connection for 10 minutes."""
    known = known_hosts_for(cluster, tmp_path / "kh", relay.port)
    return cluster.tunnel(port=relay.port, known_hosts=known, **{"retry_for": 600, **fields})


def _patiently(session: Any, command: str) -> Any:
    """Run a command, giving up on an unreachable cluster after a second."""
    with session.patience(1):
        return session.run(command)


def test_during_an_outage_every_operation_fails_at_once_saying_since_when(
    cluster: Cluster, relay: Relay, tmp_path: Path
) -> None:
    session = session_for(_tunnel(cluster, relay, tmp_path))
    session.run("true")
    relay.stop()

    first = returns_within(60, lambda: _patiently(session, "true"))
    assert isinstance(first, UnreachableError) and first.since is not None
    then = time.strftime("%H:%M:%S", time.localtime(first.since))
    assert str(first).startswith(f"cannot reach root@127.0.0.1:{relay.port} (")
    assert f"while running a command: unreachable since {then} (" in str(first)

    # retry_for is 600 s: an operation that retried would hang; each fails at once instead
    for call in (
        lambda: session.run("true"),
        lambda: session.read("/etc/hostname"),
        lambda: session.stat("/"),
    ):
        later = returns_within(60, call)
        assert isinstance(later, UnreachableError), later
        assert later.since == first.since and f"unreachable since {then}" in str(later)


def test_the_session_notices_when_the_cluster_is_back(cluster: Cluster, relay: Relay, tmp_path: Path) -> None:
    session = session_for(_tunnel(cluster, relay, tmp_path))
    session.run("true")
    relay.stop()
    assert isinstance(returns_within(60, lambda: _patiently(session, "true")), UnreachableError)

    relay.start()

    assert until(lambda: answer(session, "echo back"), "the session to reconnect", timeout=30) == "back\n"
    assert session.run("echo again").stdout == "again\n"  # the outage is over: no more fast failures
    assert session.connects == 2


def test_runyard_logs_of_a_slurm_task_fails_within_seconds_while_the_cluster_is_unreachable(
    cluster: Cluster, relay: Relay, tmp_path: Path
) -> None:
    executor = cluster.executor(tunnel=_tunnel(cluster, relay, tmp_path))
    exp = run.Experiment("logs-unreachable")
    exp.add(run.Config(taskdefs.hello), executor=executor, name="t")
    assert exp.run() == "SUCCEEDED"

    relay.blackhole()  # connections open, nothing answers: the hardest case to give up on
    done = subprocess.run(  # a process of its own, as a user runs it; retrying would take 600 s
        [sys.executable, "-m", "runyard", "logs", exp.id, "t"], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1
    assert done.stderr.startswith(f"runyard: error: cannot reach root@127.0.0.1:{relay.port} (")
    assert "unreachable since " in done.stderr and "Traceback" not in done.stderr
    relay.release()
    assert exp.get_logs("t").stdout == "hello world\n"
