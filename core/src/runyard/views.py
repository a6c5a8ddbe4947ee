"""What the facade hands out: read-only views of tasks, attempts and config versions, as they
were when read (a fresh read gives fresh views)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import attrs

from runyard.executor import Executor
from runyard.jobfiles import timestamp
from runyard.states import State
from runyard.store import AttemptRecord, TaskRecord


class _Timed:
    __slots__ = ()
    start_time: dt.datetime | None
    end_time: dt.datetime | None

    @property
    def duration(self) -> dt.timedelta | None:
        """How long it ran (until now while it runs); None before it started."""
        if self.start_time is None:
            return None
        return (self.end_time or dt.datetime.now(dt.timezone.utc)) - self.start_time


@attrs.define(eq=False)
class TaskView(_Timed):
    """A task as it was when ``Experiment.tasks`` was read. ``start_time``, ``end_time``,
    ``exit_code`` and ``failure`` are those of its latest attempt (None while it runs)."""

    id: str
    name: str
    status: State
    job_id: str | None
    local_directory: str
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    attempts: int
    exit_code: int | None
    reason: str | None
    dependencies: list[str]
    failure: str | None = None
    _decode: Callable[[], Executor] | None = attrs.field(default=None, repr=False)
    _executor: Executor | None = attrs.field(default=None, repr=False)

    @classmethod
    def of(cls, record: TaskRecord, directory: str, executor: Callable[[], Executor]) -> TaskView:
        return cls(
            id=record.id, name=record.id, status=record.status, job_id=record.job_id,
            local_directory=directory, start_time=timestamp(record.start_time),
            end_time=timestamp(record.end_time), attempts=record.attempts, exit_code=record.exit_code,
            reason=record.reason, dependencies=list(record.dependencies), failure=record.failure,
            decode=executor,
        )  # fmt: skip

    @property
    def executor(self) -> Executor:
        """The task's executor (decoded when first asked for)."""
        if self._executor is None:
            assert self._decode is not None
            self._executor = self._decode()
        return self._executor


@attrs.frozen
class AttemptView(_Timed):
    """One attempt of a task (``Experiment.attempts``): ``attempt`` counts from 1; ``failure``
    is None while it runs and when it succeeded, else one of ``states.FAILURES``."""

    attempt: int
    status: State
    job_id: str | None
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    exit_code: int | None
    reason: str | None
    failure: str | None

    @classmethod
    def of(cls, record: AttemptRecord) -> AttemptView:
        return cls(
            record.attempt, record.status, record.job_id, timestamp(record.start_time),
            timestamp(record.end_time), record.exit_code, record.reason, record.failure,
        )  # fmt: skip


@attrs.frozen
class ConfigVersion:
    """One stored version of a tracked configuration."""

    version: int
    config: Any
    description: str | None
    created_at: dt.datetime
