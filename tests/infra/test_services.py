"""The test bed works: the sshd, the Slurm cluster behind it and the Docker engine that
infra/start-services.sh starts, reached through the session fixtures of tests/conftest.py."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import paramiko
import pytest

if TYPE_CHECKING:
    from conftest import DockerEngine, SlurmCluster, SshServer


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


# ----------------------------------------------------------------------------------- slurm


def test_sinfo_over_ssh_lists_the_cpu_and_gpu_partitions(slurm_cluster: SlurmCluster) -> None:
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
