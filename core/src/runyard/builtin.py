"""Core's own defaults, registered as a plugin like any other (so plugins can override them)."""

from __future__ import annotations

from runyard.artifacts import LocalArtifactStore
from runyard.executor import Executor
from runyard.hookspecs import hookimpl
from runyard.logs import LocalFileLogSource, LogSource
from runyard.registries import ArtifactStoreRegistry

_local_logs = LocalFileLogSource()


@hookimpl(trylast=True)
def runyard_log_source(executor: Executor) -> LogSource | None:
    """Tasks whose runner writes into the task directory on this machine."""
    return _local_logs


@hookimpl
def runyard_register_artifact_stores(registry: ArtifactStoreRegistry) -> None:
    registry.add(LocalArtifactStore())
