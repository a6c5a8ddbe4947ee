"""Hook implementations of runyard-local (entry point ``runyard.plugins: local``)."""

from __future__ import annotations

from runyard.hookspecs import hookimpl
from runyard.registries import ExecutorRegistry


@hookimpl
def runyard_register_executors(registry: ExecutorRegistry) -> None:
    from runyard_local.backend import LocalBackend
    from runyard_local.executor import LocalExecutor

    registry.add(LocalExecutor, LocalBackend)
