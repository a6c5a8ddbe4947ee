"""Helpers for the local executor's tests (imported as ``_local_helpers``): the process table
as the tests read it, independently of the backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import runyard as run
from runyard.executor import JobRef

Start = Callable[..., tuple[run.Experiment, str]]  # the ``start`` fixture (conftest.py)


def stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state letter, process group, session, start time) of a process, None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19])


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as gone: nothing here reaps orphans)."""
    st = stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def session(sid: int) -> dict[int, tuple[int, str]]:
    """Live processes of session ``sid`` (a task's whole tree): pid -> (process group, state)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = stat(int(entry))
            if st is not None and st[2] == sid and st[0] not in ("Z", "X"):
                out[int(entry)] = (st[1], st[0])
    return out


def task(exp: run.Experiment, task_id: str) -> Any:
    return next(t for t in exp.tasks if t.id == task_id)


def ref(exp: run.Experiment, task_id: str, executor: run.LocalExecutor | None = None) -> JobRef:
    """The job of a task's current attempt, as a backend is given it."""
    record = exp.store.task(exp.id, task_id)
    assert record is not None and record.job_id is not None
    return JobRef(
        experiment_id=exp.id, task_id=task_id, attempt=record.attempts, experiment_dir=exp.directory,
        executor=executor or run.LocalExecutor(), job_id=record.job_id, handle=record.handle,
    )  # fmt: skip
