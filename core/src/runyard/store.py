"""The state database: one SQLite file (WAL) under the runyard home.

Experiments, tasks, their attempts, an append-only events journal, metadata, artifacts and
config versions. Every state change is one transaction (with its event row), so any process
can read at any time and a killed process leaves nothing half-written. Task output and
artifacts are files in the experiment's folder, referenced from here.

The records (``ExperimentRecord``, ``TaskRecord``, ``AttemptRecord``) define their tables'
columns: each field is a column, with the decoder that checks its stored value and the
encoder that stores it (``_codec``). ``schema_version`` drives the migrations (``_MIGRATIONS``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import attrs

from runyard.errors import DamagedStoreError, DiskFullError, StoreError, UnknownExperimentError, disk_full
from runyard.naming import check_component
from runyard.states import (
    FAILURES,
    FINAL_STATES,
    LIVE_STATES,
    RETRY_ON,
    TRANSITIONS,
    Event,
    State,
    Transition,
    check_transition,
    experiment_state,
)  # fmt: skip

DB_NAME = "runyard.db"


# --------------------------------------------------------------------------- column values
class _Bad(ValueError):
    """A value runyard never writes; the Store names its file (DamagedStoreError)."""

    def __init__(self, problem: str, experiment_id: str | None = None) -> None:
        super().__init__(problem)
        self.experiment_id = experiment_id


def _checked(decode: Callable[[Any], Any], value: Any, name: str, experiment: str, where: str = "") -> Any:
    """``decode(value)``; when it is wrong, _Bad says where: ``experiment ID{where}, column NAME``."""
    try:
        return decode(value)
    except _Bad as exc:
        raise _Bad(f"experiment {experiment}{where}, column {name}: {exc}", experiment) from None


def _of(*kinds: type, optional: bool = False) -> Callable[[Any], Any]:
    """A plain value of one of ``kinds`` (or None, when ``optional``)."""
    what = _KIND_NAMES[float] if float in kinds else " or ".join(_KIND_NAMES[k] for k in kinds)

    def check(value: Any) -> Any:
        if isinstance(value, kinds) or (value is None and optional):
            return value
        raise _Bad(f"{_short(value)} is not {what}")

    return check


def _json(kind: type[Any], *, items: type | None = None, empty: Any = ...) -> Callable[[Any], Any]:
    """A JSON text holding a ``kind`` (of ``items``); NULL or '' gives ``empty``, if given."""
    what = _KIND_NAMES[kind] + (" of strings" if items is str else "")

    def decode(value: Any) -> Any:
        if not value and empty is not ...:
            return copy.copy(empty)
        try:
            out = json.loads(value)
        except (TypeError, ValueError) as exc:
            raise _Bad(f"not JSON ({exc}): {_short(value)}") from None
        if not isinstance(out, kind) or (items and any(not isinstance(i, items) for i in out)):
            raise _Bad(f"not a JSON {what}: {_short(value)}")
        return out

    return decode


def _state(value: Any) -> State:
    try:
        return State(value)
    except ValueError:
        raise _Bad(f"{_short(value)} is not a task state ({', '.join(State)})") from None


def _strings(value: Any) -> list[str]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise _Bad(f"{_short(value)} is not a list of strings")


def _maybe_strings(value: Any) -> list[str] | None:
    return None if value is None else _strings(value)


def _maybe_patterns(value: Any) -> dict[str, str] | None:
    if value is None or (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
        return value
    raise _Bad(f"{_short(value)} is not an object of metric name -> regex")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_KIND_NAMES = {
    str: "a string", int: "a whole number", float: "a number", list: "list", dict: "object", object: "value"
}  # fmt: skip
_STR, _INT, _NUMBER = _of(str), _of(int), _of(int, float)
_MAYBE_STR, _MAYBE_INT, _MAYBE_NUMBER = (
    _of(str, optional=True),
    _of(int, optional=True),
    _of(int, float, optional=True),
)
_ANY_JSON = _json(object)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _state_value(value: State | None) -> str | None:
    return None if value is None else State(value).value


def _codec(decode: Callable[[Any], Any], encode: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A record field's metadata that makes it a column: ``decode`` checks (and converts) the
    stored value, raising _Bad; ``encode`` gives the value to store (default: the value)."""
    return {"decode": decode, "encode": encode}


# --------------------------------------------------------------------------- settings
@attrs.define
class Settings:
    """An experiment's settings: ``Experiment(...)``'s arguments, and where its tasks import
    from. Stored as one JSON object; keys this runyard does not know (a newer one wrote them)
    are kept in ``extra`` and written back as they were. A null means the default."""

    log_level: str = attrs.field(default="INFO", metadata=_codec(_STR))
    max_retries: int = attrs.field(default=0, metadata=_codec(_INT))
    timeout: float | None = attrs.field(default=None, metadata=_codec(_MAYBE_NUMBER))
    checkpoint_interval: float | None = attrs.field(default=None, metadata=_codec(_MAYBE_NUMBER))
    cwd: str | None = attrs.field(default=None, metadata=_codec(_MAYBE_STR))
    python_path: list[str] = attrs.field(factory=list, metadata=_codec(_strings))
    max_parallel: int | None = attrs.field(default=None, metadata=_codec(_MAYBE_INT))
    retry_on: list[str] | None = attrs.field(default=None, metadata=_codec(_maybe_strings))
    metric_patterns: dict[str, str] | None = attrs.field(default=None, metadata=_codec(_maybe_patterns))
    extra: dict[str, Any] = attrs.field(factory=dict)

    @property
    def retry_kinds(self) -> list[str]:
        """The failure kinds ``max_retries`` re-runs (``retry_on``, else the default)."""
        return list(RETRY_ON if self.retry_on is None else self.retry_on)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Settings:
        """The settings in ``values``; ValueError names a key whose value is wrong."""
        known = {f.name: f for f in attrs.fields(cls) if f.name != "extra"}
        given: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                continue
            if value is not None or known[key].default is None:
                try:
                    given[key] = known[key].metadata["decode"](value)
                except _Bad as exc:
                    raise _Bad(f"key {key}: {exc}") from None
        return cls(**given, extra={k: v for k, v in values.items() if k not in known})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """The settings a JSON object holds; ValueError when it is not one, or a value is wrong."""
        return cls.from_dict(_json(dict)(text))

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name, the ``extra`` ones too."""
        known = {f.name: getattr(self, f.name) for f in attrs.fields(type(self)) if f.name != "extra"}
        return {**known, **{k: v for k, v in self.extra.items() if k not in known}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def _settings(value: Any) -> Settings:
    return Settings.from_json(value)


# --------------------------------------------------------------------------- records
@attrs.define
class ExperimentRecord:
    id: str = attrs.field(metadata=_codec(_STR))
    title: str = attrs.field(metadata=_codec(_STR))
    description: str | None = attrs.field(metadata=_codec(_MAYBE_STR))
    tags: list[str] = attrs.field(metadata=_codec(_json(list, items=str), json.dumps))
    settings: Settings = attrs.field(metadata=_codec(_settings, Settings.to_json))
    main_path: str | None = attrs.field(metadata=_codec(_MAYBE_STR))
    created_at: float = attrs.field(metadata=_codec(_NUMBER))
    launched_at: float | None = attrs.field(metadata=_codec(_MAYBE_NUMBER))
    ended_at: float | None = attrs.field(metadata=_codec(_MAYBE_NUMBER))
    run_options: dict[str, Any] | None = attrs.field(metadata=_codec(_json(dict, empty=None), _dumps))
    driver_pid: int | None = attrs.field(metadata=_codec(_MAYBE_INT))
    driver_kind: str | None = attrs.field(metadata=_codec(_MAYBE_STR))
    driver_heartbeat: float | None = attrs.field(metadata=_codec(_MAYBE_NUMBER))
    driver_lease: int = attrs.field(default=0, metadata=_codec(_INT))


@attrs.define
class TaskRecord:
    """A task; ``status``, ``start_time``, ``end_time``, ``exit_code``, ``reason``, ``job_id``
    and ``failure`` are those of its latest attempt (``attempts`` of them so far)."""

    experiment_id: str = attrs.field(metadata=_codec(_STR))
    id: str = attrs.field(metadata=_codec(_STR))
    seq: int = attrs.field(metadata=_codec(_INT))
    task: str = attrs.field(metadata=_codec(_STR))  # encoded JSON, decoded on demand
    executor: str = attrs.field(metadata=_codec(_STR))  # unstructured JSON, decoded on demand
    dependencies: list[str] = attrs.field(metadata=_codec(_json(list, items=str), json.dumps))
    plugins: list[Any] = attrs.field(metadata=_codec(_json(list), json.dumps))
    status: State = attrs.field(metadata=_codec(_state, _state_value))
    paused_from: State | None = attrs.field(metadata=_codec(lambda v: _state(v) if v else None, _state_value))
    reason: str | None = attrs.field(metadata=_codec(_MAYBE_STR))
    exit_code: int | None = attrs.field(metadata=_codec(_MAYBE_INT))
    attempts: int = attrs.field(metadata=_codec(_INT))
    job_id: str | None = attrs.field(metadata=_codec(_MAYBE_STR))
    handle: dict[str, Any] = attrs.field(metadata=_codec(_json(dict, empty={}), _dumps))
    start_time: float | None = attrs.field(metadata=_codec(_MAYBE_NUMBER))
    end_time: float | None = attrs.field(metadata=_codec(_MAYBE_NUMBER))
    rev: int = attrs.field(metadata=_codec(_INT))
    # set by retry(): the experiment's timeout counts from here
    clock_start: float | None = attrs.field(default=None, metadata=_codec(_MAYBE_NUMBER))
    failure: str | None = attrs.field(default=None, metadata=_codec(_MAYBE_STR))


@attrs.define
class AttemptRecord:
    """One attempt of a task (1, 2, ...): what it ran as and how it ended. ``failure`` is None
    while it runs and when it succeeded, else one of ``states.FAILURES``."""

    experiment_id: str = attrs.field(metadata=_codec(_STR))
    task_id: str = attrs.field(metadata=_codec(_STR))
    attempt: int = attrs.field(metadata=_codec(_INT))
    status: State = attrs.field(metadata=_codec(_state, _state_value))
    job_id: str | None = attrs.field(metadata=_codec(_MAYBE_STR))
    start_time: float | None = attrs.field(metadata=_codec(_MAYBE_NUMBER))
    end_time: float | None = attrs.field(metadata=_codec(_MAYBE_NUMBER))
    exit_code: int | None = attrs.field(metadata=_codec(_MAYBE_INT))
    reason: str | None = attrs.field(metadata=_codec(_MAYBE_STR))
    failure: str | None = attrs.field(metadata=_codec(_MAYBE_STR))


_R = TypeVar("_R", ExperimentRecord, TaskRecord, AttemptRecord)
_TABLES: dict[type, str] = {ExperimentRecord: "experiments", TaskRecord: "tasks", AttemptRecord: "attempts"}
# where a row is, in what _Bad says: "experiment ID{where}, column NAME"
_WHERE: dict[type, Callable[[dict[str, Any]], tuple[Any, str]]] = {
    ExperimentRecord: lambda r: (r["id"], ""),
    TaskRecord: lambda r: (r["experiment_id"], f", task {r['id']}"),
    AttemptRecord: lambda r: (r["experiment_id"], f", task {r['task_id']}, attempt {r['attempt']}"),
}


@functools.cache
def _fields(cls: type) -> dict[str, attrs.Attribute[Any]]:
    return attrs.fields_dict(cls)


def _select(cls: type, names: Sequence[str] | None = None) -> str:
    """``SELECT`` the columns ``names`` (default: all of the record's) ``FROM`` its table."""
    return f"SELECT {', '.join(names or _fields(cls))} FROM {_TABLES[cls]}"


def _decoded(cls: type, row: Sequence[Any], names: Sequence[str] | None = None) -> dict[str, Any]:
    """The row's values (of columns ``names``, default all) by name, each checked by its
    field's decoder; _Bad names the first that is wrong. The row starts with its key columns."""
    names = tuple(names or _fields(cls))
    raw = dict(zip(names, row, strict=True))
    experiment, where = _WHERE[cls](raw)
    fields = _fields(cls)
    return {n: _checked(fields[n].metadata["decode"], v, n, experiment, where) for n, v in raw.items()}


def _reader(cls: type[_R]) -> Callable[[Sequence[Any]], _R]:
    """Decodes a row of ``_select(cls)`` into a record: each value by its field's decoder, in
    one pass (reading thousands of tasks is a hot path); a row with a bad value is decoded
    again by :func:`_decoded`, which names the column."""
    known = _READERS.get(cls)
    if known is not None:
        return known
    decoders = tuple(f.metadata["decode"] for f in attrs.fields(cls))

    def read(row: Sequence[Any]) -> _R:
        try:
            return cls(*[decode(value) for decode, value in zip(decoders, row, strict=True)])
        except _Bad:
            return cls(**_decoded(cls, row))

    _READERS[cls] = read
    return read


_READERS: dict[type, Callable[[Sequence[Any]], Any]] = {}


def _encoded(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (columns of ``cls``'s table by name) as they are stored."""
    fields = _fields(cls)
    out = {}
    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"{_TABLES[cls]} has no column {name!r} (columns: {', '.join(fields)})")
        encode = fields[name].metadata["encode"]
        out[name] = encode(value) if encode is not None and value is not None else value
    return out


def _insert(db: sqlite3.Connection, cls: type, values: dict[str, Any], *, replace: bool = False) -> None:
    row = _encoded(cls, values)
    db.execute(
        f"INSERT {'OR REPLACE ' if replace else ''}INTO {_TABLES[cls]} ({', '.join(row)})"
        f" VALUES ({', '.join('?' * len(row))})",
        tuple(row.values()),
    )


def _update(db: sqlite3.Connection, cls: type, values: dict[str, Any], **key: Any) -> None:
    row = _encoded(cls, values)
    db.execute(
        f"UPDATE {_TABLES[cls]} SET {', '.join(f'{k} = ?' for k in row)}"
        f" WHERE {' AND '.join(f'{k} = ?' for k in key)}",
        (*row.values(), *key.values()),
    )


def _event(row: Sequence[Any]) -> tuple[int, str | None, float, str, Any]:
    """``(experiment_id, seq, task_id, ts, kind, data)`` of an events row, but the experiment."""
    experiment, seq, task_id, ts, kind, data = row
    return seq, task_id, ts, kind, _checked(_ANY_JSON, data, "data", experiment, f", event {seq}")


def _metadata(row: Sequence[Any]) -> tuple[str, Any]:
    """``(experiment_id, key, value)`` of a metadata row: the key and its value."""
    experiment, key, value = row
    return key, _checked(_ANY_JSON, value, "value", experiment, f", metadata {_short(key)}")


# --------------------------------------------------------------------------- transitions
# what an attempt's record takes from its task's row
_ATTEMPT_FIELDS = ("job_id", "start_time", "end_time", "exit_code", "reason", "failure")
_CLEARED_ON_LAUNCH = ("start_time", "end_time", "exit_code", "failure")  # the last attempt's, on its task


def _failure(rule: Transition, to: State, exit_code: int | None) -> str | None:
    """The failure kind the rule gives (``"*"``: the outcome's)."""
    if rule.failure != "*":
        return rule.failure
    if to is State.FAILED:
        return "error" if exit_code is not None else "lost"
    return "cancelled" if to is State.CANCELLED else None


def _check_failure(values: dict[str, Any]) -> None:
    failure = values.get("failure")
    if failure is not None and failure not in FAILURES:
        raise ValueError(f"failure must be one of {', '.join(FAILURES)}, got {failure!r}")


# --------------------------------------------------------------------------- migrations
def _run(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _first_schema(db: sqlite3.Connection) -> None:
    """1: the first schema."""
    _run(
        db,
        """
        CREATE TABLE experiments (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            description TEXT,
            tags TEXT NOT NULL,
            settings TEXT NOT NULL,
            main_path TEXT,
            created_at REAL NOT NULL,
            launched_at REAL,
            ended_at REAL,
            run_options TEXT,
            driver_pid INTEGER,
            driver_kind TEXT,
            driver_heartbeat REAL
        );
        CREATE INDEX experiments_by_title ON experiments (title, created_at);
        CREATE TABLE tasks (
            experiment_id TEXT NOT NULL REFERENCES experiments (id),
            id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            task TEXT NOT NULL,
            executor TEXT NOT NULL,
            dependencies TEXT NOT NULL,
            plugins TEXT NOT NULL,
            status TEXT NOT NULL,
            paused_from TEXT,
            reason TEXT,
            exit_code INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            job_id TEXT,
            handle TEXT,
            start_time REAL,
            end_time REAL,
            rev INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (experiment_id, id)
        );
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            experiment_id TEXT NOT NULL,
            task_id TEXT,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL
        );
        CREATE INDEX events_by_experiment ON events (experiment_id, seq);
        CREATE TABLE metadata (
            experiment_id TEXT NOT NULL REFERENCES experiments (id),
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (experiment_id, key)
        );
        CREATE TABLE artifacts (
            experiment_id TEXT NOT NULL REFERENCES experiments (id),
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            description TEXT,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at REAL NOT NULL,
            store TEXT NOT NULL,
            PRIMARY KEY (experiment_id, name)
        );
        CREATE TABLE config_versions (
            experiment_id TEXT NOT NULL REFERENCES experiments (id),
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            config TEXT NOT NULL,
            description TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (experiment_id, name, version)
        );
        """,
    )


def _driver_leases(db: sqlite3.Connection) -> None:
    """2: driver leases (a fencing token: a driver that lost its lease can change nothing),
    and a per-task clock for the experiment's timeout (a retry starts a new one)."""
    _run(
        db,
        """
        ALTER TABLE experiments ADD COLUMN driver_lease INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE tasks ADD COLUMN clock_start REAL;
        """,
    )


def _attempts(db: sqlite3.Connection) -> None:
    """3: attempts as records, and the failure kind of a task's latest attempt; what runyard
    recorded before (the tasks rows, the state events) becomes the attempts' records."""
    _run(
        db,
        """
        CREATE TABLE attempts (
            experiment_id TEXT NOT NULL REFERENCES experiments (id),
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            status TEXT NOT NULL,
            job_id TEXT,
            start_time REAL,
            end_time REAL,
            exit_code INTEGER,
            reason TEXT,
            failure TEXT,
            PRIMARY KEY (experiment_id, task_id, attempt)
        );
        ALTER TABLE tasks ADD COLUMN failure TEXT;
        """,
    )
    _backfill_attempts(db)


def _unit_leases(db: sqlite3.Connection) -> None:
    """4: units of machine resources (GPUs) leased to task attempts, machine-wide within the
    home: one row per unit held (``Store.launch_leased``); and the tasks by revision, so that
    a driver's turn reads what changed (``Store.tasks(..., since_rev)``) without a scan."""
    _run(
        db,
        """
        CREATE TABLE unit_leases (
            resource TEXT NOT NULL,
            unit TEXT NOT NULL,
            experiment_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            since REAL NOT NULL,
            PRIMARY KEY (resource, unit)
        );
        CREATE INDEX unit_leases_by_task ON unit_leases (experiment_id, task_id);
        CREATE INDEX IF NOT EXISTS tasks_by_revision ON tasks (experiment_id, rev);
        """,
    )


_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _first_schema, _driver_leases, _attempts, _unit_leases
]  # fmt: skip
SCHEMA_VERSION = len(_MIGRATIONS)


# --- migration 3: the attempts of a store written before them (schema 2) -----------------
# Schema 2 kept one attempt's outcome per task, on its row, and a "state" event per change
# ({"from", "to", "reason", "attempt": the task's attempt count after it}). What each wrote:
# the launch (PENDING -> SUBMITTED, or -> RUNNING in direct mode) counted up the attempt; a
# relaunch (a dead driver's launch, never run) counted it back down; the job's start and end
# wrote start_time (and end_time, exit_code); a retry of an ended task (from a final state)
# cleared them; a re-run (FAILED with retries left) went to PENDING with the reason
# "retrying (attempt N of M failed: WHY)".
_RETRYING = re.compile(r"retrying \(attempt \d+ of \d+ failed: (.*)\)", re.DOTALL)
_EXIT_CODE = re.compile(r"exit code (-?\d+)")


@attrs.define
class _Told:
    """An attempt as the state events of a schema-2 store tell it."""

    status: State
    start: float  # when it started running; else when its job was recorded; else its launch
    reason: str | None = None
    end: float | None = None
    ran: bool = False  # its job was recorded (the task row's start_time was its then)
    running: bool = False  # it was seen running
    exit_code: int | None = None

    def ended_by_its_job(self) -> bool:
        """It ended with its job's outcome: the task row got its exit code then."""
        return self.ran and self.status in (State.SUCCEEDED, State.FAILED) and self.reason != "timeout"


def _old_failure(status: State, reason: str | None, exit_code: int | None) -> str | None:
    """The failure kind of an attempt (or a task) recorded before schema 3, from its reason."""
    reason = reason or ""
    if reason == "timeout" and status in (State.CANCELLED, State.FAILED):
        return "timeout"
    if status is State.CANCELLED:
        return "dependency" if reason.startswith("dependency") else "cancelled"
    if status is State.FAILED:
        return "error" if exit_code is not None or reason.startswith("launch failed") else "lost"
    return None


def _told(events: list[tuple[float, dict[str, Any]]]) -> dict[int, _Told]:
    """A task's attempts, from its state events (oldest first)."""
    told: dict[int, _Told] = {}
    count = 0
    for ts, data in events:
        try:
            before, to, number = State(data["from"]), State(data["to"]), data["attempt"]
        except (KeyError, TypeError, ValueError):
            continue  # not one runyard wrote: it tells nothing
        if not isinstance(number, int):
            continue
        reason = data.get("reason") if isinstance(data.get("reason"), str) else None
        if number > count:  # a launch: the next attempt
            running = to is State.RUNNING
            told[number] = _Told(to, ts, reason, ran=running, running=running)
        elif number < count:  # a relaunch: that attempt never ran; it runs again as the same number
            told.pop(count, None)
        elif (a := told.get(number)) is not None and (
            a.status.is_live or (before is State.CANCELLED and to.is_live)  # or an uncancel
        ):
            if not a.ran and (to is before or {before, to} & {State.RUNNING, State.PAUSED}):
                a.ran, a.start = True, ts  # its job was recorded (or it ran)
            if to is State.RUNNING and not a.running:
                a.running, a.start = True, ts
            a.status = State.FAILED if to is State.PENDING else to
            a.reason = reason
            if to is State.PENDING and reason and (match := _RETRYING.fullmatch(reason)):
                a.reason = match.group(1)  # the attempt's own reason, as attempts record it now
            a.end = ts if a.status in FINAL_STATES else None
            code = _EXIT_CODE.fullmatch(a.reason or "")
            a.exit_code = int(code.group(1)) if code and a.end is not None else None
        count = number
    return told


def _backfill_attempts(db: sqlite3.Connection) -> None:
    """One attempts row for each attempt a task ran, and the task row's failure; the task row
    then describes its latest attempt only (schema 2 left the one before's end_time and
    exit_code on a task that runs again; they go to that attempt's record)."""
    events: dict[tuple[str, str], list[tuple[float, dict[str, Any]]]] = {}
    for experiment, task, ts, data in db.execute(
        "SELECT experiment_id, task_id, ts, data FROM events WHERE kind = 'state' ORDER BY seq"
    ):
        with contextlib.suppress(TypeError, ValueError):
            if isinstance(parsed := json.loads(data), dict) and isinstance(ts, (int, float)):
                events.setdefault((experiment, task), []).append((ts, parsed))
    tasks = db.execute(
        "SELECT experiment_id, id, status, paused_from, attempts, job_id, start_time, end_time, exit_code,"
        " reason FROM tasks"
    ).fetchall()
    for experiment, task, status, paused_from, count, job_id, start, end, exit_code, reason in tasks:
        try:
            status = State(status)
        except ValueError:
            continue  # a damaged row: reading it says so; nothing here to make of it
        if not isinstance(count, int):
            continue
        told = _told(events.get((experiment, task), []))
        told = {n: a for n, a in told.items() if 1 <= n <= count}
        live = status in (State.SUBMITTED, State.RUNNING) or (
            status is State.PAUSED and paused_from in (State.SUBMITTED.value, State.RUNNING.value)
        )
        latest = told.get(count)
        if latest is None and count >= 1:  # no events of it: the task row is all there is
            latest = told[count] = _Told(status if live or status in FINAL_STATES else State.FAILED,
                                         start, reason, ran=True)  # fmt: skip
        # the row's values are those of the newest attempt that wrote them (see above)
        ran = [n for n, a in told.items() if a.ran]
        ended = [n for n, a in told.items() if a.ended_by_its_job()]
        if start is not None and ran:
            told[max(ran)].start = start
        if exit_code is not None and ended:
            told[max(ended)].exit_code = exit_code
        moved = bool(ended)
        row_is_latest = latest is not None and latest.status is status
        for n, a in sorted(told.items()):
            own = n == count and row_is_latest
            values = {
                "experiment_id": experiment, "task_id": task, "attempt": n, "status": a.status.value,
                "job_id": job_id if own else None, "start_time": a.start,
                "end_time": (end if own else a.end) if a.status in FINAL_STATES else None,
                "exit_code": a.exit_code if a.status in FINAL_STATES else None, "reason": a.reason,
                "failure": _old_failure(a.status, a.reason, a.exit_code),
            }  # fmt: skip
            db.execute(
                f"INSERT INTO attempts ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )
        failure = _old_failure(status, reason, exit_code) if status in FINAL_STATES else None
        if live:  # what schema 2 left of the attempt before: not this one's
            start = start if latest is not None and latest.ran else None
            end = None
            exit_code = None if moved else exit_code
        db.execute(
            "UPDATE tasks SET failure = ?, start_time = ?, end_time = ?, exit_code = ?"
            " WHERE experiment_id = ? AND id = ?",
            (failure, start, end, exit_code, experiment, task),
        )


# SQLite's primary result codes (Python 3.11+ gives them on its errors; older ones: the message)
_SQLITE_ERRORS = {
    "attempt to write a readonly database": 8, "disk I/O error": 10, "database disk image is malformed": 11,
    "unable to open database file": 14, "database or disk is full": 13, "file is not a database": 26,
}  # fmt: skip
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 8, 10, 11, 13, 26
_NO_SHARED_INDEX = {8, 10, 13, 14}  # read-only, I/O error, full, cannot open: no -shm file (_connection)


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else _SQLITE_ERRORS.get(str(exc))


def default_home() -> str:
    return os.path.abspath(
        os.path.expanduser(os.environ.get("RUNYARD_HOME") or os.path.join("~", ".runyard"))
    )


class Store:
    """One connection to the database under ``home``; safe to share between threads."""

    def __init__(self, home: str | None = None) -> None:
        self.home = os.path.abspath(os.path.expanduser(home)) if home else default_home()
        try:
            os.makedirs(self.home, mode=0o700, exist_ok=True)
            st = os.stat(self.home)
            if st.st_uid == os.getuid() and st.st_mode & 0o077:  # ours, made before, looser
                os.chmod(self.home, 0o700)
        except OSError as exc:
            raise StoreError(f"cannot create the runyard home {self.home!r}: {exc}") from None
        self.path = os.path.join(self.home, DB_NAME)
        self._lock = threading.RLock()
        # the database 0600 before SQLite opens it: its -wal and -shm then get that mode too
        with contextlib.suppress(OSError):
            os.close(os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o600))
        for path in (self.path, self.path + "-wal", self.path + "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        self._db: sqlite3.Connection | None = None
        with self._errors():
            try:
                self._db = self._connect()
            except sqlite3.OperationalError as exc:
                if _code(exc) not in _NO_SHARED_INDEX:
                    raise
                # no -shm: see _connection
            self._migrate()

    # --- plumbing -----------------------------------------------------------------------
    def _connect(self, *, exclusive: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            if exclusive:  # the WAL index in this process's memory, not in the -shm file
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=60000")
        except BaseException:
            db.close()  # else its locks stay, and the next connection waits for them
            raise
        return db

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The store's connection, under its lock.

        SQLite shares a WAL database's index through the -shm file. On a full disk (or a
        read-only one) that file cannot be made, so no process can open the database the
        usual way; this one then opens a connection for each use (``_fallback``), and goes
        back to the usual way once it works again."""
        with self._lock:
            if self._db is None:
                with contextlib.suppress(sqlite3.OperationalError):
                    self._db = self._connect()
            if self._db is not None:
                yield self._db
                return
            db = self._fallback()
            try:
                yield db
            finally:
                db.close()

    def _fallback(self) -> sqlite3.Connection:
        """A connection with the WAL index in memory: exclusive locking (released when it
        closes), or on a read-only disk, where nothing can lock or change the file, one that
        reads it as it is (unless a -wal file holds changes that reading so would miss)."""
        try:
            return self._connect(exclusive=True)
        except sqlite3.OperationalError:
            with contextlib.suppress(OSError):
                if os.path.getsize(self.path + "-wal"):
                    raise
            uri = f"file:{urllib.parse.quote(self.path)}?immutable=1"
            return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors, and values runyard never writes, as StoreErrors that say what to do."""
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise  # the caller's: a taken id, a closed store
        except sqlite3.DatabaseError as exc:
            code = _code(exc)
            if code == _SQLITE_FULL or (code == _SQLITE_IOERR and disk_full(self.path)):
                raise DiskFullError(self.path, f"cannot write the store at {self.path}: {exc}") from None
            if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "no such " in str(exc):
                raise DamagedStoreError(self.path, str(exc)) from None
            if code == _SQLITE_READONLY:
                raise StoreError(f"cannot write the store at {self.path}: {exc} (read-only disk?)") from None
            raise StoreError(f"cannot use the store at {self.path}: {exc}") from None
        except _Bad as exc:
            raise DamagedStoreError(self.path, str(exc), exc.experiment_id) from None

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): all of it lands, or none. DiskFullError
        when the disk has no room for it."""
        with self._errors(), self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # not rolled back by SQLite already (a failed COMMIT)
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    def _read(
        self, sql: str, args: Sequence[Any] = (), decode: Callable[[Any], Any] | None = None
    ) -> list[Any]:
        """The rows, each through ``decode`` when given (a damaged one: DamagedStoreError)."""
        with self._errors():
            with self._connection() as db:
                rows = db.execute(sql, args).fetchall()
            return rows if decode is None else [decode(r) for r in rows]

    def _migrate(self) -> None:
        """Bring the schema up to date. Only a read when it is: a full disk does not keep
        the store from opening."""
        with self._connection() as db:
            if self._schema_version(db) == SCHEMA_VERSION:
                return
        with self.write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = self._schema_version(db)  # again: another process may have migrated it
            for migrate in _MIGRATIONS[current:]:
                migrate(db)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def _schema_version(self, db: sqlite3.Connection) -> int:
        """The database's schema version; 0 for a new (empty) database."""
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = list(db.execute("SELECT version FROM schema_version")) if "schema_version" in tables else []
        if not rows:
            if "experiments" in tables:
                raise _Bad("it has runyard's tables but no schema version (table schema_version is empty)")
            return 0
        version = rows[0][0]
        if not isinstance(version, int) or version < 1:
            raise _Bad(f"table schema_version holds {_short(version)}, not a schema version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this runyard knows "
                f"({SCHEMA_VERSION}); upgrade runyard"
            )
        return version

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

    def experiment_dir(self, experiment_id: str) -> str:
        return os.path.join(self.home, "experiments", check_component(experiment_id, "experiment id"))

    def task_dir(self, experiment_id: str, task_id: str) -> str:
        return os.path.join(self.experiment_dir(experiment_id), "tasks", check_component(task_id, "task id"))

    @staticmethod
    def _event(db: sqlite3.Connection, exp: str, task: str | None, kind: str, data: Any) -> int:
        cur = db.execute(
            "INSERT INTO events (experiment_id, task_id, ts, kind, data) VALUES (?, ?, ?, ?, ?)",
            (exp, task, time.time(), kind, json.dumps(data)),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    # --- experiments ---------------------------------------------------------------------
    def create_experiment(
        self,
        experiment_id: str,
        title: str,
        description: str | None,
        tags: list[str],
        settings: Settings,
        metadata: dict[str, Any],
        main_path: str | None,
    ) -> None:
        with self.write() as db:
            _insert(db, ExperimentRecord, {
                "id": experiment_id, "title": title, "description": description, "tags": tags,
                "settings": settings, "main_path": main_path, "created_at": time.time(),
            })  # fmt: skip
            self._put_metadata(db, experiment_id, metadata)
            self._event(db, experiment_id, None, "created", {"title": title})

    def experiment(self, experiment_id: str) -> ExperimentRecord:
        rows = self._read(
            f"{_select(ExperimentRecord)} WHERE id = ?", (experiment_id,), _reader(ExperimentRecord)
        )
        if not rows:
            raise UnknownExperimentError(
                f"no experiment with id {experiment_id!r} in {self.home} "
                "(list them with `runyard list`; set RUNYARD_HOME or base_dir for another home)"
            )
        return rows[0]

    def newest_with_title(self, title: str) -> ExperimentRecord:
        rows = self._read(
            f"{_select(ExperimentRecord)} WHERE title = ? ORDER BY created_at DESC, id DESC LIMIT 1",
            (title,),
            _reader(ExperimentRecord),
        )
        if not rows:
            raise UnknownExperimentError(
                f"no experiment titled {title!r} in {self.home} (list them with `runyard list`)"
            )
        return rows[0]

    def experiments(self, limit: int | None = None) -> list[ExperimentRecord]:
        sql = f"{_select(ExperimentRecord)} ORDER BY created_at DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self._read(sql, (), _reader(ExperimentRecord))

    def experiment_titles(self, title: str | None = None, limit: int | None = None) -> list[tuple[str, str]]:
        """``(id, title)`` of the experiments (with that title), newest first. The rows are not
        decoded: one that is damaged is listed too (``experiment(id)`` then says what is wrong)."""
        sql = "SELECT id, title FROM experiments" + (" WHERE title = ?" if title is not None else "")
        sql += " ORDER BY created_at DESC, id DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        return [(str(i), str(t)) for i, t in self._read(sql, () if title is None else (title,))]

    def task_states(self, experiment_id: str) -> list[State]:
        names = ("experiment_id", "id", "status")
        sql = f"{_select(TaskRecord, names)} WHERE experiment_id = ?"
        return self._read(sql, (experiment_id,), lambda row: _decoded(TaskRecord, row, names)["status"])

    def mark_launched(self, experiment_id: str, options: dict[str, Any]) -> bool:
        """Record the launch; False if it was launched before."""
        with self.write() as db:
            cur = db.execute(
                "UPDATE experiments SET launched_at = ?, run_options = ?"
                " WHERE id = ? AND launched_at IS NULL",
                (time.time(), json.dumps(options), experiment_id),
            )
            if cur.rowcount:
                self._event(db, experiment_id, None, "launched", options)
            return cur.rowcount == 1

    def mark_ended(self, experiment_id: str, ended: bool) -> None:
        with self.write() as db:
            self._ended_event(db, experiment_id, ended)
            db.execute(
                "UPDATE experiments SET ended_at = ? WHERE id = ?",
                (time.time() if ended else None, experiment_id),
            )

    def _ended_event(self, db: sqlite3.Connection, experiment_id: str, ended: bool) -> None:
        """An ``ended`` event (with the experiment's state) when it ends, a ``reopened`` one
        when a retry runs tasks of an ended experiment again (``Experiment.events``)."""
        row = db.execute("SELECT ended_at FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
        if row is None or (row[0] is None) != ended:
            return
        states = db.execute("SELECT status FROM tasks WHERE experiment_id = ?", (experiment_id,)).fetchall()
        with contextlib.suppress(ValueError):
            state = experiment_state([State(s) for (s,) in states]).value
            self._event(db, experiment_id, None, "ended" if ended else "reopened", {"state": state})

    def set_paths(self, experiment_id: str, main_path: str | None, python_path: list[str] | None) -> None:
        """Where task processes import targets from (a reproduced experiment keeps the original's)."""
        with self.write() as db:
            names = ("id", "settings")
            row = db.execute(f"{_select(ExperimentRecord, names)} WHERE id = ?", (experiment_id,)).fetchone()
            settings = _decoded(ExperimentRecord, row, names)["settings"]
            if python_path is not None:
                settings.python_path = list(python_path)
            _update(db, ExperimentRecord, {"main_path": main_path, "settings": settings}, id=experiment_id)

    def set_driver(self, experiment_id: str, pid: int | None, kind: str | None) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE experiments SET driver_pid = ?, driver_kind = ?, driver_heartbeat = ? WHERE id = ?",
                (pid, kind, time.time() if pid else None, experiment_id),
            )
            self._event(db, experiment_id, None, "driver", {"pid": pid, "kind": kind})

    def claim_driver(self, experiment_id: str, pid: int, kind: str, stale_after: float) -> int | None:
        """Become the experiment's driver unless a live one holds it (heartbeat fresher than
        ``stale_after`` seconds and its process alive). Returns the new lease: a number that
        every later write of this driver presents (``Lease``), so that a driver that was frozen
        while another took over can change nothing once it wakes. None: refused."""
        with self.write() as db:
            row = db.execute(
                "SELECT driver_pid, driver_heartbeat, driver_lease FROM experiments WHERE id = ?",
                (experiment_id,),
            ).fetchone()
            if row is None:
                return None
            holder, heartbeat, previous = row
            if holder and holder != pid and heartbeat and time.time() - heartbeat < stale_after:
                if pid_alive(holder):
                    return None
            lease = int(previous or 0) + 1
            db.execute(
                "UPDATE experiments SET driver_pid = ?, driver_kind = ?, driver_heartbeat = ?,"
                " driver_lease = ? WHERE id = ?",
                (pid, kind, time.time(), lease, experiment_id),
            )
            self._event(db, experiment_id, None, "driver", {"pid": pid, "kind": kind, "lease": lease})
            return lease

    def release_driver(self, experiment_id: str, pid: int, lease: int | None = None) -> None:
        """Give the experiment up (only if ``pid`` holds it, with ``lease`` when given)."""
        sql = (
            "UPDATE experiments SET driver_pid = NULL, driver_kind = NULL,"
            " driver_heartbeat = NULL WHERE id = ? AND driver_pid = ?"
        )
        args: tuple[Any, ...] = (experiment_id, pid)
        if lease is not None:
            sql += " AND driver_lease = ?"
            args += (lease,)
        with self.write() as db:
            db.execute(sql, args)

    def driver_heartbeat(self, experiment_id: str, pid: int, lease: int | None = None) -> bool:
        """Refresh the driver's heartbeat; False when ``pid`` (with ``lease``) no longer holds it."""
        sql = "UPDATE experiments SET driver_heartbeat = ? WHERE id = ? AND driver_pid = ?"
        args: tuple[Any, ...] = (time.time(), experiment_id, pid)
        if lease is not None:
            sql += " AND driver_lease = ?"
            args += (lease,)
        with self.write() as db:
            return db.execute(sql, args).rowcount == 1

    @staticmethod
    def _check_lease(db: sqlite3.Connection, experiment_id: str, lease: Lease | None) -> None:
        if lease is None:
            return
        row = db.execute(
            "SELECT driver_pid, driver_lease FROM experiments WHERE id = ?", (experiment_id,)
        ).fetchone()
        if row is None or (row[0], row[1]) != (lease.pid, lease.number):
            raise LeaseLostError(
                f"pid {lease.pid} no longer drives experiment {experiment_id} (lease {lease.number};"
                f" now pid {row[0] if row else None}, lease {row[1] if row else None})"
            )

    # --- tasks ---------------------------------------------------------------------------
    def add_task(
        self,
        experiment_id: str,
        rows: list[tuple[str, str, str, list[str], list[Any]]],
    ) -> None:
        """Add tasks ``(id, task_json, executor_json, dependencies, plugins)`` in one go."""
        with self.write() as db:
            (seq,) = db.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM tasks WHERE experiment_id = ?",
                (experiment_id,),
            ).fetchone()
            for i, (task_id, task, executor, deps, plugins) in enumerate(rows):
                rev = self._event(db, experiment_id, task_id, "added", {"dependencies": deps})
                _insert(db, TaskRecord, {
                    "experiment_id": experiment_id, "id": task_id, "seq": seq + i, "task": task,
                    "executor": executor, "dependencies": deps, "plugins": plugins, "status": State.PENDING,
                    "rev": rev,
                })  # fmt: skip

    def tasks(self, experiment_id: str, since_rev: int = 0) -> list[TaskRecord]:
        return self._read(
            f"{_select(TaskRecord)} WHERE experiment_id = ? AND rev > ? ORDER BY seq",
            (experiment_id, since_rev),
            _reader(TaskRecord),
        )

    def task_ids(self, experiment_id: str) -> list[str]:
        """The ids of the experiment's tasks, in add order (no row decoding: cheap)."""
        rows = self._read("SELECT id FROM tasks WHERE experiment_id = ? ORDER BY seq", (experiment_id,))
        return [r[0] for r in rows]

    def task_count(self, experiment_id: str) -> int:
        """How many tasks the experiment has (tasks are never removed: it only grows)."""
        return int(self._read("SELECT COUNT(*) FROM tasks WHERE experiment_id = ?", (experiment_id,))[0][0])

    def task(self, experiment_id: str, task_id: str) -> TaskRecord | None:
        rows = self._read(
            f"{_select(TaskRecord)} WHERE experiment_id = ? AND id = ?",
            (experiment_id, task_id),
            _reader(TaskRecord),
        )
        return rows[0] if rows else None

    def attempts(self, experiment_id: str, task_id: str) -> list[AttemptRecord]:
        """The task's attempts, oldest first (none before its first launch)."""
        return self._read(
            f"{_select(AttemptRecord)} WHERE experiment_id = ? AND task_id = ? ORDER BY attempt",
            (experiment_id, task_id),
            _reader(AttemptRecord),
        )

    def transition(
        self,
        experiment_id: str,
        task_id: str,
        event: Event,
        to: State | None = None,
        *,
        attempt: int | None = None,
        lease: Lease | None = None,
        attempt_fields: dict[str, Any] | None = None,
        **fields: Any,
    ) -> State | None:
        """Move the task by ``event`` (to ``to``: one of the event's targets, see
        ``states.TRANSITIONS``) and set ``fields`` (tasks columns), if it is in one of the
        event's from-states (and at ``attempt``, if given). Returns the state it was in (None:
        nothing changed). One transaction: the task row, its attempt's record (per the rule's
        ``attempt``; ``attempt_fields`` override what it takes from the task row) and a state
        event. The task's ``failure``, when ``to`` is final: ``fields["failure"]``, else the
        rule's; else None. With ``lease``: only while that driver lease holds, else
        LeaseLostError (and nothing changes). ValueError: a target the event cannot reach, or
        a field that is not a column."""
        event = Event(event)
        sources, to = check_transition(event, to)
        if TRANSITIONS[event].attempt in ("open", "next") and "attempts" not in fields:
            raise ValueError(f"event {event} opens an attempt: say its number (attempts=N)")
        if {"status", "rev"} & fields.keys():
            raise ValueError("status and rev are the store's to set: give the event (and to)")
        if unknown := sorted(set(attempt_fields or ()) - set(_ATTEMPT_FIELDS)):
            raise ValueError(
                f"attempt_fields may hold {', '.join(_ATTEMPT_FIELDS)}, not {', '.join(unknown)}"
            )
        _encoded(TaskRecord, fields)  # every field a column
        _check_failure(fields)
        _check_failure(attempt_fields or {})
        with self.write() as db:
            self._check_lease(db, experiment_id, lease)
            return self._transition(db, experiment_id, task_id, event, to, sources, attempt, fields,
                                    attempt_fields or {})  # fmt: skip

    def _transition(
        self,
        db: sqlite3.Connection,
        experiment_id: str,
        task_id: str,
        event: Event,
        to: State,
        sources: frozenset[State],
        attempt: int | None,
        fields: dict[str, Any],
        attempt_fields: dict[str, Any],
    ) -> State | None:
        names = ("experiment_id", "id", "status", "attempts", *_ATTEMPT_FIELDS)
        sql = f"{_select(TaskRecord, names)} WHERE experiment_id = ? AND id = ?"
        row = db.execute(sql, (experiment_id, task_id)).fetchone()
        if row is None:
            return None
        now = _decoded(TaskRecord, row, names)
        before, number = now["status"], now["attempts"]
        if before not in sources or (attempt is not None and number != attempt):
            return None
        rule = TRANSITIONS[event]
        values = dict(fields)
        if rule.attempt in ("open", "next"):  # the task row describes its latest attempt: this new one
            values.update({k: None for k in _CLEARED_ON_LAUNCH if k not in fields})
        task = {**now, **values}
        outcome = values["failure"] if "failure" in values else _failure(rule, to, task["exit_code"])
        task["failure"] = values["failure"] = outcome if to.is_final else None
        rev = self._event(
            db, experiment_id, task_id, "state",
            {"event": event.value, "from": before.value, "to": to.value, "reason": fields.get("reason"),
             "attempt": task["attempts"]},
        )  # fmt: skip
        _update(db, TaskRecord, {"status": to, "rev": rev, **values}, experiment_id=experiment_id, id=task_id)
        key = {"experiment_id": experiment_id, "task_id": task_id}
        copied = {k: task[k] for k in _ATTEMPT_FIELDS}
        if rule.attempt == "open":
            _insert(db, AttemptRecord, {**key, "attempt": task["attempts"], "status": to, **copied,
                                        **attempt_fields}, replace=True)  # fmt: skip
        elif rule.attempt == "next":  # the attempt ends as the backend said; the next runs on its job
            ended = {
                "status": State.FAILED,
                "end_time": time.time(),
                "failure": rule.failure,
                **attempt_fields,
            }
            _update(db, AttemptRecord, ended, **key, attempt=number)
            _insert(
                db, AttemptRecord, {**key, "attempt": task["attempts"], "status": to, **copied}, replace=True
            )
        elif rule.attempt == "drop":
            db.execute(
                "DELETE FROM attempts WHERE experiment_id = ? AND task_id = ? AND attempt = ?",
                (experiment_id, task_id, number),
            )
        elif rule.attempt == "update":
            self._update_attempt(db, {**key, "attempt": number}, to, copied, outcome, attempt_fields)
        if before.is_live and (not to.is_live or rule.attempt == "next"):  # it left its attempt
            key_args = (experiment_id, task_id)
            db.execute("DELETE FROM unit_leases WHERE experiment_id = ? AND task_id = ?", key_args)
        return before

    @staticmethod
    def _update_attempt(
        db: sqlite3.Connection,
        key: dict[str, Any],
        to: State,
        copied: dict[str, Any],
        outcome: str | None,
        attempt_fields: dict[str, Any],
    ) -> None:
        """The task's attempt takes the task's new state and fields, if it is live (or the task
        goes back to its live job: an uncancel). Going to PENDING closes it (a re-run): FAILED."""
        names = ("experiment_id", "task_id", "attempt", "status")
        sql = f"{_select(AttemptRecord, names)} WHERE experiment_id = ? AND task_id = ? AND attempt = ?"
        row = db.execute(sql, tuple(key.values())).fetchone()
        if row is None:
            return
        status = _decoded(AttemptRecord, row, names)["status"]
        if not (status.is_live or (to.is_live and copied["job_id"] is not None)):
            return  # closed before: it stays as it ended
        closed = to is State.PENDING
        values = {"status": State.FAILED if closed else to, **copied, **attempt_fields}
        if values["job_id"] is None:
            del values["job_id"]  # the task is between jobs: the attempt keeps the one it ran as
        if closed and values["failure"] is None:
            values["failure"] = outcome
        _update(db, AttemptRecord, values, **key)

    def launch_leased(
        self,
        experiment_id: str,
        task_id: str,
        wants: dict[str, int],
        pool: dict[str, list[str]],
        *,
        lease: Lease | None = None,
        **fields: Any,
    ) -> dict[str, list[str]] | None:
        """The LAUNCH transition of a PENDING task (``fields`` as for ``transition``, with
        ``attempts``), holding the units it ``wants`` of each resource, taken in order from
        ``pool`` (the machine's), in the same transaction: no unit is ever held by two live
        attempts of any experiments in this home. Returns the units leased; None when the task
        was not PENDING. Too few free: UnitsBusy, and nothing changes.

        The units go back when the task leaves its attempt (``_transition``). A lease whose
        holder is no longer live in that attempt (a store edited by hand, a removed experiment)
        is stale: it is dropped here first."""
        sources, to = check_transition(Event.LAUNCH)
        _encoded(TaskRecord, fields)
        with self.write() as db:
            self._check_lease(db, experiment_id, lease)
            moved = self._transition(db, experiment_id, task_id, Event.LAUNCH, to, sources, None, fields, {})
            if moved is None:
                return None
            self._drop_stale_units(db, list(wants))
            units: dict[str, list[str]] = {}
            for resource, count in wants.items():
                sql = "SELECT unit, experiment_id FROM unit_leases WHERE resource = ?"
                held = dict(db.execute(sql, (resource,)).fetchall())
                free = [u for u in pool.get(resource, []) if u not in held]
                if len(free) < count:  # (raised: the transaction, the launch with it, is rolled back)
                    raise UnitsBusy(resource, count, len(free), sorted(set(held.values())))
                units[resource] = free[:count]
            now, attempt = time.time(), fields["attempts"]
            db.executemany(
                "INSERT INTO unit_leases (resource, unit, experiment_id, task_id, attempt, since)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(r, u, experiment_id, task_id, attempt, now) for r, us in units.items() for u in us],
            )
            return units

    @staticmethod
    def _drop_stale_units(db: sqlite3.Connection, resources: Sequence[str]) -> None:
        db.execute(
            f"DELETE FROM unit_leases WHERE resource IN ({', '.join('?' * len(resources))}) AND NOT EXISTS ("
            " SELECT 1 FROM tasks t WHERE t.experiment_id = unit_leases.experiment_id"
            " AND t.id = unit_leases.task_id AND t.attempts = unit_leases.attempt"
            f" AND t.status IN ({', '.join(repr(s.value) for s in sorted(LIVE_STATES))}))",
            tuple(resources),
        )

    def unit_leases(self) -> list[tuple[str, str, str, str, int, float]]:
        """Every unit held: ``(resource, unit, experiment_id, task_id, attempt, since)``."""
        return self._read(
            "SELECT resource, unit, experiment_id, task_id, attempt, since FROM unit_leases"
            " ORDER BY resource, unit"
        )

    def set_reasons(
        self, experiment_id: str, reasons: dict[str, str | None], lease: Lease | None = None
    ) -> None:
        """What PENDING tasks wait for (their ``reason``), many in one transaction (under the
        driver's ``lease``). Not a state change: no event and no new ``rev`` (the driver that
        writes them keeps its own records); a task that is no longer PENDING is left alone."""
        if not reasons:
            return
        with self.write() as db:
            self._check_lease(db, experiment_id, lease)
            db.executemany(
                "UPDATE tasks SET reason = ? WHERE experiment_id = ? AND id = ? AND status = 'PENDING'",
                [(reason, experiment_id, task_id) for task_id, reason in reasons.items()],
            )

    def reset_tasks(self, experiment_id: str, task_ids: Sequence[str]) -> None:
        """Put finished tasks back to PENDING (retry), all in one transaction."""
        sources, to = check_transition(Event.RETRY)
        cleared = {"reason": None, "exit_code": None, "job_id": None, "handle": None, "start_time": None,
                   "end_time": None, "failure": None, "clock_start": time.time()}  # fmt: skip
        with self.write() as db:
            self._ended_event(db, experiment_id, False)
            for task_id in task_ids:
                self._transition(db, experiment_id, task_id, Event.RETRY, to, sources, None, cleared, {})
            db.execute("UPDATE experiments SET ended_at = NULL WHERE id = ?", (experiment_id,))

    def events(self, experiment_id: str, since: int = 0) -> list[tuple[int, str | None, float, str, Any]]:
        rows = self._read(
            "SELECT experiment_id, seq, task_id, ts, kind, data FROM events"
            " WHERE experiment_id = ? AND seq > ? ORDER BY seq",
            (experiment_id, since),
            _event,
        )
        return rows

    # --- metadata ------------------------------------------------------------------------
    @staticmethod
    def _put_metadata(db: sqlite3.Connection, experiment_id: str, values: dict[str, Any]) -> None:
        for key, value in values.items():
            db.execute(
                "INSERT INTO metadata (experiment_id, key, value, seq) VALUES (?, ?, ?,"
                " (SELECT COALESCE(MAX(seq), 0) + 1 FROM metadata WHERE experiment_id = ?))"
                " ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                (experiment_id, key, json.dumps(value), experiment_id),
            )

    def add_metadata(self, experiment_id: str, values: dict[str, Any]) -> None:
        with self.write() as db:
            self._put_metadata(db, experiment_id, values)
            self._event(db, experiment_id, None, "metadata", sorted(values))

    def metadata(self, experiment_id: str) -> dict[str, Any]:
        rows = self._read(
            "SELECT experiment_id, key, value FROM metadata WHERE experiment_id = ? ORDER BY seq",
            (experiment_id,),
            _metadata,
        )
        return dict(rows)

    # --- artifacts -------------------------------------------------------------------------
    _ARTIFACT_KEYS = ("name", "path", "description", "size", "sha256", "created_at", "store")

    def add_artifact(self, experiment_id: str, row: dict[str, Any]) -> None:
        keys = self._ARTIFACT_KEYS
        with self.write() as db:
            db.execute(
                f"INSERT INTO artifacts (experiment_id, {', '.join(keys)}) VALUES (?{', ?' * len(keys)})"
                " ON CONFLICT (experiment_id, name) DO UPDATE SET"
                f" {', '.join(f'{k} = excluded.{k}' for k in keys[1:])}",
                (experiment_id, *(row[k] for k in keys)),
            )
            self._event(db, experiment_id, None, "artifact", {"name": row["name"]})

    def artifacts(self, experiment_id: str) -> list[dict[str, Any]]:
        keys = self._ARTIFACT_KEYS
        rows = self._read(
            f"SELECT {', '.join(keys)} FROM artifacts WHERE experiment_id = ? ORDER BY created_at, name",
            (experiment_id,),
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # --- config versions -----------------------------------------------------------------------
    def add_config_version(self, experiment_id: str, name: str, config: str, description: str | None) -> int:
        with self.write() as db:
            (version,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM config_versions"
                " WHERE experiment_id = ? AND name = ?",
                (experiment_id, name),
            ).fetchone()
            db.execute(
                "INSERT INTO config_versions (experiment_id, name, version, config, description, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (experiment_id, name, version, config, description, time.time()),
            )
            self._event(db, experiment_id, None, "config_version", {"name": name, "version": version})
            return int(version)

    def config_versions(self, experiment_id: str, name: str) -> list[tuple[int, str, str | None, float]]:
        return [
            (r[0], r[1], r[2], r[3])
            for r in self._read(
                "SELECT version, config, description, created_at FROM config_versions"
                " WHERE experiment_id = ? AND name = ? ORDER BY version",
                (experiment_id, name),
            )
        ]


@attrs.frozen
class Lease:
    """A driver's hold on an experiment: its pid and the lease number ``claim_driver`` gave it."""

    pid: int
    number: int


class LeaseLostError(StoreError):
    """The driver's lease was taken over by another driver: this one must stop at once."""


class UnitsBusy(Exception):
    """Too few units of ``resource`` are free for a launch: ``wanted``, ``free``, and the
    experiments holding the others (``holders``)."""

    def __init__(self, resource: str, wanted: int, free: int, holders: list[str]) -> None:
        super().__init__(f"{free} of the {wanted} {resource} units wanted are free")
        self.resource, self.wanted, self.free, self.holders = resource, wanted, free, holders


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (``kill -0`` says yes to zombies)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


_stores: dict[tuple[int, str], Store] = {}
_stores_lock = threading.Lock()


def open_store(home: str | None = None) -> Store:
    """The process's shared Store for ``home`` (one connection per database per process;
    a forked child opens its own, never reusing its parent's SQLite connection)."""
    path = os.path.abspath(os.path.expanduser(home)) if home else default_home()
    key = (os.getpid(), path)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = Store(path)
        return store


def close_store(home: str) -> None:
    """Close this process's shared Store for ``home`` and forget it; the next
    ``open_store(home)`` opens a new one. For a home that is being discarded (the test kit's
    ``runyard_home``): each open Store holds a connection and its file descriptors."""
    key = (os.getpid(), os.path.abspath(os.path.expanduser(home)))
    with _stores_lock:
        store = _stores.pop(key, None)
    if store is not None:
        store.close()
