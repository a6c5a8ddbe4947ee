"""SlurmExecutor, SSHTunnel and LocalTunnel as values: exported names, validation, and the
round trip through the store's JSON (tunnels included)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import runyard as run
from runyard import serialization
from runyard.errors import ConfigError, ExecutorFieldError


@pytest.fixture(autouse=True)
def a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_SLURM_HOST", "login.example.org")
    monkeypatch.setenv("RUNYARD_SLURM_CONFIG", "/nonexistent/slurm.toml")


@pytest.mark.alone
def test_the_plugin_exports_its_three_names() -> None:
    from runyard_slurm import LocalTunnel, SlurmExecutor, SSHTunnel

    assert (run.SlurmExecutor, run.SSHTunnel, run.LocalTunnel) == (SlurmExecutor, SSHTunnel, LocalTunnel)


def test_the_spec_signature_holds() -> None:
    executor = run.SlurmExecutor(
        partition="gpu", nodes=2, gpus_per_node=4, ntasks_per_node=4, cpus_per_task=8, mem="64G",
        time="2:00:00", account="lab", qos="high", job_name="train", additional_parameters={"exclusive": True},
        tunnel=run.SSHTunnel("hpc", "ada", port=2222, identity="~/.ssh/id", known_hosts="~/.ssh/kh", job_dir="/j"),
        env_vars={"A": "1"}, python="/opt/py/bin/python3",
    )  # fmt: skip

    assert executor.kind == "slurm"
    assert executor.processes == 8
    assert executor.describe() == "slurm:gpu@ada@hpc:2222"


@pytest.mark.alone
@pytest.mark.parametrize("tunnel", ["ssh", "local"])
def test_an_executor_round_trips_through_json_with_its_tunnel(tunnel: str) -> None:
    chosen = (
        run.SSHTunnel("hpc", "ada", port=2200, job_dir="/scratch")
        if tunnel == "ssh"
        else run.LocalTunnel("/j")
    )
    executor = run.SlurmExecutor(
        partition="gpu", mem=4096, time=30, additional_parameters={"constraint": "a100", "exclusive": True},
        tunnel=chosen, env_vars={"X": "y"}, signal="USR1@90", launcher=run.Torchrun(nproc_per_node=2),
    )  # fmt: skip

    data = json.loads(serialization.dumps(serialization.unstructure_executor(executor)))

    assert data["tunnel"]["type"] == tunnel
    assert serialization.structure_executor(data) == executor


def test_an_unknown_field_names_the_valid_ones() -> None:
    with pytest.raises(ExecutorFieldError, match="gpus_per_node"):
        run.SlurmExecutor(gpus=4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"job_name": "two\nlines"}, "one line"),
        ({"partition": "gpu\n#SBATCH --qos=high"}, "one line"),
        ({"nodes": 0}, "nodes must be a whole number >= 1"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"mem": "lots"}, "mem must be"),
        ({"time": "soon"}, "time must be"),
        ({"additional_parameters": {"output": "/tmp/x"}}, "cannot set --output"),
        ({"additional_parameters": {"dependency": "afterok:1"}}, "dependencies="),
        ({"additional_parameters": {"bad name": "x"}}, "not an sbatch option name"),
        ({"additional_parameters": {"comment": "a\nb"}}, "one line"),
        ({"tunnel": "hpc"}, "SSHTunnel"),
        ({"signal": "USR1 at 90"}, r"signal must be a signal and a time in seconds like 'USR1@90'"),
        ({"signal": "NOPE@90"}, "'NOPE' is not a signal name or number"),
        ({"signal": "KILL@90"}, "SIGKILL cannot be caught"),
        ({"signal": "X:USR1@90"}, "optionally with Slurm's 'B:' or 'R:' prefix"),
        ({"signal": "USR1@70000"}, "at most 65535 seconds"),
        ({"additional_parameters": {"signal": "USR1@90"}}, "use the signal field"),
    ],
)
def test_a_bad_value_is_refused_when_the_executor_is_made(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run.SlurmExecutor(**fields)


def test_a_bad_value_is_refused_when_it_is_set() -> None:
    executor = run.SlurmExecutor()
    with pytest.raises(ConfigError, match="one line"):
        executor.job_name = "a\nb"


def test_a_bad_port_is_refused() -> None:
    with pytest.raises(ConfigError, match="port"):
        run.SSHTunnel("hpc", port=70000)


@pytest.mark.alone
def test_the_plugin_module_imports_no_paramiko() -> None:
    code = "import sys, runyard_slurm.plugin; print('paramiko' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
