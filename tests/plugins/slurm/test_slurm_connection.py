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
from _slurm_helpers import (
    Cluster,
    Relay,
    a_dropped_link_fails_nothing,
    answer,
    job_refs,
    known_hosts_for,
    returns_within,
    until,
)  # fmt: skip
from runyard.errors import BackendError, BackendRefusedError, UnreachableError
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


def test_an_unreachable_host_keeps_the_launch_waiting_with_a_clear_reason(
    cluster: Cluster, fresh: None
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]  # bound, never listening: connections are refused
    executor = cluster.executor(tunnel=cluster.tunnel(port=port, retry_for=1), array=False)
    exp = run.Experiment("unreachable", max_retries=1)  # retries: a supervisor drives it
    exp.add([run.Config(taskdefs.hello) for _ in range(3)], executor=executor, name="t")
    exp.run(detach=True)

    tasks = until(
        lambda: all((t.reason or "").startswith("waiting") for t in exp.tasks) and exp.tasks, "the wait"
    )
    closed.close()
    for task in tasks:  # the batch was tried once for all three (not one retry period each); no attempt used
        assert (task.status, task.attempts) == ("PENDING", 0)
        assert task.reason.startswith(f"waiting: cannot reach root@127.0.0.1:{port} (")
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
    a_dropped_link_fails_nothing(cluster, tunnel, relay, "network-drop", BackendError)


@pytest.fixture
def other_sshd(cluster: Cluster, tmp_path: Path) -> Iterator[int]:
    """A second sshd of this test, on a free 127.0.0.1 port: the test sshd's config (same
    users, keys and Slurm) with a host key of its own; its port."""
    key = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shared = Path(os.environ.get("RUNYARD_INFRA_DIR", "/tmp/runyard-infra")) / "ssh" / "sshd_config"
    lines = [
        line
        for line in shared.read_text().splitlines()
        if not line.startswith(("Port ", "HostKey ", "PidFile "))
    ]
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([*lines, f"PidFile {tmp_path}/sshd.pid", ""]))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with open(tmp_path / "sshd.log", "wb") as log:
        sshd = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config), "-p", str(port), "-h", str(key)], stderr=log
        )
    try:
        until(lambda: _listening(port), "the second sshd to listen", timeout=20)
        yield port
    finally:
        sshd.terminate()
        sshd.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _point(relay: Relay, port: int) -> None:
    """The relay leads to another sshd from now on (connections through it drop)."""
    relay.stop()
    relay.target = ("127.0.0.1", port)
    relay.start()


def _a_minute_long_job_through(
    cluster: Cluster, relay: Relay, tmp_path: Path, title: str
) -> tuple[run.Experiment, str]:
    """An experiment of one task of a minute, on the cluster through the relay (with a tunnel
    that would retry for ten minutes: a wait that never ends would show as a hang); and the
    known_hosts file it trusts."""
    known = known_hosts_for(cluster, tmp_path / "kh", relay.port)
    tunnel = cluster.tunnel(port=relay.port, known_hosts=known, retry_for=600)
    exp = run.Experiment(title)
    exp.add(
        run.Config(taskdefs.sleep_then_print, 60, "x"), executor=cluster.executor(tunnel=tunnel), name="t"
    )
    return exp, known


def test_a_host_key_that_changes_while_a_job_runs_fails_poll_and_cancel_with_what_to_do(
    cluster: Cluster, relay: Relay, other_sshd: int, tmp_path: Path
) -> None:
    exp, known = _a_minute_long_job_through(cluster, relay, tmp_path, "host-key-changed")
    exp.run(detach=True)
    backend = plugin_manager().backend("slurm")
    refs = job_refs(exp, exp.tasks[0].executor)
    sshd_port = relay.target[1]

    _point(relay, other_sshd)  # the login node now shows another host key
    try:
        time.sleep(backend.poll_interval())
        for call in (lambda: backend.poll(refs), lambda: backend.cancel(refs[0])):
            error = returns_within(60, call)
            assert isinstance(error, BackendError) and not isinstance(error, UnreachableError), error
            assert f"the host key of root@127.0.0.1:{relay.port} does not match the one in {known}" in str(
                error
            )
            assert f"ssh-keygen -R '[127.0.0.1]:{relay.port}' -f {known}" in str(error)
    finally:
        _point(relay, sshd_port)
    exp.cancel_all()


def test_an_attached_run_whose_host_key_changes_stops_saying_what_to_do_instead_of_hanging(
    cluster: Cluster, relay: Relay, other_sshd: int, tmp_path: Path
) -> None:
    exp, known = _a_minute_long_job_through(cluster, relay, tmp_path, "host-key-changed-attached")
    outcome: list[BaseException] = []

    def attached() -> None:
        try:
            exp.run()
        except BaseException as exc:  # what the user's script would see
            outcome.append(exc)

    driving = threading.Thread(target=attached)
    driving.start()
    sshd_port = relay.target[1]
    until(lambda: exp.store.task(exp.experiment_id, "t").status == "RUNNING", "the job to run")
    _point(relay, other_sshd)  # the login node now shows another host key
    try:
        driving.join(timeout=60)  # a guard against the old hang, not a timing
        assert not driving.is_alive(), "the attached run hangs on a changed host key"
    finally:
        _point(relay, sshd_port)
    [error] = outcome
    assert isinstance(error, BackendRefusedError)
    assert f"ssh-keygen -R '[127.0.0.1]:{relay.port}' -f {known}" in str(error)
    exp.cancel_all()


def _black_holed_tunnel(cluster: Cluster, relay: Relay, tmp_path: Path) -> run.SSHTunnel:
    return cluster.tunnel(
        port=relay.port, known_hosts=known_hosts_for(cluster, tmp_path / "kh", relay.port), retry_for=1,
        connect_timeout=2, dead_after=2,
    )  # fmt: skip


def test_a_connection_that_swallows_packets_during_a_command_is_found_dead_in_seconds(
    cluster: Cluster, relay: Relay, tmp_path: Path
) -> None:
    session = session_for(_black_holed_tunnel(cluster, relay, tmp_path))
    assert session.run("echo up").stdout == "up\n"
    threading.Timer(1, relay.blackhole).start()  # while the command runs

    error = returns_within(60, lambda: session.run("sleep 5; echo done"))  # not the 300 s command timeout

    assert isinstance(error, UnreachableError), error
    assert "(no answer to a keepalive within 2s) while running a command" in str(error)
    relay.stop()  # the network is back
    relay.start()
    assert until(lambda: answer(session, "echo back"), "the session to reconnect", timeout=30) == "back\n"


def test_a_poll_through_a_connection_that_swallows_packets_gives_no_news_in_seconds(
    cluster: Cluster, relay: Relay, tmp_path: Path
) -> None:
    exp = run.Experiment("black-hole-poll")
    executor = cluster.executor(tunnel=_black_holed_tunnel(cluster, relay, tmp_path))
    exp.add(run.Config(taskdefs.sleep_then_print, 60, "x"), executor=executor, name="t")
    exp.run(detach=True)
    backend = plugin_manager().backend("slurm")
    refs = job_refs(exp, exp.tasks[0].executor)
    backend.poll(refs)

    relay.blackhole()
    time.sleep(backend.poll_interval())
    error = returns_within(60, lambda: backend.poll(refs))

    assert isinstance(error, UnreachableError), error
    relay.stop()
    relay.start()
    until(lambda: answer(session_for(executor.tunnel), "echo up"), "the session to reconnect", timeout=30)
    exp.cancel_all()


def test_a_changed_host_key_on_one_cluster_is_said_even_while_another_cluster_answers(
    cluster: Cluster, relay: Relay, other_sshd: int, tmp_path: Path
) -> None:
    changed, _ = _a_minute_long_job_through(cluster, relay, tmp_path, "host-key-one-of-two")
    fine = run.Experiment("host-key-other-cluster")
    fine.add(run.Config(taskdefs.sleep_then_print, 60, "x"), executor=cluster.executor(), name="t")
    for exp in (changed, fine):
        exp.run(detach=True)
    backend = plugin_manager().backend("slurm")
    refs = [*job_refs(changed, changed.tasks[0].executor), *job_refs(fine, fine.tasks[0].executor)]
    sshd_port = relay.target[1]
    _point(relay, other_sshd)
    try:
        time.sleep(backend.poll_interval())
        error = returns_within(60, lambda: backend.poll(refs))
        assert isinstance(error, BackendRefusedError), error
        assert "ssh-keygen -R" in str(error)
    finally:
        _point(relay, sshd_port)
    for exp in (changed, fine):
        exp.cancel_all()
