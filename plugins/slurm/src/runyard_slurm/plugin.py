"""Hook implementations of runyard-slurm (entry point ``runyard.plugins: slurm``).

Light to import: paramiko and the backend load only when a Slurm task is launched, polled
or read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runyard.hookspecs import hookimpl

if TYPE_CHECKING:
    from runyard.executor import Executor
    from runyard.logs import LogSource
    from runyard.registries import ArtifactStoreRegistry, ExecutorRegistry


@hookimpl
def runyard_register_executors(registry: ExecutorRegistry) -> None:
    from runyard_slurm.backend import SlurmBackend
    from runyard_slurm.executor import SlurmExecutor

    registry.add(SlurmExecutor, SlurmBackend)


_log_source: LogSource | None = None


@hookimpl
def runyard_log_source(executor: Executor) -> LogSource | None:
    """Output of tasks that ran on a ``SlurmExecutor``: over SFTP (or locally for LocalTunnel)."""
    global _log_source
    if getattr(executor, "kind", None) != "slurm":
        return None
    if _log_source is None:
        from runyard_slurm.logs import SlurmLogSource

        _log_source = SlurmLogSource()
    return _log_source


@hookimpl
def runyard_register_artifact_stores(registry: ArtifactStoreRegistry) -> None:
    from runyard_slurm.artifacts import SlurmArtifactStore

    registry.add(SlurmArtifactStore())
