"""Migrating a store written before attempts were records (schema 2): opened by this runyard,
every experiment and task is still there, and each attempt a task ran becomes a record, made
of what schema 2 kept: its state events, and the task row for the latest attempt."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest
from runyard.states import State
from runyard.store import DB_NAME, SCHEMA_VERSION, AttemptRecord, ExperimentRecord, Store, TaskRecord

# The schema-2 tables, as runyard wrote them (core/src/runyard/store.py before schema 3)
SCHEMA_2 = """
CREATE TABLE experiments (id TEXT PRIMARY KEY, title TEXT NOT NULL, description TEXT, tags TEXT NOT NULL,
    settings TEXT NOT NULL, main_path TEXT, created_at REAL NOT NULL, launched_at REAL, ended_at REAL,
    run_options TEXT, driver_pid INTEGER, driver_kind TEXT, driver_heartbeat REAL,
    driver_lease INTEGER NOT NULL DEFAULT 0);
CREATE INDEX experiments_by_title ON experiments (title, created_at);
CREATE TABLE tasks (experiment_id TEXT NOT NULL REFERENCES experiments (id), id TEXT NOT NULL,
    seq INTEGER NOT NULL, task TEXT NOT NULL, executor TEXT NOT NULL, dependencies TEXT NOT NULL,
    plugins TEXT NOT NULL, status TEXT NOT NULL, paused_from TEXT, reason TEXT, exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0, job_id TEXT, handle TEXT, start_time REAL, end_time REAL,
    rev INTEGER NOT NULL DEFAULT 0, clock_start REAL, PRIMARY KEY (experiment_id, id));
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, experiment_id TEXT NOT NULL, task_id TEXT,
    ts REAL NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX events_by_experiment ON events (experiment_id, seq);
CREATE TABLE metadata (experiment_id TEXT NOT NULL REFERENCES experiments (id), key TEXT NOT NULL,
    value TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (experiment_id, key));
CREATE TABLE artifacts (experiment_id TEXT NOT NULL REFERENCES experiments (id), name TEXT NOT NULL,
    path TEXT NOT NULL, description TEXT, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    created_at REAL NOT NULL, store TEXT NOT NULL, PRIMARY KEY (experiment_id, name));
CREATE TABLE config_versions (experiment_id TEXT NOT NULL REFERENCES experiments (id), name TEXT NOT NULL,
    version INTEGER NOT NULL, config TEXT NOT NULL, description TEXT, created_at REAL NOT NULL,
    PRIMARY KEY (experiment_id, name, version));
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (2);
"""
EXP = "20240101-000000-old"
SETTINGS = {"log_level": "INFO", "max_retries": 1, "timeout": 3600, "checkpoint_interval": None,
            "cwd": "/work", "python_path": ["/work"]}  # fmt: skip
S, R, P, F, C, OK = (
    State.SUBMITTED,
    State.RUNNING,
    State.PENDING,
    State.FAILED,
    State.CANCELLED,
    State.SUCCEEDED,
)


class OldStore:
    """Writes a schema-2 store the way runyard did then (its SQL, its events)."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript(SCHEMA_2)
        self.db.execute(
            "INSERT INTO experiments (id, title, description, tags, settings, main_path, created_at,"
            " launched_at) VALUES (?, 'old', NULL, '[\"v2\"]', ?, NULL, 1.0, 2.0)",
            (EXP, json.dumps(SETTINGS)),
        )
        self.db.execute("INSERT INTO metadata VALUES (?, 'owner', '\"me\"', 1)", (EXP,))

    def add(self, task_id: str, seq: int) -> None:
        rev = self._event(task_id, "added", {"dependencies": []}, 1.0)
        self.db.execute(
            "INSERT INTO tasks (experiment_id, id, seq, task, executor, dependencies, plugins, status, rev)"
            " VALUES (?, ?, ?, '{}', '{\"kind\": \"local\"}', '[]', '[]', 'PENDING', ?)",
            (EXP, task_id, seq, rev),
        )

    def move(self, task_id: str, to: State, at: float, **fields: Any) -> None:
        """Store.transition of schema 2: the row's fields, and a state event at ``at``."""
        status, attempts = self.db.execute(
            "SELECT status, attempts FROM tasks WHERE experiment_id = ? AND id = ?", (EXP, task_id)
        ).fetchone()
        rev = self._event(task_id, "state", {"from": status, "to": to.value, "reason": fields.get("reason"),
                                             "attempt": fields.get("attempts", attempts)}, at)  # fmt: skip
        values = {"status": to.value, "rev": rev, **fields}
        if "handle" in values:
            values["handle"] = json.dumps(values["handle"]) if values["handle"] is not None else None
        self.db.execute(
            f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in values)} WHERE experiment_id = ? AND id = ?",
            (*values.values(), EXP, task_id),
        )

    # what the driver (scheduler.py) and direct mode (direct.py) of schema 2 wrote
    def launch(self, task_id: str, attempt: int, at: float, job: str, to: State = R) -> None:
        self.move(task_id, S, at, attempts=attempt, reason=None, handle={"launch": "x"}, job_id=None)
        self.move(task_id, to, at + 1, job_id=job, handle={"launch": "x"}, start_time=at + 1)

    def rerun(self, task_id: str, attempt: int, at: float, code: int, start: float) -> None:
        self.move(task_id, P, at, exit_code=code, start_time=start, end_time=at, job_id=None,
                  reason=f"retrying (attempt {attempt} of 2 failed: exit code {code})")  # fmt: skip

    def end(
        self, task_id: str, to: State, at: float, code: int | None, start: float, reason: str | None
    ) -> None:
        self.move(task_id, to, at, exit_code=code, reason=reason, start_time=start, end_time=at)

    def retry(self, task_id: str, at: float) -> None:  # Store.reset_tasks
        self.move(task_id, P, at, reason=None, exit_code=None, job_id=None, handle=None, start_time=None,
                  end_time=None, clock_start=at)  # fmt: skip

    def _event(self, task_id: str, kind: str, data: Any, at: float) -> int:
        cur = self.db.execute(
            "INSERT INTO events (experiment_id, task_id, ts, kind, data) VALUES (?, ?, ?, ?, ?)",
            (EXP, task_id, at, kind, json.dumps(data)),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid


def rows(home: str, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(os.path.join(home, DB_NAME)) as db:
        out = db.execute(sql).fetchall()
    db.close()
    return out


def attempt(task_id: str, number: int, status: State, **fields: Any) -> AttemptRecord:
    values = {"job_id": None, "start_time": None, "end_time": None, "exit_code": None, "reason": None,
              "failure": None, **fields}  # fmt: skip
    return AttemptRecord(EXP, task_id, number, status, **values)


@pytest.fixture
def old_home(tmp_path: Path) -> str:
    """A schema-2 home whose tasks ran 0, 1 and 2 attempts in the ways schema 2 recorded."""
    home = str(tmp_path / "home")
    os.makedirs(home)
    old = OldStore(os.path.join(home, DB_NAME))
    for seq, name in enumerate(["once", "twice", "again", "relaunched", "retried", "direct", "skipped",
                                "timed-out", "waiting"]):  # fmt: skip
        old.add(name, seq)
    old.launch("once", 1, at=10, job="j-once")
    old.end("once", OK, at=20, code=0, start=11, reason=None)
    old.launch("twice", 1, at=10, job="j1", to=S)
    old.move("twice", R, at=12, start_time=12)
    old.rerun("twice", 1, at=15, code=2, start=12)
    old.launch("twice", 2, at=16, job="j2")
    old.end("twice", F, at=25, code=3, start=17, reason="exit code 3")
    old.launch("again", 1, at=10, job="j1")  # re-run: RUNNING again, the first's end on its row
    old.rerun("again", 1, at=15, code=2, start=11)
    old.launch("again", 2, at=16, job="j2")
    old.move("relaunched", S, at=10, attempts=1, reason=None, handle={"launch": "dead"}, job_id=None)
    old.move("relaunched", P, at=11, attempts=0, reason="launch interrupted; launching it again")
    old.launch("relaunched", 1, at=12, job="j1")
    old.end("relaunched", OK, at=20, code=0, start=13, reason=None)
    old.launch("retried", 1, at=10, job="j1")
    old.end("retried", F, at=20, code=1, start=11, reason="exit code 1")
    old.retry("retried", at=30)
    old.launch("retried", 2, at=31, job="j2")
    old.end("retried", OK, at=40, code=0, start=32, reason=None)
    old.move("direct", R, at=10, attempts=1, job_id="direct:7", start_time=10)  # direct mode
    old.move("direct", P, at=12, exit_code=1, reason="retrying (attempt 1 of 2 failed: exit code 1)")
    old.move("direct", R, at=13, attempts=2, job_id="direct:7", start_time=13)
    old.move("direct", OK, at=14, exit_code=0, end_time=14)
    old.move("skipped", C, at=10, reason="dependency failed", end_time=10)
    old.launch("timed-out", 1, at=10, job="j1")
    old.move("timed-out", F, at=20, reason="timeout", end_time=20)
    old.db.close()
    return home


def test_each_attempt_a_task_ran_becomes_a_record(old_home: str) -> None:
    store = Store(old_home)
    try:
        assert {t.id: store.attempts(EXP, t.id) for t in store.tasks(EXP)} == {
            "once": [attempt("once", 1, OK, job_id="j-once", start_time=11, end_time=20, exit_code=0)],
            "twice": [
                attempt("twice", 1, F, start_time=12, end_time=15, exit_code=2, reason="exit code 2",
                        failure="error"),
                attempt("twice", 2, F, job_id="j2", start_time=17, end_time=25, exit_code=3, reason="exit code 3",
                        failure="error"),
            ],
            "again": [
                attempt("again", 1, F, start_time=11, end_time=15, exit_code=2, reason="exit code 2",
                        failure="error"),
                attempt("again", 2, R, job_id="j2", start_time=17),
            ],
            "relaunched": [attempt("relaunched", 1, OK, job_id="j1", start_time=13, end_time=20, exit_code=0)],
            "retried": [
                attempt("retried", 1, F, start_time=11, end_time=20, exit_code=1, reason="exit code 1",
                        failure="error"),
                attempt("retried", 2, OK, job_id="j2", start_time=32, end_time=40, exit_code=0),
            ],
            "direct": [
                attempt("direct", 1, F, start_time=10, end_time=12, exit_code=1, reason="exit code 1",
                        failure="error"),
                attempt("direct", 2, OK, job_id="direct:7", start_time=13, end_time=14, exit_code=0),
            ],
            "skipped": [],
            "timed-out": [attempt("timed-out", 1, F, job_id="j1", start_time=11, end_time=20, reason="timeout",
                                  failure="timeout")],
            "waiting": [],
        }  # fmt: skip
    finally:
        store.close()


def test_the_task_rows_describe_their_latest_attempt_and_keep_everything_else(old_home: str) -> None:
    columns = "id, seq, task, executor, status, attempts, job_id, reason, handle, rev, clock_start"
    before = {r[0]: r[1:] for r in rows(old_home, f"SELECT {columns} FROM tasks")}
    events = rows(old_home, "SELECT * FROM events ORDER BY seq")
    store = Store(old_home)
    try:
        tasks = {t.id: t for t in store.tasks(EXP)}
        assert {t.id: (t.seq, t.task, t.executor, t.status.value, t.attempts, t.job_id, t.reason,
                       json.dumps(t.handle) if t.handle else None, t.rev, t.clock_start)
                for t in tasks.values()} == before  # fmt: skip
        assert {k: t.failure for k, t in tasks.items()} == {
            "once": None, "twice": "error", "again": None, "relaunched": None, "retried": None, "direct": None,
            "skipped": "dependency", "timed-out": "timeout", "waiting": None,
        }  # fmt: skip
        again = tasks["again"]  # RUNNING its second attempt: not the first's end and exit code
        assert (again.start_time, again.end_time, again.exit_code) == (17, None, None)
        assert (tasks["twice"].start_time, tasks["twice"].end_time, tasks["twice"].exit_code) == (17, 25, 3)
        assert rows(old_home, "SELECT * FROM events ORDER BY seq") == events  # the journal as it was

        record = store.experiment(EXP)
        assert (record.title, record.tags, record.launched_at, record.settings.to_dict()) == (
            "old", ["v2"], 2.0, {**SETTINGS, "max_parallel": None, "retry_on": None, "metric_patterns": None},
        )  # fmt: skip
        assert store.metadata(EXP) == {"owner": "me"}
    finally:
        store.close()


def test_a_migrated_store_is_at_the_new_schema_and_opens_again_unchanged(old_home: str) -> None:
    Store(old_home).close()
    assert rows(old_home, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    for table, record in (
        ("experiments", ExperimentRecord),
        ("tasks", TaskRecord),
        ("attempts", AttemptRecord),
    ):
        columns = {c[1] for c in rows(old_home, f"PRAGMA table_info({table})")}
        assert columns == set(attrs.fields_dict(record)), table  # the records' columns, no more
    migrated = rows(old_home, "SELECT * FROM attempts ORDER BY task_id, attempt")

    Store(old_home).close()  # a second open migrates nothing again

    assert rows(old_home, "SELECT * FROM attempts ORDER BY task_id, attempt") == migrated


def test_events_runyard_never_wrote_do_not_keep_a_store_from_migrating(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    os.makedirs(home)
    old = OldStore(os.path.join(home, DB_NAME))
    old.add("t", 0)
    old.launch("t", 1, at=10, job="j1")
    old.end("t", OK, at=20, code=0, start=11, reason=None)
    old.db.execute("UPDATE events SET data = 'nope' WHERE kind = 'state' AND ts = 11")
    old.db.execute("INSERT INTO events (experiment_id, task_id, ts, kind, data) VALUES (?, 't', 21, 'state',"
                   " '{\"to\": 3}')", (EXP,))  # fmt: skip
    old.db.close()

    store = Store(home)
    try:
        assert store.attempts(EXP, "t") == [
            attempt("t", 1, OK, job_id="j1", start_time=11, end_time=20, exit_code=0)
        ]
    finally:
        store.close()
