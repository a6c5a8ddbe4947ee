"""Hook implementations of runyard-ray (entry point ``runyard.plugins: ray``).

Light to import: the backend (and its HTTP client) loads only when a Ray task is launched,
polled or read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runyard.hookspecs import hookimpl

if TYPE_CHECKING:
    from runyard.executor import Executor
    from runyard.logs import LogSource
    from runyard.registries import ExecutorRegistry


@hookimpl
def runyard_register_executors(registry: ExecutorRegistry) -> None:
    from runyard_ray.backend import RayBackend
    from runyard_ray.executor import RayExecutor

    registry.add(RayExecutor, RayBackend)


_log_source: LogSource | None = None


@hookimpl
def runyard_log_source(executor: Executor) -> LogSource | None:
    """Output of tasks that ran on a ``RayExecutor``: brought home from the job's log."""
    global _log_source
    if getattr(executor, "kind", None) != "ray":
        return None
    if _log_source is None:
        from runyard_ray.logs import RayLogSource

        _log_source = RayLogSource()
    return _log_source
