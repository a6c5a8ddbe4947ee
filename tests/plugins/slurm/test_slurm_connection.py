"""The SSH connection to the cluster, against the real sshd: one connection per host, key
files and ssh-agent, host keys checked against known_hosts, wrong keys and unreachable
hosts reported clearly, and a dropped connection retried without failing any task.

A small TCP relay in front of sshd stands for the network: stopping it drops every
connection through it, starting it again brings the host back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster, Relay, job_refs, known_hosts_for, until
from runyard.errors import BackendError
from runyard.plugins import plugin_manager
from runyard_slurm.tunnel import close_sessions, session_for


@pytest.fixture
def fresh() -> Iterator[None]:
    """No connection is open when the test starts (so it can count them)."""
    close_sessions()
    yield
    close_sessions()


def test_one_connection_serves_every_executor_and_task_of_a_host(cluster: Cluster, fresh: None) -> None:
    exp = run.Experiment("one-connection")
    exp.add([run.Config(taskdefs.hello, str(i)) for i in range(3)], executor=cluster.executor(), name="a")
    other = cluster.executor(tunnel=cluster.tunnel(job_dir=cluster.job_dir + "/other"), array=False)
    exp.add(run.Config(taskdefs.hello), executor=other, name="b")

    assert exp.run() == "SUCCEEDED"
    assert exp.get_logs("b").stdout == "hello world\n"

    session = session_for(cluster.tunnel())
    assert session is session_for(other.tunnel)
    assert session.connects == 1 and session.commands > 3
    cluster.sh(f"rm -rf {cluster.job_dir}/other")


def test_a_key_file_logs_in_without_the_agent(
    cluster: Cluster, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    assert session_for(cluster.tunnel()).run("echo in").stdout == "in\n"


@pytest.fixture
def agent(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real ssh-agent holding the test key, as the user's SSH_AUTH_SOCK."""
    out = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    env = dict(part.split("=", 1) for part in out.replace(";", "\n").split() if "=" in part)
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", env["SSH_AUTH_SOCK"])
        subprocess.run(["ssh-add", "-q", cluster.facts.key], check=True, capture_output=True,
                       env={**os.environ, "SSH_AUTH_SOCK": env["SSH_AUTH_SOCK"]})  # fmt: skip
        yield env["SSH_AUTH_SOCK"]
    finally:
        os.kill(int(env["SSH_AGENT_PID"]), signal.SIGTERM)


def test_ssh_agent_logs_in_when_no_key_is_given(
    cluster: Cluster, fresh: None, agent: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on

    session = session_for(cluster.tunnel(identity=None))

    assert session.run("echo agent").stdout == "agent\n"


def test_a_wrong_key_is_refused_at_once_with_what_to_check(
    cluster: Cluster, fresh: None, tmp_path: Path
) -> None:
    key = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    session = session_for(cluster.tunnel(identity=str(key), retry_for=600))  # retrying would time out

    with pytest.raises(
        BackendError, match=f"SSH login to root@127.0.0.1:{cluster.facts.port} was refused with key"
    ):
        session.run("true")
    assert session.connects == 0


def test_an_unknown_host_is_refused(cluster: Cluster, fresh: None, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")

    with pytest.raises(BackendError, match=r"not in .*known_hosts.*trust_new_host=True"):
        session_for(cluster.tunnel(known_hosts=str(known), retry_for=600)).run("true")
    assert known.read_text() == ""


def test_trusting_a_new_host_records_its_key(cluster: Cluster, fresh: None, tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"  # not even there yet

    session = session_for(cluster.tunnel(known_hosts=str(known), trust_new_host=True))

    assert session.run("echo trusted").stdout == "trusted\n"
    key = Path(cluster.facts.known_hosts).read_text().split()[1:3]
    assert known.read_text().split() == [f"[127.0.0.1]:{cluster.facts.port}", *key]


def test_a_host_key_mismatch_is_refused_even_when_trusting_new_hosts(
    cluster: Cluster, fresh: None, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    public = (tmp_path / "other.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{cluster.facts.port} {' '.join(public)}\n")

    with pytest.raises(BackendError, match=r"does not match the one in .*refusing to connect"):
        session_for(cluster.tunnel(known_hosts=str(known), trust_new_host=True, retry_for=600)).run("true")


def test_an_unreachable_host_fails_the_launch_with_a_clear_reason(cluster: Cluster, fresh: None) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]  # bound, never listening: connections are refused
    executor = cluster.executor(tunnel=cluster.tunnel(port=port, retry_for=1), array=False)
    exp = run.Experiment("unreachable")
    exp.add([run.Config(taskdefs.hello) for _ in range(3)], executor=executor, name="t")

    assert exp.run() == "FAILED"

    closed.close()
    for task in exp.tasks:  # the batch was tried once for all three (not one retry period each)
        assert task.reason.startswith(f"launch failed: cannot reach root@127.0.0.1:{port} (")
        assert "retried for 1s" in task.reason


def test_a_dropped_connection_is_opened_again(cluster: Cluster, relay: Relay, tmp_path: Path) -> None:
    tunnel = cluster.tunnel(
        port=relay.port, known_hosts=known_hosts_for(cluster, tmp_path / "kh", relay.port)
    )
    session = session_for(tunnel)
    assert session.run("echo one").stdout == "one\n"

    relay.stop()
    relay.start()

    assert session.run("echo two").stdout == "two\n"
    assert session.connects == 2


def test_a_command_is_retried_until_the_host_is_back(cluster: Cluster, relay: Relay, tmp_path: Path) -> None:
    tunnel = cluster.tunnel(
        port=relay.port, known_hosts=known_hosts_for(cluster, tmp_path / "kh", relay.port), retry_for=30
    )
    session = session_for(tunnel)
    assert session.run("echo before").stdout == "before\n"
    relay.stop()
    threading.Timer(1.5, relay.start).start()  # the host is back after a while

    assert session.run("echo after").stdout == "after\n"  # retried with backoff meanwhile
    assert session.connects == 2


def test_a_connection_lost_while_a_job_runs_never_fails_it(
    cluster: Cluster, relay: Relay, tmp_path: Path
) -> None:
    tunnel = cluster.tunnel(
        port=relay.port, known_hosts=known_hosts_for(cluster, tmp_path / "kh", relay.port), retry_for=0.5
    )
    exp = run.Experiment("network-drop")
    exp.add(
        run.Config(taskdefs.sleep_then_print, 3, "survived"),
        executor=cluster.executor(tunnel=tunnel),
        name="t",
    )
    exp.run(detach=True)  # all on Slurm: no supervisor; reading .tasks polls from here

    backend = plugin_manager().backend("slurm")
    refs = job_refs(exp, exp.tasks[0].executor)

    relay.stop()
    time.sleep(backend.poll_interval())
    with pytest.raises(BackendError, match="cannot reach"):  # what the driver gets while it is down
        backend.poll(refs)
    for _ in range(2):  # each look polls, fails to reach the cluster, and changes nothing
        time.sleep(backend.poll_interval())
        assert exp.tasks[0].status in ("SUBMITTED", "RUNNING")
    relay.start()

    until(lambda: exp.tasks[0].status.is_final, "the task to end")
    assert exp.tasks[0].status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == "survived\n"
