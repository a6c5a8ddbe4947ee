"""runyard-docker: the ``DockerExecutor``, tasks in containers on a Docker engine."""

from __future__ import annotations

from runyard_docker.executor import DockerExecutor

__all__ = ["DockerExecutor"]
