"""The state database: one SQLite file (WAL) under the runyard home.

Experiments, tasks, an append-only events journal, metadata, artifacts and config versions.
Every state change is one transaction (with its event row), so any process can read at any
time and a killed process leaves nothing half-written. Task output and artifacts are files
in the experiment's folder, referenced from here. ``schema_version`` drives migrations.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from runyard.errors import DamagedStoreError, DiskFullError, StoreError, UnknownExperimentError, disk_full
from runyard.naming import check_component
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
    # 2: driver leases (a fencing token: a driver that lost its lease can change nothing), and
    # a per-task clock for the experiment's timeout (a retry starts a new one)
    """
    ALTER TABLE experiments ADD COLUMN driver_lease INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN clock_start REAL;
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
    driver_lease: int = 0


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
    clock_start: float | None = None  # set by retry(): the experiment's timeout counts from here


_TASK_COLUMNS = (
    "experiment_id, id, seq, task, executor, dependencies, plugins, status, paused_from, reason,"
    " exit_code, attempts, job_id, handle, start_time, end_time, rev, clock_start"
)


class _Bad(Exception):
    """A value runyard never writes; the Store names its file (DamagedStoreError)."""

    def __init__(self, problem: str, experiment_id: str | None = None) -> None:
        super().__init__(problem)
        self.experiment_id = experiment_id


@functools.cache
def _names(columns: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in columns.split(","))


def _decode(
    columns: str, decoders: dict[str, Callable[[Any], Any]], row: Sequence[Any], experiment: str, where: str
) -> list[Any]:
    """The row's values, each through the decoder of its column (if it has one)."""
    return [
        _column(decoders[name], value, name, experiment, where) if name in decoders else value
        for name, value in zip(_names(columns), row, strict=True)
    ]


def _column(decode: Callable[[Any], Any], value: Any, name: str, experiment: str, where: str = "") -> Any:
    """``decode(value)``; when it is wrong, _Bad says where: ``experiment ID{where}, column NAME``."""
    try:
        return decode(value)
    except _Bad as exc:
        raise _Bad(f"experiment {experiment}{where}, column {name}: {exc}", experiment) from None


def _of(*kinds: type, optional: bool = False) -> Callable[[Any], Any]:
    """A plain column holding one of ``kinds`` (or NULL, when ``optional``)."""
    what = _KIND_NAMES[float] if float in kinds else " or ".join(_KIND_NAMES[k] for k in kinds)

    def check(value: Any) -> Any:
        if isinstance(value, kinds) or (value is None and optional):
            return value
        raise _Bad(f"{_short(value)} is not {what}")

    return check


def _json(kind: type[Any], *, items: type | None = None, empty: Any = ...) -> Callable[[Any], Any]:
    """A JSON column holding a ``kind`` (of ``items``); NULL or '' gives ``empty``, if given."""
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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_KIND_NAMES = {
    str: "a string", int: "a whole number", float: "a number", list: "list", dict: "object", object: "value"
}  # fmt: skip
_NUMBER = _of(int, float)
_MAYBE_NUMBER = _of(int, float, optional=True)
_MAYBE_STR = _of(str, optional=True)
_TASK_DECODERS: dict[str, Callable[[Any], Any]] = {
    "experiment_id": _of(str), "id": _of(str), "seq": _of(int), "task": _of(str), "executor": _of(str),
    "dependencies": _json(list, items=str), "plugins": _json(list), "status": _state,
    "paused_from": lambda v: _state(v) if v else None, "reason": _MAYBE_STR,
    "exit_code": _of(int, optional=True), "attempts": _of(int), "job_id": _MAYBE_STR,
    "handle": _json(dict, empty={}), "start_time": _MAYBE_NUMBER, "end_time": _MAYBE_NUMBER,
    "rev": _of(int), "clock_start": _MAYBE_NUMBER,
}  # fmt: skip
_EXP_DECODERS: dict[str, Callable[[Any], Any]] = {
    "id": _of(str), "title": _of(str), "description": _MAYBE_STR, "tags": _json(list, items=str),
    "settings": _json(dict), "main_path": _MAYBE_STR, "created_at": _NUMBER, "launched_at": _MAYBE_NUMBER,
    "ended_at": _MAYBE_NUMBER, "run_options": _json(dict, empty=None), "driver_pid": _of(int, optional=True),
    "driver_kind": _MAYBE_STR, "driver_heartbeat": _MAYBE_NUMBER, "driver_lease": _of(int),
}  # fmt: skip


def _task(row: Sequence[Any]) -> TaskRecord:
    """A tasks row (``_TASK_COLUMNS``), each value checked; _Bad names the first that is wrong."""
    return TaskRecord(*_decode(_TASK_COLUMNS, _TASK_DECODERS, row, row[0], f", task {row[1]}"))


def _experiment(row: Sequence[Any]) -> ExperimentRecord:
    """An experiments row (``_EXP_COLUMNS``), each value checked; _Bad names the first that is wrong."""
    return ExperimentRecord(*_decode(_EXP_COLUMNS, _EXP_DECODERS, row, row[0], ""))


def _task_state(row: Sequence[Any]) -> State:
    """``(experiment_id, id, status)`` of a tasks row: the status."""
    return _column(_state, row[2], "status", row[0], f", task {row[1]}")


_ANY_JSON = _json(object)


def _event(row: Sequence[Any]) -> tuple[int, str | None, float, str, Any]:
    """``(experiment_id, seq, task_id, ts, kind, data)`` of an events row, but the experiment."""
    _, seq, task_id, ts, kind, data = row
    return seq, task_id, ts, kind, _column(_ANY_JSON, data, "data", row[0], f", event {seq}")


def _metadata(row: Sequence[Any]) -> tuple[str, Any]:
    """``(experiment_id, key, value)`` of a metadata row: the key and its value."""
    return row[1], _column(_ANY_JSON, row[2], "value", row[0], f", metadata {_short(row[1])}")


_EXP_COLUMNS = (
    "id, title, description, tags, settings, main_path, created_at, launched_at, ended_at,"
    " run_options, driver_pid, driver_kind, driver_heartbeat, driver_lease"
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
            for version in range(current, SCHEMA_VERSION):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
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
        sql = f"SELECT {_EXP_COLUMNS} FROM experiments WHERE id = ?"
        rows = self._read(sql, (experiment_id,), _experiment)
        if not rows:
            raise UnknownExperimentError(
                f"no experiment with id {experiment_id!r} in {self.home} "
                "(list them with `runyard list`; set RUNYARD_HOME or base_dir for another home)"
            )
        return rows[0]

    def newest_with_title(self, title: str) -> ExperimentRecord:
        rows = self._read(
            f"SELECT {_EXP_COLUMNS} FROM experiments WHERE title = ?"
            " ORDER BY created_at DESC, id DESC LIMIT 1",
            (title,),
            _experiment,
        )
        if not rows:
            raise UnknownExperimentError(
                f"no experiment titled {title!r} in {self.home} (list them with `runyard list`)"
            )
        return rows[0]

    def experiments(self, limit: int | None = None) -> list[ExperimentRecord]:
        sql = f"SELECT {_EXP_COLUMNS} FROM experiments ORDER BY created_at DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self._read(sql, (), _experiment)

    def experiment_titles(self, title: str | None = None, limit: int | None = None) -> list[tuple[str, str]]:
        """``(id, title)`` of the experiments (with that title), newest first. The rows are not
        decoded: one that is damaged is listed too (``experiment(id)`` then says what is wrong)."""
        sql = "SELECT id, title FROM experiments" + (" WHERE title = ?" if title is not None else "")
        sql += " ORDER BY created_at DESC, id DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        return [(str(i), str(t)) for i, t in self._read(sql, () if title is None else (title,))]

    def task_states(self, experiment_id: str) -> list[State]:
        sql = "SELECT experiment_id, id, status FROM tasks WHERE experiment_id = ?"
        return self._read(sql, (experiment_id,), _task_state)

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
            settings = _column(_EXP_DECODERS["settings"], settings, "settings", experiment_id)
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
            if row[0] and row[0] != pid and row[1] and time.time() - row[1] < stale_after:
                if pid_alive(row[0]):
                    return None
            lease = int(row[2] or 0) + 1
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
            _task,
        )
        return rows

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
            _task,
        )
        return rows[0] if rows else None

    def transition(
        self,
        experiment_id: str,
        task_id: str,
        to: State,
        *,
        when: Sequence[State],
        attempt: int | None = None,
        lease: Lease | None = None,
        **fields: Any,
    ) -> State | None:
        """Set ``status = to`` (and ``fields``) if the task is in one of ``when`` (and at
        ``attempt``, if given). Returns the state it was in (None: nothing changed).
        Writes a state event. With ``lease``: only while that driver lease holds, else
        LeaseLostError (and nothing changes)."""
        with self.write() as db:
            self._check_lease(db, experiment_id, lease)
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
                     "start_time": None, "end_time": None, "clock_start": time.time()},
                )  # fmt: skip
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


@attrs.frozen
class Lease:
    """A driver's hold on an experiment: its pid and the lease number ``claim_driver`` gave it."""

    pid: int
    number: int


class LeaseLostError(StoreError):
    """The driver's lease was taken over by another driver: this one must stop at once."""


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
