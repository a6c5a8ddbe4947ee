"""Hook implementations of runyard-ray (entry point ``runyard.plugins: ray``).

Light to import: the backend (and its HTTP client) loads only when a Ray task is launched,
polled or read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runyard.hookspecs import hookimpl
from runyard.logs import log_source_of

if TYPE_CHECKING:
    from runyard.logs import LogSource
    from runyard.registries import ExecutorRegistry


@hookimpl
def runyard_register_executors(registry: ExecutorRegistry) -> None:
    from runyard_ray.backend import RayBackend
    from runyard_ray.executor import RayExecutor

    registry.add(RayExecutor, RayBackend)


def _log_source() -> LogSource:
    """Output of tasks that ran on a ``RayExecutor``: brought home from the job's log."""
    from runyard_ray.logs import RayLogSource

    return RayLogSource()


runyard_log_source = hookimpl(log_source_of("ray", _log_source))
