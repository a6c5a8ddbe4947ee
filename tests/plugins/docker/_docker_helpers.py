"""Helpers of the tests in tests/plugins/docker (imported as ``_docker_helpers``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import helpers
import runyard as run

LABEL = "runyard.experiment"


def until(predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.05) -> Any:
    """``helpers.until`` with this folder's longer default timeout (a container or a job takes time)."""
    return helpers.until(predicate, what, timeout, interval)


def task(exp: run.Experiment, task_id: str) -> Any:
    return next(t for t in exp.tasks if t.id == task_id)


def containers_of(client: Any, experiment_id: str) -> list[Any]:
    """Every container (running or not) of an experiment, by its label."""
    return client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL}={experiment_id}"})
