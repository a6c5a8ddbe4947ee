"""runyard-slurm: the ``SlurmExecutor``, tasks as Slurm batch jobs over SSH (paramiko).

``run.SlurmExecutor``, ``run.SSHTunnel`` and ``run.LocalTunnel`` once installed.
"""

from __future__ import annotations

from runyard_slurm.executor import LocalTunnel, SlurmExecutor, SSHTunnel

__all__ = ["LocalTunnel", "SSHTunnel", "SlurmExecutor"]
