"""Helpers of the tests in tests/plugins/docker (imported as ``_docker_helpers``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import runyard as run

LABEL = "runyard.experiment"


def until(predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.05) -> Any:
    """Wait for ``predicate()`` to be true; its value, or an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def task(exp: run.Experiment, task_id: str) -> Any:
    return next(t for t in exp.tasks if t.id == task_id)


def containers_of(client: Any, experiment_id: str) -> list[Any]:
    """Every container (running or not) of an experiment, by its label."""
    return client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL}={experiment_id}"})
