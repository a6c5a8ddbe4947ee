"""SSHTunnel and the user's OpenSSH config, resolved without a server: a Host alias's
HostName, User, Port and IdentityFile; fields given to the tunnel beating them; ProxyJump
chains (hops that are aliases with settings of their own, the first hop's own ProxyJump,
``ProxyJump none``); the errors that say what to fix; and tunnels that leave the port to the
config, through the store's JSON. The connections themselves, through the test bed's real
bastion, are in test_slurm_proxy_jump.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import runyard as run
from runyard import serialization
from runyard.errors import BackendError, BackendRefusedError
from runyard_slurm.sshconfig import Hop, SSHConfigError, resolve_route


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A home of the test's own (its ~/.ssh/config is the default config), the local user
    ``localme``, and no cluster defaults."""
    folder = tmp_path / "home"
    (folder / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("LOGNAME", "localme")  # getpass.getuser()
    monkeypatch.setenv("RUNYARD_SLURM_CONFIG", str(tmp_path / "no-slurm.toml"))
    for name in ("HOST", "USER", "PORT", "KEY", "KNOWN_HOSTS", "SSH_CONFIG", "JOB_DIR"):
        monkeypatch.delenv(f"RUNYARD_SLURM_{name}", raising=False)
    return folder


def key(home: Path, name: str) -> str:
    """A key file (resolution only checks that it exists)."""
    path = home / ".ssh" / name
    path.write_text("not really a key\n")
    return str(path)


def config(home: Path, text: str, name: str = "config") -> str:
    path = home / ".ssh" / name
    path.write_text(text)
    return str(path)


def tunnel(host: str, **fields: object) -> run.SSHTunnel:
    return run.SSHTunnel(host, job_dir="/jobs", **fields)  # type: ignore[arg-type]


def test_a_host_alias_takes_its_hostname_user_port_and_identityfile_from_the_config(home: Path) -> None:
    ada = key(home, "id_hpc")
    path = config(
        home, f"Host hpc\n  HostName login.hpc.example.org\n  User ada\n  Port 2200\n  IdentityFile {ada}\n"
    )

    route = resolve_route(tunnel("hpc", ssh_config=path))

    assert route.target == Hop(
        "hpc", "login.hpc.example.org", 2200, "ada", key_files=(ada,),
        keys_from=f"IdentityFile of host 'hpc' in {path}", agent=True, default_keys=False,
    )  # fmt: skip
    assert (route.jumps, route.config, route.where) == ((), path, "ada@login.hpc.example.org:2200")


def test_fields_given_to_the_tunnel_beat_the_config(home: Path) -> None:
    mine = key(home, "mine")
    config(
        home,
        f"Host hpc\n  HostName login.example.org\n  User ada\n  Port 2200\n  IdentityFile {key(home, 'x')}\n",
    )

    route = resolve_route(tunnel("hpc", user="bob", port=22, identity=mine))  # ~/.ssh/config: the default

    assert route.target == Hop(
        "hpc", "login.example.org", 22, "bob", key_files=(mine,), keys_from="SSHTunnel.identity",
        agent=False, default_keys=False,
    )  # fmt: skip


def test_without_a_config_a_host_is_itself_on_port_22_as_the_local_user_with_the_agent(home: Path) -> None:
    route = resolve_route(tunnel("login.example.org"))

    assert route == resolve_route(tunnel("login.example.org", ssh_config="none"))
    assert route.config is None
    assert route.target == Hop("login.example.org", "login.example.org", 22, "localme")  # agent, ~/.ssh/id_*


def test_none_reads_no_config_even_where_home_has_one(home: Path) -> None:
    config(home, "Host hpc\n  HostName elsewhere.example.org\n  Port 2200\n")

    assert resolve_route(tunnel("hpc")).where == "localme@elsewhere.example.org:2200"
    assert resolve_route(tunnel("hpc", ssh_config="none")).where == "localme@hpc:22"


def test_host_patterns_apply_and_the_first_value_obtained_wins(home: Path) -> None:
    config(
        home,
        "Host gpu*\n  HostName %h.hpc.example.org\n  User ada\n"
        "Host *.example.org\n  Port 2022\n"
        "Host *\n  User nobody\n  Port 22\n",
    )

    assert resolve_route(tunnel("gpu1")).where == "ada@gpu1.hpc.example.org:22"
    assert resolve_route(tunnel("cpu.example.org")).where == "nobody@cpu.example.org:2022"


def test_proxyjump_hops_are_aliases_with_their_own_settings_or_user_host_port(home: Path) -> None:
    bastion_key, mine = key(home, "id_bastion"), key(home, "mine")
    path = config(
        home,
        "Host hpc\n  HostName 10.1.0.5\n  ProxyJump ops@gate.example.org:2022,bastion\n"
        f"Host bastion\n  HostName bastion.example.org\n  User jumper\n  Port 2222\n  IdentityFile {bastion_key}\n",
    )

    route = resolve_route(tunnel("hpc", user="ada", identity=mine))

    gate, bastion = route.jumps
    # a hop without an IdentityFile tries the tunnel's key, then the agent and ~/.ssh/id_*
    assert gate == Hop("gate.example.org", "gate.example.org", 2022, "ops", (mine,), "SSHTunnel.identity")
    assert bastion == Hop(
        "bastion", "bastion.example.org", 2222, "jumper", (bastion_key,),
        f"IdentityFile of host 'bastion' in {path}", agent=True, default_keys=False,
    )  # fmt: skip
    assert route.target.address == "ada@10.1.0.5:22"  # the tunnel's user is the login node's, not the hops'
    assert route.where == "ada@10.1.0.5:22 via ops@gate.example.org:2022, jumper@bastion.example.org:2222"
    assert route.jump_label(1, "hpc") == (
        "the jump host jumper@bastion.example.org:2222 (ProxyJump hop 2 of 2 'bastion', on the way to "
        f"'hpc' in {path})"
    )


def test_ssh_uris_and_ipv6_addresses_are_hops_too(home: Path) -> None:
    config(home, "Host hpc\n  ProxyJump ssh://ops@[2001:db8::1]:2022,[2001:db8::2],gate:2200\n")

    hops = resolve_route(tunnel("hpc")).jumps

    assert [(h.user, h.host, h.port) for h in hops] == [
        ("ops", "2001:db8::1", 2022), ("localme", "2001:db8::2", 22), ("localme", "gate", 2200),
    ]  # fmt: skip
    assert hops[0].spec == "ops@[2001:db8::1]:2022" and hops[0].known_hosts_name == "[2001:db8::1]:2022"


def test_the_first_hops_own_proxyjump_is_followed_as_openssh_does(home: Path) -> None:
    """``ProxyJump a,b``: OpenSSH reaches b through a, and a with a's own config, ProxyJump too;
    b's own ProxyJump is not followed (-J overrides it)."""
    config(
        home,
        "Host hpc\n  ProxyJump inner,last\n"
        "Host inner\n  ProxyJump outer\n"
        "Host last\n  ProxyJump never-used\n"
        "Host outer\n  Port 2200\n",
    )

    route = resolve_route(tunnel("hpc"))

    assert [(h.name, h.port) for h in route.jumps] == [("outer", 2200), ("inner", 22), ("last", 22)]


def test_proxyjump_none_turns_jumping_off_and_a_host_is_never_its_own_jump_host(home: Path) -> None:
    """The usual ``Host * / ProxyJump bastion``: the bastion itself is reached directly."""
    config(home, "Host direct\n  ProxyJump none\nHost *\n  ProxyJump bastion\n")

    assert [h.name for h in resolve_route(tunnel("hpc")).jumps] == ["bastion"]
    assert resolve_route(tunnel("bastion")).jumps == ()
    assert resolve_route(tunnel("direct")).jumps == ()


def test_a_proxyjump_loop_is_an_error_naming_the_loop(home: Path) -> None:
    config(home, "Host hpc\n  ProxyJump a\nHost a\n  ProxyJump b\nHost b\n  ProxyJump a\n")

    with pytest.raises(SSHConfigError, match=r"ProxyJump loop: hpc -> a -> b -> a \(add 'ProxyJump none'"):
        resolve_route(tunnel("hpc"))


def test_a_missing_identityfile_is_an_error_naming_it_and_its_host(home: Path) -> None:
    path = config(
        home,
        "Host hpc\n  ProxyJump bastion\n  IdentityFile ~/.ssh/id_hpc\n"
        "Host bastion\n  IdentityFile ~/.ssh/id_gone\n",
    )
    key(home, "id_hpc")

    with pytest.raises(BackendRefusedError) as error:
        resolve_route(tunnel("hpc"))
    assert str(error.value) == (
        f"SSH key file {home}/.ssh/id_gone (IdentityFile of host 'bastion' in {path}) does not exist: fix "
        "the IdentityFile line, or give SSHTunnel.identity"
    )
    # of several IdentityFiles, those that exist are tried; only none at all is an error
    config(home, "Host hpc\n  IdentityFile ~/.ssh/id_gone\n  IdentityFile ~/.ssh/id_hpc\n")
    assert resolve_route(tunnel("hpc")).target.key_files == (f"{home}/.ssh/id_hpc",)


def test_identities_only_keeps_the_agent_out(home: Path) -> None:
    config(home, f"Host hpc\n  IdentityFile {key(home, 'id')}\n  IdentitiesOnly yes\n")

    target = resolve_route(tunnel("hpc")).target

    assert (target.agent, target.default_keys) == (False, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Host hpc\n  Port twenty\n", r"Port of host 'hpc' must be a port number \(1-65535\), got 'twenty'"),
        ("Host hpc\n  ProxyJump gate:99999\n", r"the hop 'gate:99999' has no valid port number"),
        ("Host hpc\n  ProxyJump ada@\n", r"cannot read the hop 'ada@' \(expected \[user@\]host\[:port\]\)"),
        ("Host hpc\n  ProxyJump gate,,other\n", r"cannot read the hop ''"),
        (
            "Host hpc\n  ProxyCommand ssh -W %h:%p gate\n",
            r"host 'hpc' has a ProxyCommand \(ssh -W hpc:22 gate\), which runyard does not run: use ProxyJump",
        ),
        ("Host hpc\n  ???\n", r"cannot read SSH config .*Unparsable line \?\?\?"),
    ],
)
def test_what_the_config_gets_wrong_is_an_error_that_says_what(home: Path, text: str, message: str) -> None:
    config(home, text)

    with pytest.raises(SSHConfigError, match=message) as error:
        resolve_route(tunnel("hpc"))
    assert isinstance(error.value, BackendError)  # refused: the driver stops, saying it (never retried)


def test_a_named_ssh_config_that_does_not_exist_is_an_error(home: Path) -> None:
    with pytest.raises(
        SSHConfigError, match=r"SSH config file /nowhere/config \(SSHTunnel.ssh_config\) does not exist"
    ):
        resolve_route(tunnel("hpc", ssh_config="/nowhere/config"))


def test_include_is_read_in_place(home: Path) -> None:
    (home / ".ssh" / "config.d").mkdir()
    config(home, "Host hpc\n  HostName hpc.example.org\n", "config.d/hpc")
    config(home, "Host gpu\n  Port 2200\n", "config.d/zz-gpu")
    config(
        home,
        "Host gpu\n  User ada\n  Include config.d/*\n  HostName gpu.example.org\nHost *\n  User nobody\n",
    )

    assert resolve_route(tunnel("hpc")).where == "nobody@hpc.example.org:22"
    # the lines after an Include stay in the block it stood in
    assert resolve_route(tunnel("gpu")).where == "ada@gpu.example.org:2200"


def test_the_config_is_read_again_for_every_connection(home: Path) -> None:
    path = config(home, "Host hpc\n  Port 2200\n")
    t = tunnel("hpc", ssh_config=path)
    assert resolve_route(t).target.port == 2200

    config(home, "Host hpc\n  Port 2300\n")

    assert resolve_route(t).target.port == 2300


def test_the_port_left_to_the_config_is_none_and_round_trips_through_json() -> None:
    executor = run.SlurmExecutor(tunnel=tunnel("hpc", ssh_config="~/.ssh/hpc_config"))
    data = json.loads(serialization.dumps(serialization.unstructure_executor(executor)))

    assert (data["tunnel"]["port"], data["tunnel"]["ssh_config"]) == (None, "~/.ssh/hpc_config")
    assert serialization.structure_executor(data) == executor


def test_a_tunnel_stored_before_ssh_configs_still_loads_with_its_port() -> None:
    executor = run.SlurmExecutor(tunnel=tunnel("hpc", port=22))
    data = json.loads(serialization.dumps(serialization.unstructure_executor(executor)))
    del data["tunnel"]["ssh_config"]  # as an older runyard stored it: port 22, no ssh_config

    restored = serialization.structure_executor(data)

    assert restored.tunnel == run.SSHTunnel("hpc", port=22, job_dir="/jobs")
    assert restored.tunnel.cluster() == "ssh://@hpc:22"  # its identity as before: its jobs still chain


def test_the_cluster_identity_tells_a_port_left_to_the_config_from_one_given() -> None:
    assert tunnel("hpc").cluster() == "ssh://@hpc"
    assert tunnel("hpc", port=22).cluster() == "ssh://@hpc:22"
    assert tunnel("hpc", ssh_config="/c").cluster() == "ssh://@hpc?ssh_config=/c"
    assert (tunnel("hpc").describe(), tunnel("hpc", port=22).describe(), tunnel("hpc", port=2200).describe()) == (
        "hpc", "hpc", "hpc:2200",
    )  # fmt: skip


def test_the_cluster_defaults_leave_port_and_config_to_the_ssh_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNYARD_SLURM_HOST", "hpc")
    assert run.SlurmExecutor().tunnel == run.SSHTunnel("hpc", port=None, ssh_config=None)

    monkeypatch.setenv("RUNYARD_SLURM_SSH_CONFIG", "~/.ssh/hpc_config")
    assert run.SlurmExecutor().tunnel.ssh_config == "~/.ssh/hpc_config"  # type: ignore[union-attr]
