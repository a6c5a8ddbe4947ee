"""Cluster defaults: from RUNYARD_SLURM_* variables or a slurm.toml file, so that the guide's
``run.SlurmExecutor(partition="gpu", nodes=2, gpus_per_node=4)`` needs no tunnel."""

from __future__ import annotations

from pathlib import Path

import pytest
import runyard as run
from runyard.errors import ConfigError
from runyard_slurm.config import config_path, load_defaults

VARIABLES = ("HOST", "USER", "PORT", "KEY", "KNOWN_HOSTS", "TRUST_NEW_HOST", "JOB_DIR", "PARTITION",
             "ACCOUNT", "QOS", "POLL_MAX", "CONFIG")  # fmt: skip


@pytest.fixture(autouse=True)
def no_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RUNYARD_SLURM_* from the environment, and no config file unless a test writes one."""
    for name in VARIABLES:
        monkeypatch.delenv(f"RUNYARD_SLURM_{name}", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.alone
def test_environment_variables_give_the_executor_its_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"HOST": "login.example.org", "USER": "ada", "PORT": "2200", "KEY": "/keys/id",
                        "KNOWN_HOSTS": "/keys/known", "JOB_DIR": "/scratch/ada/jobs",
                        "PARTITION": "batch"}.items():  # fmt: skip
        monkeypatch.setenv(f"RUNYARD_SLURM_{name}", value)

    executor = run.SlurmExecutor(partition="gpu", nodes=2, gpus_per_node=4)

    assert executor.tunnel == run.SSHTunnel(
        "login.example.org", "ada", port=2200, identity="/keys/id", known_hosts="/keys/known",
        job_dir="/scratch/ada/jobs",
    )  # fmt: skip
    assert (executor.partition, executor.nodes, executor.gpus_per_node) == ("gpu", 2, 4)


def test_the_default_partition_applies_when_the_executor_names_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_SLURM_PARTITION", "batch")

    assert run.SlurmExecutor().partition == "batch"
    assert run.SlurmExecutor(partition="gpu").partition == "gpu"


@pytest.mark.alone
def test_a_config_file_gives_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "slurm.toml"
    path.write_text(
        'host = "hpc.example.org"\nuser = "ada"\nport = 22\njob_dir = "/scratch/jobs"\nqos = "high"\n'
    )
    monkeypatch.setenv("RUNYARD_SLURM_CONFIG", str(path))

    executor = run.SlurmExecutor()

    assert executor.tunnel == run.SSHTunnel("hpc.example.org", "ada", port=22, job_dir="/scratch/jobs")
    assert executor.qos == "high"


def test_the_config_file_is_found_in_the_runyard_home(
    monkeypatch: pytest.MonkeyPatch, runyard_home: str
) -> None:
    Path(runyard_home).mkdir(parents=True, exist_ok=True)
    (Path(runyard_home) / "slurm.toml").write_text('host = "home.example.org"\n')

    assert config_path() == str(Path(runyard_home) / "slurm.toml")
    assert load_defaults().host == "home.example.org"


def test_an_environment_variable_beats_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "slurm.toml"
    path.write_text('host = "from-file"\npartition = "file-partition"\n')
    monkeypatch.setenv("RUNYARD_SLURM_CONFIG", str(path))
    monkeypatch.setenv("RUNYARD_SLURM_HOST", "from-env")

    defaults = load_defaults()

    assert (defaults.host, defaults.partition) == ("from-env", "file-partition")


def test_an_unknown_key_in_the_config_file_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "slurm.toml"
    path.write_text('hostname = "typo"\n')
    monkeypatch.setenv("RUNYARD_SLURM_CONFIG", str(path))

    with pytest.raises(ConfigError, match=r"unknown key.*hostname"):
        load_defaults()


def test_a_bad_value_is_an_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_SLURM_PORT", "twenty-two")

    with pytest.raises(ConfigError, match="RUNYARD_SLURM_PORT"):
        load_defaults()


def test_without_a_configured_host_slurm_is_on_this_machine() -> None:
    assert isinstance(run.SlurmExecutor().tunnel, run.LocalTunnel)


def test_host_local_means_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_SLURM_HOST", "local")
    monkeypatch.setenv("RUNYARD_SLURM_JOB_DIR", "/shared/jobs")

    assert run.SlurmExecutor().tunnel == run.LocalTunnel(job_dir="/shared/jobs")


def test_trusting_new_hosts_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_SLURM_HOST", "h")
    assert run.SlurmExecutor().tunnel.trust_new_host is False

    monkeypatch.setenv("RUNYARD_SLURM_TRUST_NEW_HOST", "1")
    assert run.SlurmExecutor().tunnel.trust_new_host is True
