"""Hook implementations of runyard-slurm (entry point ``runyard.plugins: slurm``).

Light to import: paramiko and the backend load only when a Slurm task is launched, polled
or read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runyard.hookspecs import hookimpl
from runyard.logs import log_source_of

if TYPE_CHECKING:
    from runyard.logs import LogSource
    from runyard.registries import ArtifactStoreRegistry, ExecutorRegistry


@hookimpl
def runyard_register_executors(registry: ExecutorRegistry) -> None:
    from runyard_slurm.backend import SlurmBackend
    from runyard_slurm.executor import SlurmExecutor

    registry.add(SlurmExecutor, SlurmBackend)


def _log_source() -> LogSource:
    """Output of tasks that ran on a ``SlurmExecutor``: over SFTP (or locally for LocalTunnel)."""
    from runyard_slurm.logs import SlurmLogSource

    return SlurmLogSource()


runyard_log_source = hookimpl(log_source_of("slurm", _log_source))


@hookimpl
def runyard_register_artifact_stores(registry: ArtifactStoreRegistry) -> None:
    from runyard_slurm.artifacts import SlurmArtifactStore

    registry.add(SlurmArtifactStore())
