"""Small helpers shared by the tests in tests/core (imported as ``_core_helpers``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from helpers import group_members, session_members, until

__all__ = ["group_members", "session_members", "task", "wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned); fail the test after ``timeout``."""
    return until(predicate, what, timeout, interval)


def task(exp: Any, task_id: str) -> Any:
    """The current view of one task."""
    for t in exp.tasks:
        if t.id == task_id:
            return t
    raise AssertionError(f"no task {task_id!r} in {exp.experiment_id}")


def tree_gone(runner_pid: int, timeout: float = 15.0) -> bool:
    """Whether every process of a local task (the session its runner ``runner_pid`` leads) is
    gone within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while session_members(runner_pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None
