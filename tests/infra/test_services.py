"""The test bed works: the sshd, the bastion and the login node only it reaches, the Slurm
cluster behind them, the Docker engine, the torch venv and the Ray head that
infra/start-services.sh starts, reached through the fixtures of tests/conftest.py."""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import paramiko
import pytest
from runyard.store import pid_alive

if TYPE_CHECKING:
    from conftest import Bastion, DockerEngine, RayHead, SlurmCluster, SshServer

REPO = Path(__file__).resolve().parents[2]
RAY_HEAD_SCRIPT = str(REPO / "infra" / "ray-head.sh")


@contextlib.contextmanager
def ssh_session(server: SshServer, host_keys: str | None = None) -> Iterator[paramiko.SSHClient]:
    """A paramiko session that accepts only a host key listed in known_hosts."""
    client = paramiko.SSHClient()
    client.load_host_keys(server.known_hosts if host_keys is None else host_keys)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            server.host,
            port=server.port,
            username=server.user,
            key_filename=server.key,
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
        yield client
    finally:
        client.close()


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=30)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


# ------------------------------------------------------------------------------------- ssh


def test_ssh_login_checks_the_host_key_against_known_hosts(ssh_server: SshServer) -> None:
    with ssh_session(ssh_server) as client:
        assert run(client, "whoami") == (0, f"{ssh_server.user}\n", "")


def test_ssh_login_is_rejected_when_the_host_key_is_unknown(ssh_server: SshServer, tmp_path: Path) -> None:
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        with ssh_session(ssh_server, host_keys=str(empty_known_hosts)):
            pass


def test_remote_shell_has_python3_and_the_clusters_slurm_conf(slurm_cluster: SlurmCluster) -> None:
    with ssh_session(slurm_cluster.ssh) as client:
        rc, out, err = run(client, "python3 -c 'import sys; print(sys.version_info[0])'; echo $SLURM_CONF")
    assert (rc, out.split(), err) == (0, ["3", slurm_cluster.slurm_conf], "")


# --------------------------------------------------------------------------------- bastion


def strict_client(known_hosts: str) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


@contextlib.contextmanager
def through_the_bastion(b: Bastion) -> Iterator[tuple[paramiko.SSHClient, paramiko.SSHClient]]:
    """ProxyJump by hand: a session on the bastion, and one on the login node behind it over a
    direct-tcpip channel of the first; both host keys checked against known_hosts."""
    jump, behind = strict_client(b.known_hosts), strict_client(b.known_hosts)
    login = {
        "username": b.user,
        "key_filename": b.key,
        "allow_agent": False,
        "look_for_keys": False,
        "timeout": 10,
    }
    try:
        jump.connect(b.host, port=b.port, **login)
        transport = jump.get_transport()
        assert transport is not None
        channel = transport.open_channel("direct-tcpip", (b.target_host, b.target_port), ("127.0.0.1", 0))
        behind.connect(b.target_host, port=b.target_port, sock=channel, **login)
        yield jump, behind
    finally:
        behind.close()
        jump.close()


def test_the_login_node_behind_the_bastion_refuses_a_direct_connection_and_answers_through_it(
    bastion: Bastion, slurm_cluster: SlurmCluster
) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((bastion.target_host, bastion.target_port), timeout=5)
    with through_the_bastion(bastion) as (_, behind):
        rc, out, err = run(behind, "echo $SLURM_CONF; sinfo -h -o %P")
    assert rc == 0, err
    conf, *partitions = out.split()
    assert conf == slurm_cluster.slurm_conf
    assert f"{slurm_cluster.default_partition}*" in partitions


def test_the_bastion_runs_no_commands_and_forwards_only_to_the_login_node_behind_it(bastion: Bastion) -> None:
    with through_the_bastion(bastion) as (jump, _):
        rc, out, err = run(jump, "true")
        assert (rc, out) == (1, "")
        assert "this is the bastion, a jump host (ProxyJump): it runs no commands" in err
        transport = jump.get_transport()
        assert transport is not None
        with pytest.raises(paramiko.ChannelException, match="Administratively prohibited"):
            transport.open_channel(
                "direct-tcpip", ("127.0.0.1", int(os.environ["RUNYARD_TEST_SSH_PORT"])), ("127.0.0.1", 0)
            )


def test_openssh_reaches_the_login_node_behind_the_bastion_with_the_beds_ssh_config(
    bastion: Bastion, slurm_cluster: SlurmCluster
) -> None:
    ssh = ["ssh", "-F", bastion.ssh_config]
    through = subprocess.run(
        [*ssh, "runyard-behind", "sinfo -h -o %P"], capture_output=True, text=True, timeout=60
    )
    assert through.returncode == 0, through.stderr
    assert f"{slurm_cluster.default_partition}*" in through.stdout.split()
    direct = subprocess.run(
        [*ssh, "-o", "ProxyJump=none", "runyard-behind", "true"], capture_output=True, text=True, timeout=60
    )
    assert direct.returncode == 255 and "Connection refused" in direct.stderr, direct.stderr


def test_the_bastion_listens_on_loopback_and_the_login_node_behind_it_in_a_network_of_its_own(
    bastion: Bastion,
) -> None:
    state = os.environ.get("RUNYARD_INFRA_DIR", "/tmp/runyard-infra")
    jump, behind = (
        Path(f"{state}/bastion/{name}.pid").read_text().strip() for name in ("bastion", "cluster")
    )
    for pid in (jump, behind):
        assert os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "socat"
    assert sorted(a for a, pids in listeners().items() if int(jump) in pids) == [
        f"{bastion.host}:{bastion.port}"
    ]
    assert os.readlink(f"/proc/{jump}/ns/net") == os.readlink("/proc/self/ns/net")
    assert os.readlink(f"/proc/{behind}/ns/net") != os.readlink("/proc/self/ns/net")
    inside = subprocess.run(
        ["nsenter", f"--net=/proc/{behind}/ns/net", "ss", "-Hltnp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line.split()[3] for line in inside.splitlines()] == [
        f"{bastion.target_host}:{bastion.target_port}"
    ]


# ----------------------------------------------------------------------------------- slurm


def test_sinfo_over_ssh_lists_every_partition(slurm_cluster: SlurmCluster) -> None:
    with ssh_session(slurm_cluster.ssh) as client:
        rc, out, err = run(client, "sinfo -h -o %P")
    assert rc == 0, err
    assert sorted(out.split()) == sorted(
        p + "*" if p == slurm_cluster.default_partition else p for p in slurm_cluster.partitions
    )


def test_gpu_partition_offers_the_fake_gpus_as_gres(slurm_cluster: SlurmCluster) -> None:
    with ssh_session(slurm_cluster.ssh) as client:
        rc, out, err = run(client, f"sinfo -h -p {slurm_cluster.gpu_partition} -o %G")
    assert (rc, out.strip(), err) == (0, f"gpu:{slurm_cluster.gpus}", "")


def test_sbatch_over_ssh_runs_a_job_to_completed_and_sacct_records_it(slurm_cluster: SlurmCluster) -> None:
    job_dir = tempfile.mkdtemp(prefix="infra-", dir=slurm_cluster.job_dir)
    job_id = ""
    state = ""
    try:
        with ssh_session(slurm_cluster.ssh) as client:
            rc, out, err = run(
                client,
                f"sbatch --parsable -p {slurm_cluster.default_partition} -D {shlex.quote(job_dir)}"
                " -o job-%j.out --wrap 'python3 -c \"print(6 * 7)\"'",
            )
            assert rc == 0, err
            job_id = out.strip()
            assert job_id.isdigit()
            deadline = time.monotonic() + 30  # sacct lags a few seconds behind the end of a job
            while state != "COMPLETED" and time.monotonic() < deadline:
                time.sleep(0.3)
                state = run(client, f"sacct -X -n -P -j {job_id} -o State")[1].strip()
            assert state == "COMPLETED"
        with open(os.path.join(job_dir, f"job-{job_id}.out")) as f:
            assert f.read() == "42\n"
    finally:
        if job_id and state != "COMPLETED":
            with ssh_session(slurm_cluster.ssh) as client:
                run(client, f"scancel {job_id}")
        shutil.rmtree(job_dir, ignore_errors=True)


def partitions(client: paramiko.SSHClient) -> dict[str, dict[str, str]]:
    """``scontrol show partition``: name -> its Key=Value fields."""
    rc, out, err = run(client, "scontrol -o show partition")
    assert rc == 0, err
    found = {}
    for line in out.splitlines():
        fields = dict(word.partition("=")[::2] for word in line.split() if "=" in word)
        found[fields["PartitionName"]] = fields
    return found


def test_both_nodes_are_up_on_this_machine_and_the_one_node_partitions_hold_the_first(
    slurm_cluster: SlurmCluster,
) -> None:
    c = slurm_cluster
    with ssh_session(c.ssh) as client:
        rc, out, err = run(client, "sinfo -h -N -o '%N %t %P'")
        assert rc == 0, err
        states = {n: set() for n in c.nodes}
        on = {p: set() for p in c.partitions}
        for line in out.splitlines():
            node, state, partition = line.split()
            states[node].add(state)
            on[partition.rstrip("*")].add(node)
        addresses = {n: run(client, f"scontrol -o show node {n}")[1] for n in c.nodes}
    assert c.nodes == ("node1", "node2")
    for node in c.nodes:  # other tests' jobs may be running there: any state but down or drained
        assert states[node] <= {"idle", "mix", "alloc", "comp"} and states[node], (node, states[node])
        assert "NodeAddr=127.0.0.1 " in addresses[node]
    assert on[c.default_partition] == on[c.gpu_partition] == {"node1"}
    assert on[c.multi_partition] == {"node1", "node2"}
    assert on[c.low_partition] == on[c.high_partition] == {"node2"}


def test_only_the_low_partition_is_preemptible_and_the_high_one_outranks_it(
    slurm_cluster: SlurmCluster,
) -> None:
    c = slurm_cluster
    with ssh_session(c.ssh) as client:
        found = partitions(client)
    modes = {name: fields["PreemptMode"] for name, fields in found.items()}
    assert modes == {name: "REQUEUE" if name == c.low_partition else "OFF" for name in c.partitions}
    assert (found[c.low_partition]["PriorityTier"], found[c.high_partition]["PriorityTier"]) == ("1", "10")


def wait_for_state(client: paramiko.SSHClient, job_id: str, states: set[str], timeout: float = 60) -> str:
    """Polls ``squeue`` until the job is in one of ``states`` (a loose guard against a hang)."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = run(client, f"squeue -h -t all -j {job_id} -o %T")[1].strip()
        if state in states:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {state or 'unknown'}, not {states}, after {timeout}s")


def test_a_two_node_job_runs_one_task_on_each_node(slurm_cluster: SlurmCluster) -> None:
    c = slurm_cluster
    job_dir = tempfile.mkdtemp(prefix="infra-", dir=c.job_dir)
    try:
        with ssh_session(c.ssh) as client:
            rc, out, err = run(
                client,
                f"sbatch --parsable -p {c.multi_partition} --nodes=2 --ntasks-per-node=1"
                f" -D {shlex.quote(job_dir)} -o job-%j.out"
                """ --wrap "srun bash -c 'echo \\$SLURM_PROCID \\$SLURMD_NODENAME'\"""",
            )
            assert rc == 0, err
            job_id = out.strip()
            wait_for_state(client, job_id, {"COMPLETED", "FAILED", "CANCELLED"})
        with open(os.path.join(job_dir, f"job-{job_id}.out")) as f:
            assert sorted(f.read().splitlines()) == ["0 node1", "1 node2"]
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def test_a_job_of_the_high_partition_requeues_a_job_of_the_low_one(slurm_cluster: SlurmCluster) -> None:
    """Preemption on cue: the low job runs, a high job takes the node, the low one goes back to
    the queue (Slurm lets it start again ~120 s later); sacct -D shows its run PREEMPTED."""
    c = slurm_cluster
    low = high = ""
    with ssh_session(c.ssh) as client:
        try:
            rc, out, err = run(
                client, f"sbatch --parsable -p {c.low_partition} --requeue -o /dev/null --wrap 'sleep 300'"
            )
            assert rc == 0, err
            low = out.strip()
            wait_for_state(client, low, {"RUNNING"})
            rc, out, err = run(
                client, f"sbatch --parsable -p {c.high_partition} --exclusive -o /dev/null --wrap 'sleep 1'"
            )
            assert rc == 0, err
            high = out.strip()
            assert wait_for_state(client, low, {"PENDING"}) == "PENDING"
            wait_for_state(client, high, {"COMPLETED"})
            deadline = time.monotonic() + 30  # sacct lags a few seconds behind
            runs: list[str] = []
            while runs[:1] != ["PREEMPTED"] and time.monotonic() < deadline:
                time.sleep(0.3)
                runs = run(client, f"sacct -X -D -n -P -j {low} -o State")[1].split()
            assert runs[:1] == [
                "PREEMPTED"
            ]  # its first run; the second is pending (sacct may not list it yet)
            assert " Restarts=1 " in run(client, f"scontrol -o show job {low}")[1]
        finally:
            run(client, f"scancel {low} {high}")


# ------------------------------------------------------------------------------- listeners


def test_every_daemon_of_the_bed_listens_on_loopback_only(slurm_cluster: SlurmCluster) -> None:
    state = os.environ.get("RUNYARD_INFRA_DIR", "/tmp/runyard-infra")
    pid_files = [
        f"{state}/ssh/sshd.pid", f"{state}/mysql/mysqld.pid", f"{state}/slurm/slurmdbd.pid",
        f"{state}/slurm/slurmctld.pid", *sorted(glob.glob(f"{state}/slurm/slurmd-*.pid")),
    ]  # fmt: skip
    pids = {open(p).read().strip(): os.path.basename(p) for p in pid_files}
    assert len(pids) == 6  # sshd, mariadbd, slurmdbd, slurmctld and a slurmd per node
    listening: dict[str, list[str]] = {pid: [] for pid in pids}
    ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    for line in ss.splitlines():
        local = line.split()[3]
        for pid in re.findall(r"pid=(\d+)", line):
            if pid in listening:
                listening[pid].append(local)
    for pid, name in pids.items():
        assert listening[pid], f"{name}: pid {pid} listens nowhere"
        assert all(a.startswith("127.") for a in listening[pid]), (name, listening[pid])


# ----------------------------------------------------------------------------------- torch


def test_the_torch_venv_imports_torch_and_is_none_of_runyards_dependencies(torch_python: str) -> None:
    done = subprocess.run(
        [torch_python, "-c", "import sys, torch, numpy; print(torch.__version__, sys.prefix)"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    version, prefix = done.stdout.split()
    assert version.startswith("2.13.0")
    assert os.path.realpath(prefix) != os.path.realpath(
        sys.prefix
    )  # not the project's venv: uv sync would empty it
    for dist in ("runyard", "runyard-slurm", "runyard-local", "runyard-docker", "runyard-mixed-precision"):
        assert not [r for r in importlib.metadata.requires(dist) or [] if r.lower().startswith("torch")]


# ---------------------------------------------------------------------------------- docker


@pytest.fixture
def containers(docker_engine: DockerEngine) -> Iterator[tuple[docker.DockerClient, dict[str, str]]]:
    """A Docker client and a label unique to this test; its containers are removed afterwards."""
    client = docker.DockerClient(base_url=docker_engine.docker_host)
    label = {"runyard-test": f"infra-{uuid.uuid4().hex}"}
    try:
        yield client, label
    finally:
        for c in client.containers.list(all=True, filters={"label": f"runyard-test={label['runyard-test']}"}):
            c.remove(force=True)
        client.close()


def test_container_of_the_test_image_prints_python3s_version_and_leaves_nothing(
    docker_engine: DockerEngine, containers: tuple[docker.DockerClient, dict[str, str]]
) -> None:
    client, label = containers
    out = client.containers.run(docker_engine.image, ["python3", "--version"], labels=label, remove=True)
    assert re.fullmatch(rb"Python 3\.\d+\.\d+\n", out)
    assert client.containers.list(all=True, filters={"label": f"runyard-test={label['runyard-test']}"}) == []


def test_the_test_image_has_bash(
    docker_engine: DockerEngine, containers: tuple[docker.DockerClient, dict[str, str]]
) -> None:
    client, label = containers
    out = client.containers.run(
        docker_engine.image, ["bash", "-c", "echo $BASH_VERSION"], labels=label, remove=True
    )
    assert re.fullmatch(rb"5\.\S+\n", out)


# ------------------------------------------------------------------------------------- ray

RAY_VERSION = "2.60.0"
RUNYARD_DISTS = ("runyard", "runyard-slurm", "runyard-local", "runyard-docker", "runyard-mixed-precision")


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


def run_ray_job(address: str, entrypoint: str, timeout: float = 120) -> tuple[dict[str, object], str]:
    """Submits a job over the Jobs API's REST interface and polls it to its end: (its info, its logs)."""
    body = json.dumps({"entrypoint": entrypoint}).encode()
    submit = urllib.request.Request(f"{address}/api/jobs/", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(submit, timeout=30) as answer:
        job = json.load(answer)["submission_id"]
    deadline = time.monotonic() + timeout  # guards against a hang only
    while True:
        info = get_json(f"{address}/api/jobs/{job}")
        assert isinstance(info, dict)
        if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    logs = get_json(f"{address}/api/jobs/{job}/logs")
    assert isinstance(logs, dict)
    return info, logs["logs"]


def test_the_ray_head_runs_a_job_submitted_with_rays_own_cli_and_its_python3_is_the_ray_venvs(
    ray_address: str, ray_python: str
) -> None:
    version = get_json(f"{ray_address}/api/version")
    assert isinstance(version, dict) and version["ray_version"] == RAY_VERSION
    job = f"infra-{uuid.uuid4().hex[:12]}"
    ray = os.path.join(os.path.dirname(ray_python), "ray")
    entrypoint = "import sys; print(6 * 7, sys.version_info >= (3, 10), sys.prefix)"
    done = subprocess.run(
        [ray, "job", "submit", "--submission-id", job, "--", "python3", "-c", entrypoint],
        env={**os.environ, "RAY_ADDRESS": ray_address, "RAY_USAGE_STATS_ENABLED": "0"},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    prefix = os.path.dirname(os.path.dirname(ray_python))
    assert f"\n42 True {prefix}\n" in done.stdout  # the CLI follows the job's log to its end
    info = get_json(f"{ray_address}/api/jobs/{job}")
    assert isinstance(info, dict) and (info["status"], info["driver_exit_code"]) == ("SUCCEEDED", 0)
    # the driver's log lies in Ray's temp dir, among the session's logs
    logs = Path(os.environ["RUNYARD_TEST_RAY_TEMP"]) / "session_latest" / "logs"
    assert f"42 True {prefix}\n" in (logs / f"job-driver-{job}.log").read_text()


def test_a_failing_ray_job_ends_failed_with_its_exit_code(ray_address: str) -> None:
    info, logs = run_ray_job(ray_address, "python3 -c 'import sys; print(\"bye\"); sys.exit(3)'")
    assert (info["status"], info["driver_exit_code"]) == ("FAILED", 3)
    assert "bye\n" in logs


def ray_head_pids(state_dir: str) -> set[int]:
    """The processes of the Ray head of ``state_dir``, as infra/ray-head.sh finds them (and stops them)."""
    done = subprocess.run(
        ["bash", RAY_HEAD_SCRIPT, "pids", state_dir], capture_output=True, text=True, check=True
    )
    return {int(p) for p in done.stdout.split()}


def listeners() -> dict[str, set[int]]:
    """``ss -Hltnp``: every TCP listening address (host:port), and the PIDs that hold it."""
    ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3]: {int(p) for p in re.findall(r"pid=(\d+)", line)} for line in ss.splitlines()}


def on_loopback(local: str) -> bool:
    """127.0.0.0/8, also as an IPv4-mapped IPv6 address ([::ffff:127.0.0.1]:port, as gRPC binds)."""
    host = local.rsplit(":", 1)[0].strip("[]")
    return host.removeprefix("::ffff:").startswith("127.") or host == "::1"


def test_every_listener_of_the_ray_head_is_on_loopback_on_a_port_of_its_own(ray_address: str) -> None:
    """Found by PID (ss -ltnp): every socket of every process of the head, daemons and workers."""
    base = int(ray_address.rsplit(":", 1)[1])
    head = ray_head_pids(os.path.dirname(os.environ["RUNYARD_TEST_RAY_TEMP"]))
    assert len(head) >= 10  # gcs_server, raylet, the dashboard and its modules, agents, monitors
    found = listeners()
    mine = sorted(a for a, pids in found.items() if pids & head)
    assert mine and all(on_loopback(a) for a in mine), mine
    ports = {int(a.rsplit(":", 1)[1]) for a in mine}
    fixed = set(range(base, base + 11))  # dashboard, GCS, client server, raylet ... dashboard metrics
    assert fixed <= ports and ports <= fixed | set(range(base + 20, base + 100)), sorted(ports)
    # and only the head's processes hold those ports: ray-head.sh finds every process that listens
    for address, pids in found.items():
        assert int(address.rsplit(":", 1)[1]) not in fixed or pids <= head, (address, pids)


def test_the_ray_venv_has_ray_and_is_none_of_runyards_dependencies(ray_python: str) -> None:
    done = subprocess.run(
        [ray_python, "-c", "import sys, importlib.metadata as m; print(m.version('ray'), sys.prefix)"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    version, prefix = done.stdout.split()
    assert version == RAY_VERSION
    assert os.path.realpath(prefix) != os.path.realpath(sys.prefix)  # not the project's venv
    with pytest.raises(importlib.metadata.PackageNotFoundError):  # (tests/plugins/ray is no `ray`)
        importlib.metadata.distribution("ray")
    assert not re.search(r'^name = "ray"$', (REPO / "uv.lock").read_text(), re.M)
    for dist in RUNYARD_DISTS:
        assert not [r for r in importlib.metadata.requires(dist) or [] if re.match(r"ray\b", r.lower())]


@pytest.mark.slow
def test_a_tests_own_ray_head_stops_answering_when_killed_and_answers_again_when_started(
    own_ray_head: RayHead,
) -> None:
    head = own_ray_head
    before = get_json(f"{head.address}/api/version")
    assert isinstance(before, dict) and head.answers()
    pids = head.pids()
    assert len(pids) >= 10
    head.kill()
    assert not head.answers()
    assert head.pids() == [] and not [p for p in pids if pid_alive(p)]
    head.start()  # the same ports again
    after = get_json(f"{head.address}/api/version")
    assert isinstance(after, dict) and after["session_name"] != before["session_name"]
    info, logs = run_ray_job(head.address, "python3 -c 'print(6 * 7)'")
    assert info["status"] == "SUCCEEDED" and logs.endswith("42\n")
