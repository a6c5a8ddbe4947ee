"""The state database: one SQLite file (WAL) under the runyard home.

Experiments, tasks, an append-only events journal, metadata, artifacts and config versions.
Every state change is one transaction (with its event row), so any process can read at any
time and a killed process leaves nothing half-written. Task output and artifacts are files
in the experiment's folder, referenced from here. ``schema_version`` drives migrations.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from runyard.errors import StoreError, UnknownExperimentError
from runyard.states import State

DB_NAME = "runyard.db"

_MIGRATIONS: list[str] = [
    # 1: the first schema
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
]
SCHEMA_VERSION = len(_MIGRATIONS)


@attrs.define
class ExperimentRecord:
    id: str
    title: str
    description: str | None
    tags: list[str]
    settings: dict[str, Any]
    main_path: str | None
    created_at: float
    launched_at: float | None
    ended_at: float | None
    run_options: dict[str, Any] | None
    driver_pid: int | None
    driver_kind: str | None
    driver_heartbeat: float | None


@attrs.define
class TaskRecord:
    experiment_id: str
    id: str
    seq: int
    task: str  # encoded JSON, decoded on demand
    executor: str  # unstructured JSON, decoded on demand
    dependencies: list[str]
    plugins: list[Any]
    status: State
    paused_from: State | None
    reason: str | None
    exit_code: int | None
    attempts: int
    job_id: str | None
    handle: dict[str, Any]
    start_time: float | None
    end_time: float | None
    rev: int


_TASK_COLUMNS = (
    "experiment_id, id, seq, task, executor, dependencies, plugins, status, paused_from, reason,"
    " exit_code, attempts, job_id, handle, start_time, end_time, rev"
)


def _task(row: sqlite3.Row | tuple[Any, ...]) -> TaskRecord:
    return TaskRecord(
        row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), json.loads(row[6]),
        State(row[7]), State(row[8]) if row[8] else None, row[9], row[10], row[11], row[12],
        json.loads(row[13]) if row[13] else {}, row[14], row[15], row[16],
    )  # fmt: skip


def _experiment(row: tuple[Any, ...]) -> ExperimentRecord:
    return ExperimentRecord(
        row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), row[5], row[6], row[7],
        row[8], json.loads(row[9]) if row[9] else None, row[10], row[11], row[12],
    )  # fmt: skip


_EXP_COLUMNS = (
    "id, title, description, tags, settings, main_path, created_at, launched_at, ended_at,"
    " run_options, driver_pid, driver_kind, driver_heartbeat"
)


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
        except OSError as exc:
            raise StoreError(f"cannot create the runyard home {self.home!r}: {exc}") from None
        self.path = os.path.join(self.home, DB_NAME)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=60000")
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the runyard database {self.path!r}: {exc}") from None

    # --- plumbing -----------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): all of it lands, or none."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _migrate(self) -> None:
        with self.write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this runyard knows "
                    f"({SCHEMA_VERSION}); upgrade runyard"
                )
            for version in range(current, SCHEMA_VERSION):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            else:
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def experiment_dir(self, experiment_id: str) -> str:
        return os.path.join(self.home, "experiments", experiment_id)

    def task_dir(self, experiment_id: str, task_id: str) -> str:
        return os.path.join(self.home, "experiments", experiment_id, "tasks", task_id)

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
        settings: dict[str, Any],
        metadata: dict[str, Any],
        main_path: str | None,
    ) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO experiments (id, title, description, tags, settings, main_path,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (experiment_id, title, description, json.dumps(tags), json.dumps(settings),
                 main_path, time.time()),
            )  # fmt: skip
            self._put_metadata(db, experiment_id, metadata)
            self._event(db, experiment_id, None, "created", {"title": title})

    def experiment(self, experiment_id: str) -> ExperimentRecord:
        rows = self._read(f"SELECT {_EXP_COLUMNS} FROM experiments WHERE id = ?", (experiment_id,))
        if not rows:
            raise UnknownExperimentError(
                f"no experiment with id {experiment_id!r} in {self.home} "
                "(list them with `runyard list`; set RUNYARD_HOME or base_dir for another home)"
            )
        return _experiment(rows[0])

    def newest_with_title(self, title: str) -> ExperimentRecord:
        rows = self._read(
            f"SELECT {_EXP_COLUMNS} FROM experiments WHERE title = ?"
            " ORDER BY created_at DESC, id DESC LIMIT 1",
            (title,),
        )
        if not rows:
            raise UnknownExperimentError(
                f"no experiment titled {title!r} in {self.home} (list them with `runyard list`)"
            )
        return _experiment(rows[0])

    def experiments(self, limit: int | None = None) -> list[ExperimentRecord]:
        sql = f"SELECT {_EXP_COLUMNS} FROM experiments ORDER BY created_at DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_experiment(r) for r in self._read(sql)]

    def task_states(self, experiment_id: str) -> list[State]:
        rows = self._read("SELECT status FROM tasks WHERE experiment_id = ?", (experiment_id,))
        return [State(r[0]) for r in rows]

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
            db.execute(
                "UPDATE experiments SET ended_at = ? WHERE id = ?",
                (time.time() if ended else None, experiment_id),
            )

    def set_paths(self, experiment_id: str, main_path: str | None, python_path: list[str] | None) -> None:
        """Where task processes import targets from (a reproduced experiment keeps the original's)."""
        with self.write() as db:
            (settings,) = db.execute(
                "SELECT settings FROM experiments WHERE id = ?", (experiment_id,)
            ).fetchone()
            settings = json.loads(settings)
            if python_path is not None:
                settings["python_path"] = python_path
            db.execute(
                "UPDATE experiments SET main_path = ?, settings = ? WHERE id = ?",
                (main_path, json.dumps(settings), experiment_id),
            )

    def set_driver(self, experiment_id: str, pid: int | None, kind: str | None) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE experiments SET driver_pid = ?, driver_kind = ?, driver_heartbeat = ? WHERE id = ?",
                (pid, kind, time.time() if pid else None, experiment_id),
            )
            self._event(db, experiment_id, None, "driver", {"pid": pid, "kind": kind})

    def claim_driver(self, experiment_id: str, pid: int, kind: str, stale_after: float) -> bool:
        """Become the experiment's driver unless a live one holds it (heartbeat fresher than
        ``stale_after`` seconds and its process alive)."""
        with self.write() as db:
            row = db.execute(
                "SELECT driver_pid, driver_heartbeat FROM experiments WHERE id = ?",
                (experiment_id,),
            ).fetchone()
            if row and row[0] and row[0] != pid and row[1] and time.time() - row[1] < stale_after:
                if pid_alive(row[0]):
                    return False
            db.execute(
                "UPDATE experiments SET driver_pid = ?, driver_kind = ?, driver_heartbeat = ? WHERE id = ?",
                (pid, kind, time.time(), experiment_id),
            )
            self._event(db, experiment_id, None, "driver", {"pid": pid, "kind": kind})
            return True

    def release_driver(self, experiment_id: str, pid: int) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE experiments SET driver_pid = NULL, driver_kind = NULL,"
                " driver_heartbeat = NULL WHERE id = ? AND driver_pid = ?",
                (experiment_id, pid),
            )

    def driver_heartbeat(self, experiment_id: str, pid: int) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE experiments SET driver_heartbeat = ? WHERE id = ? AND driver_pid = ?",
                (time.time(), experiment_id, pid),
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
                db.execute(
                    "INSERT INTO tasks (experiment_id, id, seq, task, executor, dependencies,"
                    " plugins, status, rev) VALUES (?, ?, ?, ?, ?, ?, ?, 'PENDING', ?)",
                    (experiment_id, task_id, seq + i, task, executor, json.dumps(deps),
                     json.dumps(plugins), rev),
                )  # fmt: skip

    def tasks(self, experiment_id: str, since_rev: int = 0) -> list[TaskRecord]:
        rows = self._read(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE experiment_id = ? AND rev > ? ORDER BY seq",
            (experiment_id, since_rev),
        )
        return [_task(r) for r in rows]

    def task_ids(self, experiment_id: str) -> list[str]:
        """The ids of the experiment's tasks, in add order (no row decoding: cheap)."""
        rows = self._read("SELECT id FROM tasks WHERE experiment_id = ? ORDER BY seq", (experiment_id,))
        return [r[0] for r in rows]

    def task_count(self, experiment_id: str) -> int:
        """How many tasks the experiment has (tasks are never removed: it only grows)."""
        return int(self._read("SELECT COUNT(*) FROM tasks WHERE experiment_id = ?", (experiment_id,))[0][0])

    def task(self, experiment_id: str, task_id: str) -> TaskRecord | None:
        rows = self._read(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE experiment_id = ? AND id = ?",
            (experiment_id, task_id),
        )
        return _task(rows[0]) if rows else None

    def transition(
        self,
        experiment_id: str,
        task_id: str,
        to: State,
        *,
        when: Sequence[State],
        attempt: int | None = None,
        **fields: Any,
    ) -> State | None:
        """Set ``status = to`` (and ``fields``) if the task is in one of ``when`` (and at
        ``attempt``, if given). Returns the state it was in (None: nothing changed).
        Writes a state event."""
        with self.write() as db:
            return self._transition(db, experiment_id, task_id, to, when, attempt, fields)

    def _transition(
        self,
        db: sqlite3.Connection,
        experiment_id: str,
        task_id: str,
        to: State,
        when: Sequence[State],
        attempt: int | None,
        fields: dict[str, Any],
    ) -> State | None:
        row = db.execute(
            "SELECT status, attempts FROM tasks WHERE experiment_id = ? AND id = ?",
            (experiment_id, task_id),
        ).fetchone()
        if row is None or row[0] not in when or (attempt is not None and row[1] != attempt):
            return None
        rev = self._event(
            db, experiment_id, task_id, "state",
            {"from": row[0], "to": to.value, "reason": fields.get("reason"),
             "attempt": fields.get("attempts", row[1])},
        )  # fmt: skip
        values = {"status": to.value, "rev": rev}
        for key, value in fields.items():
            if key == "handle":
                value = json.dumps(value) if value is not None else None
            elif isinstance(value, State):
                value = value.value
            values[key] = value
        sets = ", ".join(f"{k} = ?" for k in values)
        db.execute(
            f"UPDATE tasks SET {sets} WHERE experiment_id = ? AND id = ?",
            (*values.values(), experiment_id, task_id),
        )
        return State(row[0])

    def reset_tasks(self, experiment_id: str, task_ids: Sequence[str]) -> None:
        """Put finished tasks back to PENDING (retry), all in one transaction."""
        finals = [State.SUCCEEDED, State.FAILED, State.CANCELLED]
        with self.write() as db:
            for task_id in task_ids:
                self._transition(
                    db, experiment_id, task_id, State.PENDING, finals, None,
                    {"reason": None, "exit_code": None, "job_id": None, "handle": None,
                     "start_time": None, "end_time": None},
                )  # fmt: skip
            db.execute("UPDATE experiments SET ended_at = NULL WHERE id = ?", (experiment_id,))

    def events(self, experiment_id: str, since: int = 0) -> list[tuple[int, str | None, float, str, Any]]:
        rows = self._read(
            "SELECT seq, task_id, ts, kind, data FROM events WHERE experiment_id = ? AND seq > ?"
            " ORDER BY seq",
            (experiment_id, since),
        )
        return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

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
            "SELECT key, value FROM metadata WHERE experiment_id = ? ORDER BY seq", (experiment_id,)
        )
        return {k: json.loads(v) for k, v in rows}

    # --- artifacts -------------------------------------------------------------------------
    def add_artifact(self, experiment_id: str, row: dict[str, Any]) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO artifacts (experiment_id, name, path, description, size, sha256,"
                " created_at, store) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (experiment_id, name) DO UPDATE SET path = excluded.path,"
                " description = excluded.description, size = excluded.size,"
                " sha256 = excluded.sha256, created_at = excluded.created_at, store = excluded.store",
                (experiment_id, row["name"], row["path"], row["description"], row["size"],
                 row["sha256"], row["created_at"], row["store"]),
            )  # fmt: skip
            self._event(db, experiment_id, None, "artifact", {"name": row["name"]})

    def artifacts(self, experiment_id: str) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT name, path, description, size, sha256, created_at, store FROM artifacts"
            " WHERE experiment_id = ? ORDER BY created_at, name",
            (experiment_id,),
        )
        keys = ("name", "path", "description", "size", "sha256", "created_at", "store")
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
                "INSERT INTO config_versions VALUES (?, ?, ?, ?, ?, ?)",
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
