"""Hook implementations of runyard-docker (entry point ``runyard.plugins: docker``).

Light on purpose: the docker SDK (~200 ms to import) is imported only by the backend,
when a task is launched or looked at.
"""

from __future__ import annotations

from runyard.hookspecs import hookimpl
from runyard.registries import ExecutorRegistry


@hookimpl
def runyard_register_executors(registry: ExecutorRegistry) -> None:
    from runyard_docker.backend import DockerBackend
    from runyard_docker.executor import DockerExecutor

    registry.add(DockerExecutor, DockerBackend)
