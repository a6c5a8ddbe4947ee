"""What the facade hands out: read-only views of tasks, attempts and config versions, as they
were when read (a fresh read gives fresh views)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from runyard.executor import Executor
from runyard.jobfiles import timestamp
from runyard.states import State, experiment_state
from runyard.store import AttemptRecord, TaskRecord

#: the state of an experiment that was never launched (``run()`` never called on it); its
#: tasks stay PENDING (an experiment state only, as in its events: ``- -> CREATED``)
CREATED = "CREATED"


def experiment_status(launched: bool, task_states: Sequence[State]) -> str:
    """The experiment's state: ``CREATED`` while it has never been launched (unless every task
    has ended all the same, cancelled before any launch), else the state its tasks' states
    give (``states.experiment_state``: ``SUCCEEDED`` for one launched with no tasks)."""
    if not launched and not (task_states and all(s.is_final for s in task_states)):
        return CREATED
    return str(experiment_state(list(task_states)))


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


# the experiment's own events in the store, as state changes: kind -> (from, to)
_EXPERIMENT_EVENTS = {
    "created": (None, "CREATED"),
    "launched": ("CREATED", "RUNNING"),
    "ended": ("RUNNING", None),  # to: the state the event records
    "reopened": (None, "RUNNING"),  # from: the state it had ended in
}


@attrs.frozen
class EventView:
    """One state change (``Experiment.events``): of a task (its ``attempt`` and the transition's
    ``event``, e.g. ``"rerun"``), or of the experiment itself (``task_id`` and ``attempt`` None;
    ``event`` ``created``, ``launched``, ``ended`` or ``reopened``: ``CREATED`` -> ``RUNNING``
    -> its final state, and back to ``RUNNING`` when a retry runs tasks again). ``seq`` orders
    the events of an experiment."""

    seq: int
    timestamp: dt.datetime
    task_id: str | None
    attempt: int | None
    from_state: str | None
    to_state: str | None
    reason: str | None
    event: str

    @classmethod
    def of(cls, row: tuple[int, str | None, float, str, Any]) -> EventView | None:
        """The view of a store events row (``Store.events``); None for one that is not a state
        change (a driver's start, say) or that a damaged store left without its fields."""
        seq, task_id, ts, kind, data = row
        data = data if isinstance(data, dict) else {}
        try:
            when = timestamp(ts)
        except (TypeError, ValueError, OverflowError, OSError):
            when = None
        if when is None:
            return None
        if task_id is None:
            if kind not in _EXPERIMENT_EVENTS:
                return None
            before, after = _EXPERIMENT_EVENTS[kind]
            state = data.get("state") if isinstance(data.get("state"), str) else None
            reason = _text(data.get("reason"))
            if kind == "launched":  # its options: `detach`, `sequential`, ...
                reason = ", ".join(k for k, v in data.items() if v is True) or None
            return cls(seq, when, None, None, before or state, after or state, reason, kind)
        if kind != "state":
            return None
        attempt = data.get("attempt")
        return cls(
            seq, when, task_id, attempt if type(attempt) is int else None, _state(data.get("from")),
            _state(data.get("to")), _text(data.get("reason")), _text(data.get("event")) or "",
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The event as JSON values (``timestamp`` ISO 8601 with its zone)."""
        out = attrs.asdict(self)
        out["timestamp"] = self.timestamp.isoformat()
        for key in ("from_state", "to_state"):
            out[key] = None if out[key] is None else str(out[key])
        return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _state(value: Any) -> str | None:
    try:
        return State(value)
    except ValueError:
        return _text(value)
