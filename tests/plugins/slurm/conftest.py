"""tests/plugins/slurm: runyard-slurm against the real test cluster (docs/testing.md).

Needs core and runyard-slurm only (these tests also run in a venv holding just those), so
every experiment names its executor. Tasks run on the cluster through SSH; their code is
shipped from tests/ (``code=TESTS``), which is how ``taskdefs`` is importable there.

``cluster`` points the cluster defaults (RUNYARD_SLURM_*) at the test cluster, so
``run.SlurmExecutor()`` needs no tunnel, as in the guide, and caps the poll back-off at
``slurm_cluster.poll_max`` (2 s, not 10 s). After each test it cancels what
the test left live and removes the test's experiment folders from the cluster.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
from _slurm_helpers import Cluster, Relay
from helpers import end_everything
from runyard_slurm.tunnel import close_sessions


@pytest.fixture
def cluster(slurm_cluster: Any, monkeypatch: pytest.MonkeyPatch, runyard_home: str) -> Iterator[Cluster]:
    job_dir = os.path.join(slurm_cluster.job_dir, "plugin-tests")
    env = {
        "RUNYARD_SLURM_HOST": slurm_cluster.host,
        "RUNYARD_SLURM_PORT": str(slurm_cluster.port),
        "RUNYARD_SLURM_USER": slurm_cluster.user,
        "RUNYARD_SLURM_KEY": slurm_cluster.key,
        "RUNYARD_SLURM_KNOWN_HOSTS": slurm_cluster.known_hosts,
        "RUNYARD_SLURM_JOB_DIR": job_dir,
        "RUNYARD_SLURM_CONFIG": os.path.join(runyard_home, "no-such-slurm.toml"),
        "RUNYARD_SLURM_POLL_MAX": str(slurm_cluster.poll_max),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("RUNYARD_SLURM_PARTITION", "RUNYARD_SLURM_ACCOUNT", "RUNYARD_SLURM_QOS"):
        monkeypatch.delenv(name, raising=False)
    c = Cluster(slurm_cluster, job_dir)
    yield c
    # leave nothing behind: cancel what is live, then remove the experiments' folders there
    for experiment_id in end_everything(runyard_home):
        c.sh(f"rm -rf {shlex.quote(job_dir + '/' + experiment_id)}")


@pytest.fixture
def relay(cluster: Cluster) -> Iterator[Relay]:
    """A relay in front of the test sshd (``_slurm_helpers.Relay``), to fail the network on cue;
    executors reach the cluster through it with ``port=relay.port`` (and a known_hosts file
    listing the sshd's key for that port: ``test_slurm_connection.known_hosts_for``)."""
    r = Relay((cluster.facts.host, cluster.facts.port))
    r.start()
    yield r
    r.stop()
    close_sessions()
