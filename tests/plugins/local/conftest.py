"""tests/plugins/local: the local executor with real processes (sessions, groups, signals)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runyard as run
from _local_helpers import Start, task
from helpers import until


@pytest.fixture
def start() -> Iterator[Start]:
    """Start one task, detached, in an experiment made with ``options``; returns (experiment,
    task id) once it runs (and, with ``ready``, once that file has content). Cancels what is
    left after the test."""
    started: list[run.Experiment] = []

    def _start(
        task_: Any, executor: run.LocalExecutor | None = None, ready: Path | None = None, **options: Any
    ) -> Any:
        exp = run.Experiment("local", **options)
        started.append(exp)
        task_id = exp.add(task_, executor=executor, name="task")
        exp.run(detach=True)
        until(lambda: task(exp, task_id).status == "RUNNING", "the task to run")
        if ready is not None:
            until(lambda: ready.exists() and ready.read_text().strip(), f"{ready.name} to be written")
        return exp, task_id

    yield _start
    for exp in started:
        exp.cancel_all()
        until(lambda exp=exp: exp.store.experiment(exp.id).driver_pid is None, "the supervisor to end")
