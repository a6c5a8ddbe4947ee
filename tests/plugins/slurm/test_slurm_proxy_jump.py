"""SSHTunnel through the user's SSH config and jump hosts, against the test bed's real bastion
(the `bastion` component, docs/testing.md): a jump host on 127.0.0.1, and the test cluster's
login node behind it on 127.0.0.2, which nothing but the bastion's forwarding reaches. Every
tunnel here names a Host alias of an SSH config the test writes; host keys are checked at
every hop, against the tunnel's known_hosts.

A relay in front of the bastion (``tests/helpers.Relay``) stands for the network between
runyard and the bastion: stopping it is the bastion going away, for these tests only."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster, Relay, a_dropped_link_fails_nothing, answer, returns_within, until
from runyard.errors import BackendError, BackendRefusedError, UnreachableError
from runyard_slurm.tunnel import close_sessions, session_for


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    """No connection is open when a test starts (so it can count them), none after it."""
    close_sessions()
    yield
    close_sessions()


def host_key(bastion: Any, host: str, port: int) -> str:
    """``ssh-ed25519 AAAA...`` of the bed's known_hosts line for ``[host]:port``."""
    for line in Path(bastion.known_hosts).read_text().splitlines():
        name, _, key = line.partition(" ")
        if name == f"[{host}]:{port}":
            return key
    raise AssertionError(f"{bastion.known_hosts} has no line for [{host}]:{port}")


def write_config(path: Path, bastion: Any, *, jump: str = "", extra: str = "", jump_port: int = 0) -> str:
    """An SSH config: ``cluster-alias`` is the login node behind the bastion, reached through
    the ProxyJump ``jump`` (default: the alias ``bastion``, on ``jump_port`` or the bed's);
    ``login`` is the test sshd itself, which can serve as a first jump host."""
    path.write_text(
        f"Host cluster-alias\n  HostName {bastion.target_host}\n  Port {bastion.target_port}\n"
        f"  ProxyJump {jump or 'bastion'}\n"
        f"Host bastion\n  HostName {bastion.host}\n  Port {jump_port or bastion.port}\n"
        f"{extra}"
        f"Host login\n  HostName {bastion.host}\n  Port {_test_sshd_port()}\n"
        f"Host *\n  User {bastion.user}\n  IdentityFile {bastion.key}\n  IdentitiesOnly yes\n"
    )
    return str(path)


def _test_sshd_port() -> int:
    """The test sshd's port (the bastion fixture reads the ssh_server's facts first)."""
    return int(os.environ["RUNYARD_TEST_SSH_PORT"])


def jump_tunnel(bastion: Any, ssh_config: str, host: str = "cluster-alias", **fields: Any) -> run.SSHTunnel:
    fields.setdefault("known_hosts", bastion.known_hosts)
    fields.setdefault("job_dir", "~/.runyard/jobs")
    return run.SSHTunnel(host=host, ssh_config=ssh_config, **fields)


def where(bastion: Any, *jumps: str) -> str:
    via = ", ".join(jumps or (f"{bastion.user}@{bastion.host}:{bastion.port}",))
    return f"{bastion.user}@{bastion.target_host}:{bastion.target_port} via {via}"


# ------------------------------------------------------------------------ the bed, through runyard


def test_the_cluster_behind_the_bastion_refuses_a_direct_connection_and_answers_through_it(
    bastion: Any, ssh_server: Any, tmp_path: Path
) -> None:
    direct = run.SSHTunnel(
        bastion.target_host, user=bastion.user, port=bastion.target_port, identity=bastion.key,
        known_hosts=bastion.known_hosts, ssh_config="none", retry_for=0, job_dir="~",
    )  # fmt: skip
    error = returns_within(60, lambda: session_for(direct).run("true"))
    assert isinstance(error, UnreachableError), error
    assert f"Unable to connect to port {bastion.target_port} on {bastion.target_host}" in str(error)

    session = session_for(jump_tunnel(bastion, write_config(tmp_path / "config", bastion)))

    assert session.run("echo $SLURM_CONF").stdout == f"{ssh_server_slurm_conf()}\n"
    assert session.where == where(bastion)
    assert session.connects == 1


def ssh_server_slurm_conf() -> str:
    return os.path.join(os.environ.get("RUNYARD_INFRA_DIR", "/tmp/runyard-infra"), "slurm", "slurm.conf")


def test_the_beds_own_ssh_config_serves_runyard_as_it_serves_openssh(bastion: Any) -> None:
    """(Its UserKnownHostsFile is OpenSSH's: runyard checks host keys against the tunnel's known_hosts.)"""
    tunnel = run.SSHTunnel(
        "runyard-behind", known_hosts=bastion.known_hosts, ssh_config=bastion.ssh_config, job_dir="~"
    )
    session = session_for(tunnel)

    assert session.run("echo through").stdout == "through\n"
    assert session.where == where(bastion)


# ------------------------------------------------------------------ a config without jump hosts


def test_a_host_alias_gives_hostname_user_port_and_identityfile(ssh_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        f"Host login-alias\n  HostName {ssh_server.host}\n  Port {ssh_server.port}\n  User {ssh_server.user}\n"
        f"  IdentityFile {ssh_server.key}\n  IdentitiesOnly yes\n"
    )
    tunnel = run.SSHTunnel(
        "login-alias", known_hosts=ssh_server.known_hosts, ssh_config=str(config), job_dir="~"
    )

    session = session_for(tunnel)

    assert session.run("whoami").stdout == f"{ssh_server.user}\n"
    assert session.where == f"{ssh_server.user}@{ssh_server.host}:{ssh_server.port}"


def test_fields_given_to_the_tunnel_beat_the_config(ssh_server: Any, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    config = tmp_path / "config"
    config.write_text(
        f"Host login-alias\n  HostName {ssh_server.host}\n  Port 1\n  User nobody\n  IdentityFile {wrong}\n"
    )
    tunnel = run.SSHTunnel(
        "login-alias", user=ssh_server.user, port=ssh_server.port, identity=ssh_server.key,
        known_hosts=ssh_server.known_hosts, ssh_config=str(config), job_dir="~", retry_for=0,
    )  # fmt: skip

    assert session_for(tunnel).run("whoami").stdout == f"{ssh_server.user}\n"


# ----------------------------------------------------------------------------- a job, through


def test_a_slurm_job_runs_through_the_bastion_to_succeeded_and_its_logs_are_read(
    cluster: Cluster, bastion: Any, tmp_path: Path
) -> None:
    tunnel = jump_tunnel(bastion, write_config(tmp_path / "config", bastion), job_dir=cluster.job_dir)
    exp = run.Experiment("through-the-bastion")
    exp.add(
        run.Config(taskdefs.hello, "from behind the bastion"),
        executor=cluster.executor(tunnel=tunnel),
        name="t",
    )

    assert exp.run() == "SUCCEEDED"

    assert exp.get_logs("t").stdout == "hello from behind the bastion\n"
    session = session_for(tunnel)
    assert session.where == where(bastion)
    assert session.connects == 1  # submit, polls and logs: all on one connection through the bastion
    job = cluster.job(exp.tasks[0].job_id or "")
    assert job["JobState"] == "COMPLETED"


@pytest.mark.parametrize("how", ["ProxyJump login,bastion", "the first jump host's own ProxyJump"])
def test_two_jump_hosts_the_login_node_then_the_bastion(bastion: Any, tmp_path: Path, how: str) -> None:
    """The test sshd (a real sshd on 127.0.0.1 that forwards) as the first hop, the bastion as
    the second; written as a list, or as the bastion's own ProxyJump in the config."""
    if how.startswith("ProxyJump"):
        path = write_config(tmp_path / "config", bastion, jump="login,bastion")
    else:
        path = write_config(
            tmp_path / "config", bastion, jump="bastion-via-login",
            extra=f"Host bastion-via-login\n  HostName {bastion.host}\n  Port {bastion.port}\n  ProxyJump login\n",
        )  # fmt: skip
    session = session_for(jump_tunnel(bastion, path))

    assert session.run("echo two hops").stdout == "two hops\n"
    login = f"{bastion.user}@{bastion.host}:{_test_sshd_port()}"
    assert session.where == where(bastion, login, f"{bastion.user}@{bastion.host}:{bastion.port}")


# ------------------------------------------------------------------------- host keys at each hop


def known_hosts(path: Path, *lines: str) -> str:
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def test_an_unknown_bastion_is_refused_at_once_naming_it(bastion: Any, tmp_path: Path) -> None:
    target = f"[{bastion.target_host}]:{bastion.target_port} {host_key(bastion, bastion.target_host, bastion.target_port)}"
    kh = known_hosts(tmp_path / "known_hosts", target)  # the login node's key only
    path = write_config(tmp_path / "config", bastion)

    error = returns_within(
        60, lambda: session_for(jump_tunnel(bastion, path, known_hosts=kh, retry_for=600)).run("true")
    )

    assert isinstance(error, BackendRefusedError), error
    assert str(error) == (
        f"host the jump host {bastion.user}@{bastion.host}:{bastion.port} (ProxyJump hop 1 of 1 'bastion', on the "
        f"way to 'cluster-alias' in {path}) is not in {kh}: refusing to connect to an unknown host. Add its key "
        f"(ssh-keyscan -p {bastion.port} {bastion.host} >> {kh}, after checking it), or pass trust_new_host=True "
        "/ RUNYARD_SLURM_TRUST_NEW_HOST=1"
    )
    assert Path(kh).read_text() == target + "\n"


def test_a_changed_bastion_host_key_is_refused_even_when_trusting_new_hosts(
    bastion: Any, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    kh = known_hosts(
        tmp_path / "known_hosts", f"[{bastion.host}]:{bastion.port} {wrong}",
        f"[{bastion.target_host}]:{bastion.target_port} {host_key(bastion, bastion.target_host, bastion.target_port)}",
    )  # fmt: skip
    tunnel = jump_tunnel(
        bastion, write_config(tmp_path / "config", bastion), known_hosts=kh, trust_new_host=True
    )

    error = returns_within(60, lambda: session_for(tunnel).run("true"))

    assert isinstance(error, BackendRefusedError), error
    assert str(error).startswith(
        f"the host key of the jump host {bastion.user}@{bastion.host}:{bastion.port} (ProxyJump hop 1 of 1 'bastion'"
    )
    assert f"does not match the one in {kh}" in str(error)
    assert f"ssh-keygen -R '[{bastion.host}]:{bastion.port}' -f {kh}" in str(error)


def test_an_unknown_login_node_behind_the_bastion_is_refused_saying_how_to_record_its_key(
    bastion: Any, tmp_path: Path
) -> None:
    kh = known_hosts(
        tmp_path / "kh", f"[{bastion.host}]:{bastion.port} {host_key(bastion, bastion.host, bastion.port)}"
    )
    tunnel = jump_tunnel(bastion, write_config(tmp_path / "config", bastion), known_hosts=kh, retry_for=600)

    error = returns_within(60, lambda: session_for(tunnel).run("true"))

    assert isinstance(error, BackendRefusedError), error
    assert str(error).startswith(
        f"host {where(bastion)} is not in {kh}: refusing to connect to an unknown host."
    )
    assert (
        f"ssh-keyscan cannot reach it from here: log in once with OpenSSH (ssh -o UserKnownHostsFile={kh} -J "
        f"{bastion.user}@{bastion.host}:{bastion.port} -p {bastion.target_port} {bastion.user}@{bastion.target_host})"
    ) in str(error)


def test_trusting_new_hosts_records_the_key_of_every_hop(bastion: Any, tmp_path: Path) -> None:
    kh = tmp_path / "ssh" / "known_hosts"  # not even there yet
    tunnel = jump_tunnel(
        bastion, write_config(tmp_path / "config", bastion), known_hosts=str(kh), trust_new_host=True
    )

    assert session_for(tunnel).run("echo trusted").stdout == "trusted\n"

    assert kh.read_text().splitlines() == [
        f"[{bastion.host}]:{bastion.port} {host_key(bastion, bastion.host, bastion.port)}",
        f"[{bastion.target_host}]:{bastion.target_port} {host_key(bastion, bastion.target_host, bastion.target_port)}",
    ]


# --------------------------------------------------------------------- a config that cannot work


def test_an_unknown_jump_alias_is_refused_at_once_naming_it(bastion: Any, tmp_path: Path) -> None:
    path = write_config(tmp_path / "config", bastion, jump="no-such-bastion.invalid")

    error = returns_within(60, lambda: session_for(jump_tunnel(bastion, path, retry_for=600)).run("true"))

    assert isinstance(error, BackendRefusedError), error
    assert str(error).startswith(
        "cannot resolve host name 'no-such-bastion.invalid', a jump host in the ProxyJump of 'cluster-alias' "
        f"in {path}: it is no Host alias there and DNS does not know it"
    )


def test_a_missing_identityfile_of_the_bastion_is_refused_at_once_naming_it(
    bastion: Any, tmp_path: Path
) -> None:
    path = tmp_path / "config"
    path.write_text(
        f"Host cluster-alias\n  HostName {bastion.target_host}\n  Port {bastion.target_port}\n  User {bastion.user}\n"
        f"  IdentityFile {bastion.key}\n  ProxyJump bastion\n"
        f"Host bastion\n  HostName {bastion.host}\n  Port {bastion.port}\n  IdentityFile {tmp_path}/gone\n"
    )

    error = returns_within(
        60, lambda: session_for(jump_tunnel(bastion, str(path), retry_for=600)).run("true")
    )

    assert isinstance(error, BackendError) and not isinstance(error, UnreachableError), error
    assert str(error) == (
        f"SSH key file {tmp_path}/gone (IdentityFile of host 'bastion' in {path}) does not exist: fix the "
        "IdentityFile line, or give SSHTunnel.identity"
    )


def test_a_key_the_bastion_refuses_is_said_with_the_identityfile_to_check(
    bastion: Any, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    path = str(tmp_path / "config")
    Path(path).write_text(
        f"Host cluster-alias\n  HostName {bastion.target_host}\n  Port {bastion.target_port}\n  User {bastion.user}\n"
        f"  IdentityFile {bastion.key}\n  ProxyJump wrong-key-bastion\n"
        f"Host wrong-key-bastion\n  HostName {bastion.host}\n  Port {bastion.port}\n  User {bastion.user}\n"
        f"  IdentityFile {wrong}\n  IdentitiesOnly yes\n"
    )

    error = returns_within(60, lambda: session_for(jump_tunnel(bastion, path, retry_for=600)).run("true"))

    assert isinstance(error, BackendRefusedError), error
    assert str(error).startswith(
        f"SSH login to the jump host {bastion.user}@{bastion.host}:{bastion.port} (ProxyJump hop 1 of 1 "
        f"'wrong-key-bastion', on the way to 'cluster-alias' in {path}) was refused with key {wrong}"
    )
    assert f"check the IdentityFile of host 'wrong-key-bastion' in {path}" in str(error)


def test_a_jump_host_that_may_not_forward_there_is_refused_at_once(bastion: Any, tmp_path: Path) -> None:
    """The bastion forwards to the cluster behind it only (PermitOpen): the test sshd through it
    is administratively prohibited, which retrying cannot change."""
    path = write_config(
        tmp_path / "config", bastion,
        extra=f"Host forbidden\n  HostName {bastion.host}\n  Port {_test_sshd_port()}\n  ProxyJump bastion\n",
    )  # fmt: skip

    error = returns_within(
        60, lambda: session_for(jump_tunnel(bastion, path, "forbidden", retry_for=600)).run("true")
    )

    assert isinstance(error, BackendRefusedError), error
    assert str(error).startswith(
        f"the jump host {bastion.user}@{bastion.host}:{bastion.port} (ProxyJump hop 1 of 1 'bastion', on the way to "
        f"'forbidden' in {path}) refuses to forward a connection to {bastion.host}:{_test_sshd_port()} "
        "(Administratively prohibited): its sshd's AllowTcpForwarding or PermitOpen forbids it"
    )


# ------------------------------------------------------------------------ the bastion goes away


@pytest.fixture
def bastion_relay(bastion: Any) -> Iterator[Relay]:
    """A relay in front of the bastion: the network between runyard and it, to fail on cue."""
    r = Relay((bastion.host, bastion.port))
    r.start()
    yield r
    r.stop()
    close_sessions()


def relayed(bastion: Any, relay: Relay, tmp_path: Path, **fields: Any) -> run.SSHTunnel:
    """A tunnel to the cluster behind the bastion, through the relay in front of it (its
    known_hosts lists the bastion's key for the relay's port)."""
    kh = known_hosts(
        tmp_path / "known_hosts", f"[{bastion.host}]:{relay.port} {host_key(bastion, bastion.host, bastion.port)}",
        f"[{bastion.target_host}]:{bastion.target_port} {host_key(bastion, bastion.target_host, bastion.target_port)}",
    )  # fmt: skip
    path = write_config(tmp_path / "config", bastion, jump_port=relay.port)
    return jump_tunnel(bastion, path, known_hosts=kh, **fields)


def test_a_dropped_bastion_is_an_outage_and_the_chain_is_opened_again(
    bastion: Any, bastion_relay: Relay, tmp_path: Path
) -> None:
    session = session_for(relayed(bastion, bastion_relay, tmp_path, retry_for=1))
    assert session.run("echo one").stdout == "one\n"

    bastion_relay.stop()
    error = returns_within(60, lambda: session.run("echo two"))
    assert isinstance(error, UnreachableError), error
    assert str(error).startswith(
        f"cannot reach {where(bastion, f'{bastion.user}@{bastion.host}:{bastion_relay.port}')} ("
    )

    bastion_relay.start()
    assert until(lambda: answer(session, "echo back"), "the session to reconnect", timeout=30) == "back\n"
    assert session.connects == 2


def test_a_command_waits_while_the_bastion_is_away_and_runs_when_it_is_back(
    bastion: Any, bastion_relay: Relay, tmp_path: Path
) -> None:
    session = session_for(relayed(bastion, bastion_relay, tmp_path, retry_for=30))
    assert session.run("echo before").stdout == "before\n"
    bastion_relay.stop()
    threading.Timer(1.5, bastion_relay.start).start()

    assert session.run("echo after").stdout == "after\n"  # retried with backoff meanwhile
    assert session.connects == 2


def test_the_bastion_going_away_while_a_job_runs_fails_nothing(
    cluster: Cluster, bastion: Any, bastion_relay: Relay, tmp_path: Path
) -> None:
    tunnel = relayed(bastion, bastion_relay, tmp_path, retry_for=0.5, job_dir=cluster.job_dir)
    a_dropped_link_fails_nothing(cluster, tunnel, bastion_relay, "bastion-drop", UnreachableError)


def test_a_bastion_that_swallows_packets_is_found_dead_by_the_keepalive(
    bastion: Any, bastion_relay: Relay, tmp_path: Path
) -> None:
    tunnel = relayed(bastion, bastion_relay, tmp_path, retry_for=1, connect_timeout=2, dead_after=2)
    session = session_for(tunnel)
    assert session.run("echo up").stdout == "up\n"
    threading.Timer(1, bastion_relay.blackhole).start()  # while the command runs

    error = returns_within(60, lambda: session.run("sleep 5; echo done"))  # not the 300 s command timeout

    assert isinstance(error, UnreachableError), error
    assert "(no answer to a keepalive within 2s) while running a command" in str(error)
    bastion_relay.stop()  # the network is back
    bastion_relay.start()
    assert until(lambda: answer(session, "echo back"), "the session to reconnect", timeout=30) == "back\n"
