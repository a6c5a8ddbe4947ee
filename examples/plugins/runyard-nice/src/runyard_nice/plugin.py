"""Hook implementations of runyard-nice (entry point ``runyard.plugins: nice``).

runyard imports this module whenever it builds its plugin manager, so it imports nothing
but the hook marker at the top: the executor and backend are imported when registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runyard.hookspecs import hookimpl

if TYPE_CHECKING:
    from runyard.registries import ExecutorRegistry


@hookimpl
def runyard_register_executors(registry: ExecutorRegistry) -> None:
    from runyard_nice.backend import NiceBackend
    from runyard_nice.executor import NiceExecutor

    registry.add(NiceExecutor, NiceBackend)
