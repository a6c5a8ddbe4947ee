"""The engine: one experiment's tasks, each behind a :class:`TaskHandle`.

A task handle owns what it takes to act on one task: its record, its decoded executor, the
job reference and spec of its attempts, its backend, and every control verb (launch, poll,
cancel, pause, resume, retry). Whatever reaches a backend goes through here: the facade
(``Experiment``), the driver loop (``scheduler.Driver``: *when* to act; the engine: *how*),
direct mode (an in-process backend), the live view and snapshots. Every state change is a
named event of ``states.TRANSITIONS``, written by ``TaskHandle.move``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import secrets
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from runyard import naming, redact, serialization
from runyard.errors import (
    BackendError,
    BackendRefusedError,
    ConfigError,
    DamagedStoreError,
    MissingSecretError,
    SerializationError,
    TaskStateError,
    UnknownTaskError,
    UnreachableError,
)  # fmt: skip
from runyard.executor import Backend, Executor, JobRef, JobSpec, JobStatus
from runyard.jobfiles import JOURNAL, STDERR, STDOUT, TASK
from runyard.launchers import LAUNCHER_ENV, launcher_env, rdzv_id
from runyard.logs import LogEntry, TaskLogs, parse_journal
from runyard.registries import TaskSpec
from runyard.runner import script_argv
from runyard.states import FINAL_STATES, LIVE_STATES, Event, State
from runyard.store import AttemptRecord, ExperimentRecord, Lease, Settings, Store, TaskRecord, UnitsBusy

if TYPE_CHECKING:
    from runyard.plugins import Plugins

_T = TypeVar("_T")
CANCEL_PENDING = "cancel_pending"  # in a cancelled task's handle: its job is still to be ended
UNREACHABLE_RETRY = 5.0  # seconds before a launch tries again a backend found unreachable


class Engine:
    """One experiment's tasks over the store and the backends (``direct``: every task on the
    in-process backend of ``run(direct=True)``, whatever its executor)."""

    def __init__(
        self, store: Store, experiment_id: str, plugins: Plugins | None = None, *, direct: bool = False
    ) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self._plugins = plugins
        self.direct = direct
        self._record: ExperimentRecord | None = None
        self._executors: dict[str, Executor] = {}  # a task's executor never changes: decoded once
        self._direct: Backend | None = None
        self._ids: set[str] | None = None  # see known_ids
        # backends found unreachable (by id): when, and what they said; launches on them wait
        self.unreachable: dict[int, tuple[float, UnreachableError]] = {}
        self._directory: str | None = None
        self._suffix_hints: dict[str, int] = {}  # see _unique

    @classmethod
    def create(
        cls, store: Store, title: str, description: str | None, tags: list[str], settings: Settings,
        metadata: dict[str, Any], main_path: str | None,
    ) -> Engine:  # fmt: skip
        """A new experiment in ``store``, its id made of the time and the title, and its folder."""
        for _ in range(100):
            experiment_id = _new_id(title)
            try:
                store.create_experiment(
                    experiment_id, title, description, tags, settings, metadata, main_path
                )
                break
            except sqlite3.IntegrityError:  # another process took this microsecond
                continue
        os.makedirs(store.experiment_dir(experiment_id), mode=0o700, exist_ok=True)
        return cls(store, experiment_id)

    @property
    def plugins(self) -> Plugins:
        """The plugin manager (the process's, unless one was given), built when first needed:
        reading an experiment's tasks and states loads no plugin."""
        if self._plugins is None:
            from runyard.plugins import plugin_manager  # (pluggy and the entry points: only now)

            self._plugins = plugin_manager()
        return self._plugins

    # --- the experiment -----------------------------------------------------------------
    @property
    def record(self) -> ExperimentRecord:
        """The experiment's record, read once (``reload`` reads it again)."""
        if self._record is None:
            self._record = self.store.experiment(self.experiment_id)
        return self._record

    def reload(self) -> ExperimentRecord:
        self._record = None
        return self.record

    @property
    def directory(self) -> str:
        """The experiment's folder on this machine."""
        if self._directory is None:
            self._directory = self.store.experiment_dir(self.experiment_id)
        return self._directory

    @property
    def max_retries(self) -> int:
        return int(self.record.settings.max_retries or 0)

    # --- tasks --------------------------------------------------------------------------
    def handle(self, record: TaskRecord) -> TaskHandle:
        return TaskHandle(self, record)

    def task(self, task_id: str) -> TaskHandle:
        """The task's handle, from a fresh read of the store; a clear error for an unknown id."""
        if not isinstance(task_id, str):
            raise ConfigError(f"task id must be a string, got {task_id!r}")
        record = self.store.task(self.experiment_id, task_id)
        if record is None:
            known = ", ".join(self.store.task_ids(self.experiment_id)) or "none"
            raise UnknownTaskError(
                f"experiment {self.experiment_id} has no task {task_id!r} (its tasks: {known})"
            )
        return TaskHandle(self, record)

    def handles(self) -> list[TaskHandle]:
        """Every task, in add order, freshly read."""
        return [TaskHandle(self, t) for t in self.store.tasks(self.experiment_id)]

    def executor(self, record: TaskRecord) -> Executor:
        """The task's executor, decoded once (the one place that decodes it); a damaged column
        is a DamagedStoreError naming the task, never a traceback."""
        ex = self._executors.get(record.id)
        if ex is None:
            data = self.column(record, "executor")
            try:
                ex = serialization.structure_executor(data)
            except SerializationError as exc:
                where = f"experiment {self.experiment_id}, task {record.id}, column executor"
                problem = f"{where}: {exc} (edited by hand, or written by another version of its plugin?)"
                raise DamagedStoreError(self.store.path, problem, self.experiment_id) from None
            self._executors[record.id] = ex
        return ex

    def column(self, record: TaskRecord, name: str) -> dict[str, Any]:
        """A task's JSON object column (``task``, ``executor``), decoded; DamagedStoreError
        naming the task and the column when it is not one."""
        where = f"experiment {self.experiment_id}, task {record.id}, column {name}"
        try:
            data = json.loads(getattr(record, name))
        except ValueError as exc:
            raise DamagedStoreError(
                self.store.path, f"{where}: not JSON ({exc})", self.experiment_id
            ) from None
        if not isinstance(data, dict):
            raise DamagedStoreError(self.store.path, f"{where}: not a JSON object", self.experiment_id)
        return data

    def backend(self, kind: str) -> Backend:
        if self.direct:
            if self._direct is None:
                from runyard.direct import DirectBackend

                self._direct = DirectBackend()
            return self._direct
        return self.plugins.backend(kind)

    # --- adding tasks ------------------------------------------------------------------------
    def known_ids(self) -> set[str]:
        """The experiment's task ids, cached: read again only when the store has more tasks
        than the cache knows (another process, or reproduce(), added some). Without the
        cache every add() would read every id, and adding n tasks would take O(n²)."""
        cache = self._ids
        if cache is None or len(cache) != self.store.task_count(self.experiment_id):
            cache = self._ids = set(self.store.task_ids(self.experiment_id))
        return cache

    def _unique(self, name: str, taken: set[str]) -> str:
        """``name``, or ``name-<n>`` with the smallest free n."""
        if name not in taken:
            return name
        # ids are only ever added, so every suffix below the one found last time is still
        # taken: start there (else n tasks of one default name cost O(n²))
        n = self._suffix_hints.get(name, 1)
        while f"{name}-{n}" in taken:
            n += 1
        self._suffix_hints[name] = n
        return f"{name}-{n}"

    def add(
        self, tasks: Sequence[Any], executor: Executor, base: str, *, group: bool,
        dependencies: list[str], plugins: Sequence[Any],
    ) -> list[str]:  # fmt: skip
        """Add checked tasks: each gets a unique id from ``base``, private copies of the task
        and executor that the task modifiers (hooks, then ``plugins``) may change, and is
        stored encoded; returns the ids."""
        existing = self.known_ids()
        ids: list[str] = []
        rows = []
        taken = set(existing)
        for i, t in enumerate(tasks):
            task_id = self._unique(f"{base}-{i}" if group else base, taken)
            taken.add(task_id)
            spec = TaskSpec(copy.deepcopy(t), copy.deepcopy(executor), task_id, self.experiment_id)
            self.plugins.modify_task(spec)
            for p in plugins:
                if hasattr(p, "modify_task"):
                    out = p.modify_task(spec.task)
                    spec.task = spec.task if out is None else out
                if hasattr(p, "modify_executor"):
                    out = p.modify_executor(spec.executor)
                    spec.executor = spec.executor if out is None else out
            if not isinstance(spec.executor, Executor):
                raise ConfigError(f"a plugin returned {spec.executor!r}, which is not an executor")
            encoded = serialization.encode(spec.task, where=f"task {task_id!r}")
            unstructured = serialization.unstructure_executor(spec.executor)
            applied = [
                {"plugin": f"{type(p).__module__}:{type(p).__qualname__}", "repr": repr(p)} for p in plugins
            ]
            rows.append((task_id, encoded, unstructured, dependencies, applied))
            ids.append(task_id)
        self.store_tasks(rows)
        existing.update(ids)  # the cache stays whole without reading every id again
        return ids

    def store_tasks(self, rows: Sequence[tuple[str, Any, dict[str, Any], list[str], list[Any]]]) -> None:
        """Write each task ``(id, encoded task, unstructured executor, dependencies, plugins)``
        to its task.json and to the store, with no secret value (``redact.conceal``)."""
        stored = []
        for task_id, task, executor, deps, applied in rows:
            redact.conceal(self.experiment_id, task_id, executor, task)
            task_json = serialization.dumps(task)
            self._write_task_file(task_id, task_json)
            stored.append((task_id, task_json, serialization.dumps(executor), deps, applied))
        self.store.add_task(self.experiment_id, stored)

    def _write_task_file(self, task_id: str, task_json: str) -> None:
        """``TASK_DIR/task.json``: what the runner builds the task from, wherever it runs."""
        record = self.record
        task_dir = naming.task_dir(self.directory, task_id)
        os.makedirs(task_dir, mode=0o700, exist_ok=True)  # others read nothing, whatever the umask
        body = (
            '{"task": ' + task_json + ', "main_path": ' + json.dumps(record.main_path)
            + ', "python_path": ' + json.dumps(record.settings.python_path or []) + "}"
        )  # fmt: skip
        tmp = os.path.join(task_dir, f".{TASK}.tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(body)
        os.replace(tmp, os.path.join(task_dir, TASK))

    def add_encoded(
        self,
        rows: Sequence[tuple[str, str, str, list[str], list[Any]]],
        main_path: str | None = None,
        python_path: list[str] | None = None,
    ) -> None:
        """Tasks that are encoded already (a snapshot's), imported as their first script did."""
        if main_path or python_path:
            self.store.set_paths(self.experiment_id, main_path, python_path)
            self.reload()
        self.store_tasks([(i, json.loads(t), json.loads(e), d, p) for i, t, e, d, p in rows])

    # --- many tasks at once (the driver's turn) ------------------------------------------
    def poll(self, handles: Sequence[TaskHandle]) -> dict[str, JobStatus]:
        """The backends' news of live tasks with a job, by task id; a backend that cannot be
        reached now gives none (a dropped connection never fails a task by itself)."""
        out: dict[str, JobStatus] = {}
        for backend, group in by_backend((h.backend, h) for h in handles):
            try:
                statuses = backend.poll([h.ref() for h in group])
            except UnreachableError as exc:
                self.unreachable[id(backend)] = (time.monotonic(), exc)
                continue
            except BackendRefusedError:
                raise  # waiting cannot help: the driver stops, saying what to fix
            except BackendError:
                continue  # (a command that failed this time: polled again next turn)
            self.unreachable.pop(id(backend), None)
            for h in group:
                status = statuses.get(h.record.job_id or "")
                if status is not None:
                    out[h.id] = status
        return out

    def waiting(self, backend: Backend) -> bool:
        """Whether launches on ``backend`` wait a moment: it was unreachable less than
        ``UNREACHABLE_RETRY`` seconds ago (then the next launch tries it again)."""
        found = self.unreachable.get(id(backend))
        return found is not None and time.monotonic() - found[0] < UNREACHABLE_RETRY

    def launch(
        self,
        batch: Sequence[tuple[TaskHandle, Sequence[TaskHandle]]],
        lease: Lease | None,
        *,
        max_parallel: int | None = None,
    ) -> list[tuple[TaskHandle, UnitsBusy]]:
        """Launch the next attempt of each PENDING task (chained after its live dependencies),
        one ``launch_many`` per backend.

        Each attempt is recorded SUBMITTED with a new launch id before its job starts: a
        driver that dies after starting it leaves the id behind, and the runner's claim names
        it (``scheduler.Driver._recover``). The units of resources its executor asks for
        (``Executor.resource_request``) are leased in that same transaction, and given to the
        job (``JobSpec.resources``); a task whose units are not all free stays PENDING, at no
        transition: those are returned, each with what it lacks. The jobs of a backend that
        ``throttles_groups`` get ``max_parallel`` (``JobSpec.max_parallel``)."""
        claimed: list[tuple[Backend, tuple[TaskHandle, JobSpec]]] = []
        busy: list[tuple[TaskHandle, UnitsBusy]] = []
        for h, after in batch:
            attempt = h.record.attempts + 1
            launch = secrets.token_hex(8)
            fields = {"attempts": attempt, "reason": None, "handle": {"launch": launch}, "job_id": None}
            try:
                units = self._launch_move(h, lease, fields)
            except UnitsBusy as exc:
                busy.append((h, exc))
                continue
            if units is None:
                continue  # cancelled or paused by another process meanwhile
            try:
                spec = h.spec(attempt, after, with_secrets=True)
            except MissingSecretError as exc:  # nothing to launch it with: say so
                h.move(Event.LAUNCH_FAILED, State.FAILED, lease=lease, attempt=attempt,
                       reason=f"launch failed: {exc}", end_time=time.time())  # fmt: skip
                continue
            spec.env["RUNYARD_LAUNCH_ID"] = launch
            spec.resources = units
            if max_parallel is not None and type(h.backend).throttles_groups:
                spec.max_parallel = max_parallel
            claimed.append((h.backend, (h, spec)))
        for backend, launched in by_backend(claimed):
            results = backend.launch_many([spec for _, spec in launched])
            if not any(isinstance(r, UnreachableError) for r in results):
                self.unreachable.pop(id(backend), None)  # it answered: launches on it wait no more
            for (h, spec), result in zip(launched, results, strict=True):
                if isinstance(result, UnreachableError):  # it may come back: no attempt used, wait
                    self.unreachable[id(backend)] = (time.monotonic(), result)
                    h.move(Event.RELAUNCH, lease=lease, attempt=spec.attempt, attempts=spec.attempt - 1,
                           reason=f"waiting: {result}")  # fmt: skip
                    continue
                if isinstance(result, Exception):  # the backend refused: the attempt failed, say why
                    to = State.PENDING if h.reruns("error") else State.FAILED
                    h.move(Event.LAUNCH_FAILED, to, lease=lease, attempt=spec.attempt,
                           reason=f"launch failed: {result}", end_time=time.time())  # fmt: skip
                    continue
                handle = {**result.handle, "launch": spec.env["RUNYARD_LAUNCH_ID"]}
                ok = h.move(
                    Event.LAUNCHED, result.state, lease=lease, attempt=spec.attempt,
                    job_id=result.job_id, handle=handle, start_time=time.time(),
                )  # fmt: skip
                if not ok:  # cancelled while we were launching it: honour that
                    try:
                        backend.cancel(spec.ref(result.job_id, handle))
                    except BackendError:
                        pass
        return busy

    def requests(self, h: TaskHandle) -> dict[str, int]:
        """The units of resources each attempt of the task holds (none in direct mode: no
        executor runs it)."""
        return {} if self.direct else {k: n for k, n in h.executor.resource_request().items() if n}

    def _launch_move(
        self, h: TaskHandle, lease: Lease | None, fields: dict[str, Any]
    ) -> dict[str, list[str]] | None:
        """The LAUNCH move of a PENDING task, holding the units it asks for; the units (None:
        it was no longer PENDING). UnitsBusy: too few free. More than its backend's machine
        has (it changed since ``check_resources``): the attempt fails, saying so."""
        wants = self.requests(h)
        if not wants:
            return {} if h.move(Event.LAUNCH, lease=lease, **fields) else None
        pool = h.backend.resource_pool(h.executor)
        problem = unfit(h.id, wants, pool, h.executor.kind)
        if problem is not None:
            if h.move(Event.LAUNCH, lease=lease, **fields):
                h.move(Event.LAUNCH_FAILED, State.FAILED, lease=lease, attempt=fields["attempts"],
                       reason=f"launch failed: {problem}", end_time=time.time())  # fmt: skip
            return None
        return self.store.launch_leased(self.experiment_id, h.id, wants, pool, lease=lease, **fields)

    def check_resources(self) -> None:
        """ConfigError when a task asks for more units of a resource than its backend's machine
        has (``run()`` checks before anything launches: such a task would wait for ever)."""
        seen: set[str] = set()
        for record in self.store.tasks(self.experiment_id):
            if record.executor in seen or record.status in FINAL_STATES:
                continue
            seen.add(record.executor)  # (tasks of one executor: the same request)
            h = self.handle(record)
            wants = self.requests(h)
            problem = wants and unfit(h.id, wants, h.backend.resource_pool(h.executor), h.executor.kind)
            if problem:
                raise ConfigError(problem)

    # --- control verbs on many tasks -----------------------------------------------------
    def cancel_all(self, reason: str, *, lease: Lease | None = None) -> list[str]:
        """Cancel every task that has not ended; returns their ids. Each is recorded CANCELLED
        first, then the jobs are ended together, one ``cancel_many`` per backend (one round trip
        for a cluster's jobs). The first error other than an unreachable backend is raised once
        every task has been dealt with (those it concerns are not cancelled)."""
        done: list[str] = []
        ending: list[tuple[Backend, tuple[TaskHandle, State]]] = []
        for h in self.handles():
            if h.status in FINAL_STATES:
                continue
            previous = h.move(Event.CANCEL, lease=lease, reason=reason, end_time=time.time())
            if previous is None:
                continue  # it ended meanwhile
            done.append(h.id)
            current = h.reload()
            if current.record.job_id is not None:
                ending.append((current.backend, (current, previous)))
        first: Exception | None = None
        for backend, group in by_backend(ending):
            results = backend.cancel_many([h.ref() for h, _ in group])
            for (h, previous), exc in zip(group, results, strict=True):
                if exc is None:
                    continue
                try:
                    h.cancel_failed(previous, exc)
                except Exception as raised:
                    done.remove(h.id)
                    first = first or raised
        if first is not None:
            raise first
        return done

    def finish_cancels(self, records: Sequence[TaskRecord]) -> bool:
        """``finish_cancel`` of those ``records`` whose job is still to be ended; True when none
        is left."""
        return all([self.handle(r).finish_cancel() for r in records if r.handle.get(CANCEL_PENDING)])

    def retry(self, task_id: str) -> list[str]:
        """Put an ended task back to PENDING, and every ended task that depends on it."""
        task = self.task(task_id)
        if task.status not in FINAL_STATES:
            raise TaskStateError(
                f"task {task_id!r} is {task.status}: only a task that has ended can be retried"
                + (" (cancel it first)" if task.status in LIVE_STATES else "")
            )
        again = [task_id]
        for t in self.store.tasks(self.experiment_id):  # in add order: dependencies come first
            if t.id not in again and t.status in FINAL_STATES and set(t.dependencies) & set(again):
                again.append(t.id)
        self.store.reset_tasks(self.experiment_id, again)
        return again

    def dry_run(self) -> dict[str, str]:
        """What each task's next attempt would launch, by task id (secrets masked)."""
        return {h.id: h.dry_run() for h in self.handles()}


class TaskHandle:
    """One task: its record (as last read), executor, backend, job reference and spec, and
    every control verb. Cheap to make; ``reload`` reads the record again."""

    __slots__ = ("engine", "record")

    def __init__(self, engine: Engine, record: TaskRecord) -> None:
        self.engine = engine
        self.record = record

    def __repr__(self) -> str:
        return f"TaskHandle({self.record.experiment_id!r}, {self.id!r}, {self.status})"

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> State:
        return self.record.status

    @property
    def executor(self) -> Executor:
        return self.engine.executor(self.record)

    @property
    def backend(self) -> Backend:
        return self.engine.backend(self.executor.kind)

    def reload(self) -> TaskHandle:
        return self.engine.task(self.id)

    def ref(self, attempt: int | None = None) -> JobRef:
        """The job reference of an attempt (default: the latest; its job, if it has one)."""
        r = self.record
        latest = attempt is None or attempt == r.attempts
        return JobRef(
            r.experiment_id, r.id, r.attempts if attempt is None else attempt, self.engine.directory,
            self.executor, (r.job_id or "") if latest else self._attempt_job(attempt), r.handle if latest else {},
        )  # fmt: skip

    def _attempt_job(self, attempt: int | None) -> str:
        for a in self.attempts():
            if a.attempt == attempt:
                return a.job_id or ""
        return ""

    def spec(
        self, attempt: int | None = None, after: Sequence[TaskHandle] = (), *, with_secrets: bool = False
    ) -> JobSpec:
        """The job of one attempt (default: the next). Its ``env`` has the values of the secrets
        the store holds only markers for (``redact.reveal``: MissingSecretError if this process
        has none); ``with_secrets=False`` leaves the markers (a dry run, a question to the backend)."""
        r, record = self.record, self.engine.record
        attempt = r.attempts + 1 if attempt is None else attempt
        executor = self.executor
        encoded = self.engine.column(r, "task")
        is_script = encoded.get(serialization.TAG) == "script"
        env = dict(executor.env_vars)
        argv: list[str] = []
        if is_script:
            env.update(encoded.get("env") or {})
            argv = script_argv(encoded)
        if with_secrets:
            env = redact.reveal(record.id, r.id, env)
        directory = self.engine.directory
        env.update(task_env(record, r.id, attempt, naming.task_dir(directory, r.id)))
        grace = getattr(executor, "cancel_grace", None)
        if grace is not None:  # the runner escalates a cancel by itself, after this grace
            env.setdefault("RUNYARD_CANCEL_GRACE", str(grace))
        launcher = executor.launcher
        if launcher is not None:  # the runner starts it (runyard.launchers)
            rendezvous = rdzv_id(record.id, r.id, attempt)
            env[LAUNCHER_ENV] = launcher_env(launcher, executor.default_nproc(), rendezvous)
        spec = JobSpec(
            experiment_id=record.id, task_id=r.id, attempt=attempt, experiment_dir=directory,
            executor=executor, is_script=is_script, argv=argv, env=env, cwd=record.settings.cwd,
            launcher=launcher,
        )  # fmt: skip
        spec.after = [d.ref() for d in after]
        return spec

    def attempts(self) -> list[AttemptRecord]:
        return self.engine.store.attempts(self.record.experiment_id, self.id)

    # --- state ----------------------------------------------------------------------------
    def move(
        self,
        event: Event,
        to: State | None = None,
        *,
        lease: Lease | None = None,
        attempt: int | None = None,
        attempt_fields: dict[str, Any] | None = None,
        **fields: Any,
    ) -> State | None:
        """A transition of this task by ``event`` (``states.TRANSITIONS``), under ``lease``
        when given; the state it left, None if it was not in a state the event starts from."""
        return self.engine.store.transition(
            self.record.experiment_id, self.id, event, to,
            attempt=attempt, lease=lease, attempt_fields=attempt_fields, **fields,
        )  # fmt: skip

    def observe(self, status: JobStatus, *, lease: Lease | None = None) -> None:
        """Record what the backend says of the task's job. The retry rule lives here: a failed
        attempt with retries left goes back to PENDING for the next one."""
        r = self.record
        if status.claim is not None:  # the job lost its attempt's claim to another launch
            self.adopt(lease=lease, following=True)
            return
        if status.attempt is not None and status.attempt > r.attempts:
            r = self._requeued(status, lease)
        if status.state in FINAL_STATES:
            fields: dict[str, Any] = {
                "exit_code": status.exit_code,
                "reason": status.reason,
                "start_time": _ts(status.start_time) or r.start_time,
                "end_time": _ts(status.end_time) or time.time(),
            }
            if status.failure is not None:
                fields["failure"] = status.failure
            failure = status.failure or ("error" if status.exit_code is not None else "lost")
            if status.state is State.FAILED and self.reruns(failure):
                why = status.reason or f"exit code {status.exit_code}"
                fields.pop("failure", None)  # the task is not failed: its attempt is
                fields.update(reason=f"retrying ({self._counted_note(failure)}: {why})", job_id=None)
                self.move(
                    Event.RERUN, lease=lease, attempt=r.attempts,
                    attempt_fields={"reason": why, "failure": failure}, **fields,
                )  # fmt: skip
            else:
                self.move(Event.END, status.state, lease=lease, attempt=r.attempts, **fields)
        elif status.state is State.RUNNING and r.status is State.SUBMITTED:
            self.move(
                Event.START, lease=lease, attempt=r.attempts, start_time=_ts(status.start_time) or time.time()
            )

    def reruns(self, failure: str) -> bool:
        """Whether the current attempt, failed with ``failure``, is run again: a preempted one
        always (it never counts), any other whose kind is in ``retry_on`` while the attempts
        that count (those not preempted, this one included) are at most ``max_retries``."""
        if failure == "preempted":
            return True
        settings = self.engine.record.settings
        if failure not in settings.retry_kinds:
            return False
        return self._counted() <= self.engine.max_retries

    def _counted(self) -> int:
        """The attempts so far that count against ``max_retries`` (not preempted), this one too."""
        r = self.record
        if r.attempts <= 1:
            return 1
        return 1 + sum(1 for a in self.attempts() if a.attempt < r.attempts and a.failure != "preempted")

    def _counted_note(self, failure: str) -> str:
        """``attempt 2 was preempted``, ``attempt 1 of 3 failed``, ``attempt 3 of 4 failed (oom)``."""
        n = self.record.attempts
        if failure == "preempted":
            return f"attempt {n} was preempted"
        kind = "" if failure == "error" else f" ({failure})"
        return f"attempt {self._counted()} of {self.engine.max_retries + 1} failed{kind}"

    def _requeued(self, status: JobStatus, lease: Lease | None) -> TaskRecord:
        """The backend ran the job again by itself (requeued after a preemption or a node
        failure): each attempt before ``status.attempt`` ends, and the next starts, on the same
        job; the record after that (its final state, if any, is recorded next)."""
        failure = status.requeued_by if status.requeued_by == "node_failure" else "preempted"
        to = State.SUBMITTED if status.state is State.SUBMITTED else State.RUNNING
        for n in range(self.record.attempts, status.attempt or 0):
            self.move(
                Event.REQUEUE, to, lease=lease, attempt=n, attempts=n + 1, start_time=_ts(status.start_time),
                attempt_fields={"failure": failure, "reason": f"requeued by the backend ({failure})"},
            )  # fmt: skip
        self.record = self.reload().record
        return self.record

    def adopt(self, *, lease: Lease | None = None, following: bool = False) -> bool:
        """Find the job that runs the current attempt (its runner claimed it) and follow it.

        ``following``: the task's own job lost the claim; else the task was recorded SUBMITTED
        by a driver that died launching it: with no job found, the same attempt is launched
        again (a runner that finds its attempt claimed runs nothing, so nothing runs twice)."""
        r = self.record
        try:
            found = self.backend.adopt(self.spec(r.attempts))
        except BackendError:
            found = None  # unreachable now: next poll (or relaunching the same attempt is safe)
        if following:
            if found is not None and found.job_id != r.job_id:
                self.move(Event.FOLLOW, r.status, lease=lease, attempt=r.attempts,
                          job_id=found.job_id, handle=found.handle)  # fmt: skip
            return found is not None
        if found is not None:
            self.move(
                Event.LAUNCHED, found.state, lease=lease, attempt=r.attempts, job_id=found.job_id,
                handle=found.handle, start_time=r.start_time or time.time(), reason=None,
            )  # fmt: skip
            return True
        self.move(Event.RELAUNCH, lease=lease, attempt=r.attempts, attempts=r.attempts - 1,
                  reason="launch interrupted; launching it again")  # fmt: skip
        return False

    # --- control verbs ----------------------------------------------------------------------
    def cancel(self, reason: str, *, lease: Lease | None = None, strict: bool = False) -> bool:
        """Cancel the task from any process: record CANCELLED, then end its job on the backend.

        Recording first means a driver polling at the same moment cannot take the dying job
        for a failure (and retry it). If the backend cannot end the job, the cancel is taken
        back and the error raised. False if the task had ended already (``strict``: an error)."""
        if self.status in FINAL_STATES:
            if strict:
                raise TaskStateError(f"task {self.id!r} has already ended ({self.status}): nothing to cancel")
            return False
        previous = self.move(Event.CANCEL, lease=lease, reason=reason, end_time=time.time())
        if previous is None:
            if strict:
                return self.reload().cancel(reason, lease=lease, strict=strict)  # it moved: decide again
            return False
        current = self.reload()
        if current.record.job_id is not None:
            try:
                current.backend.cancel(current.ref())
            except Exception as exc:
                current.cancel_failed(previous, exc)
        return True

    def cancel_failed(self, previous: State, exc: Exception) -> None:
        """The backend could not end the job of this task, cancelled just now. Unreachable:
        the cancel stands, noted as still to be carried out (``finish_cancel``, by the driver
        or the next command that reaches the backend), and a warning says so. Any other error:
        the cancel is taken back and the error raised."""
        if isinstance(exc, UnreachableError):
            self.move(Event.CANCEL_PENDING, handle={**self.record.handle, CANCEL_PENDING: True})
            # not ended until its job is: a driver that ended meanwhile leaves it to the next read
            self.engine.store.mark_ended(self.engine.experiment_id, False)
            warnings.warn(
                f"task {self.id!r} is cancelled, but its job could not be ended yet: {exc}; it is ended"
                " when the backend is reachable again",
                stacklevel=4,
            )
            return
        self.move(Event.UNCANCEL, previous, reason=f"cancel failed: {exc}", end_time=None)
        raise exc

    def finish_cancel(self) -> bool:
        """End the job of a task cancelled while its backend was unreachable (see
        ``cancel_failed``); True once done (or nothing left to do)."""
        r = self.record
        if r.status is not State.CANCELLED or not r.handle.get(CANCEL_PENDING):
            return True
        try:
            self.backend.cancel(self.ref())
        except BackendError:  # (unreachable still, or a command that failed: tried again next turn)
            return False
        done = {k: v for k, v in r.handle.items() if k != CANCEL_PENDING}
        self.move(Event.CANCEL_PENDING, handle=done)
        return True

    def stop_job(self) -> None:
        """Tell the task's job to end, not waiting for it (a timeout, already recorded)."""
        try:
            self.backend.cancel(self.ref())
        except BackendError:
            pass

    def pause(self) -> None:
        """Suspend a running task, or hold a pending one."""
        r = self.record
        if r.status is State.PAUSED:
            raise TaskStateError(f"task {self.id!r} is paused already")
        if r.status in FINAL_STATES:
            raise TaskStateError(f"task {self.id!r} has ended ({r.status}): it cannot be paused")
        if r.status is State.PENDING:
            if not self.move(Event.HOLD, paused_from=State.PENDING, reason="held"):
                self.reload().pause()  # it moved meanwhile: decide again
            return
        if r.job_id is None:
            # a driver is launching it this moment (right after run(), retry(), resume()):
            # wait for its job id rather than fail a call that makes sense
            task, deadline = self, time.monotonic() + 30.0
            while (
                task.status is State.SUBMITTED and task.record.job_id is None and time.monotonic() < deadline
            ):
                time.sleep(0.01)
                task = task.reload()
            if task.status is not State.SUBMITTED or task.record.job_id is not None:
                task.pause()
                return
            raise TaskStateError(f"task {self.id!r} is still being launched; pause it in a moment")
        try:
            self.backend.pause(self.ref())
        except NotImplementedError as exc:
            raise TaskStateError(f"task {self.id!r} cannot be paused: {exc}") from None
        self.move(Event.PAUSE, attempt=r.attempts, paused_from=r.status)

    def resume(self) -> bool:
        """Continue a paused task (a held pending task becomes pending again: True)."""
        r = self.record
        if r.status is not State.PAUSED:
            raise TaskStateError(f"task {self.id!r} is {r.status}, not PAUSED: nothing to resume")
        if r.job_id is None:
            self.move(Event.RELEASE, paused_from=None, reason=None)
            return True
        try:
            self.backend.resume(self.ref())
        except NotImplementedError as exc:
            raise TaskStateError(f"task {self.id!r} cannot be resumed: {exc}") from None
        to = r.paused_from if r.paused_from in (State.SUBMITTED, State.RUNNING) else State.RUNNING
        self.move(Event.RESUME, to, attempt=r.attempts, paused_from=None)
        return False

    # --- output ---------------------------------------------------------------------------
    def attempt_number(self, attempt: int | None) -> int:
        """``attempt`` checked against the task's attempts (None: the latest; 0 if none yet)."""
        count = self.record.attempts
        if attempt is None:
            return count
        if isinstance(attempt, bool) or not isinstance(attempt, int) or not 1 <= attempt <= count:
            runs = f"attempts 1 to {count}" if count > 1 else "attempt 1" if count else "no attempt yet"
            raise ConfigError(f"task {self.id!r} has {runs}: there is no attempt {attempt!r}")
        return attempt

    def read_log(self, name: str, attempt: int | None = None, offset: int = 0) -> bytes:
        """Bytes of the runner's file ``name`` of an attempt (default: the latest), from ``offset``."""
        return self.engine.plugins.log_source(self.executor).read(self.ref(attempt), name, offset)

    def logs(self, attempt: int | None = None) -> TaskLogs:
        """An attempt's output (default: the latest) and exit code (None while it runs)."""
        n = self.attempt_number(attempt)
        if n == 0:
            return TaskLogs(exit_code=None, stdout="", stderr="", attempt=0)
        if n == self.record.attempts:
            ended = self.status in FINAL_STATES or (
                self.status is State.PENDING and self.record.exit_code is not None
            )
            code = self.record.exit_code if ended else None
        else:
            code = next((a.exit_code for a in self.attempts() if a.attempt == n), None)
        return TaskLogs(
            exit_code=code,
            stdout=self.read_log(STDOUT, n).decode("utf-8", "replace"),
            stderr=self.read_log(STDERR, n).decode("utf-8", "replace"),
            attempt=n,
        )

    def stream(
        self,
        *,
        follow: bool,
        interval: float,
        attempt: int | None = None,
        sync: Callable[[], None] = lambda: None,
    ) -> Iterator[LogEntry]:
        """Output lines with their timestamps, from ``attempt`` (default: the latest); with
        ``follow``, until the task ends, each later attempt's lines in turn (``sync`` first
        brings the store up to date when no driver does)."""
        task = self
        n = max(self.attempt_number(attempt), 1)
        offset = 0
        while True:
            if follow:
                sync()
            task = task.reload()
            record = task.record
            if record.attempts >= n:
                entries, used = parse_journal(task.read_log(JOURNAL, n, offset))
                offset += used
                yield from entries
            if record.attempts > n:
                yield from _last_lines(task.read_log(JOURNAL, n, offset))  # over: its last line too
                if not follow:
                    return  # an older attempt, as it is
                n, offset = n + 1, 0  # a newer attempt started: on to it
                continue
            if not follow or record.status in FINAL_STATES:
                if record.status in FINAL_STATES and record.attempts > 0:
                    yield from _last_lines(task.read_log(JOURNAL, n, offset))
                return
            time.sleep(interval)

    def dry_run(self) -> str:
        """What launching the next attempt would submit (secrets masked)."""
        return self.backend.dry_run(self.spec())


def units_text(resource: str, count: int) -> str:
    """``1 GPU``, ``2 GPUs``: a number of units of a resource, for people."""
    name = resource.upper() if len(resource) <= 3 else resource
    return f"{count} {name}{'' if count == 1 else 's'}"


def waiting_for(resource: str, count: int) -> str:
    """A PENDING task's reason while the units it asks for are not free: ``waiting for 2 free GPUs``."""
    return "waiting for {} free {}".format(*units_text(resource, count).split(" ", 1))


def unfit(task_id: str, wants: dict[str, int], pool: dict[str, list[str]], kind: str) -> str | None:
    """What is wrong when a task asks for more units than its backend's machine has (None: nothing)."""
    for resource, count in wants.items():
        units = pool.get(resource, [])
        if count > len(units):
            found = f"{len(units)} ({', '.join(units)})" if units else "none"
            return (
                f"task {task_id!r} asks for {units_text(resource, count)}, but the {kind} backend's machine"
                f" has {found}: ask for at most {len(units)}"
            )
    return None


def task_env(record: ExperimentRecord, task_id: str, attempt: int, task_dir: str) -> dict[str, str]:
    """The ``RUNYARD_*`` variables of one attempt's job."""
    env = {
        "RUNYARD_EXPERIMENT_ID": record.id,
        "RUNYARD_TASK_ID": task_id,
        "RUNYARD_ATTEMPT": str(attempt),
        "RUNYARD_TASK_DIR": task_dir,
    }
    interval = record.settings.checkpoint_interval
    if interval is not None:
        env["RUNYARD_CHECKPOINT_INTERVAL"] = str(interval)
    return env


_last_stamp = 0


def _new_id(title: str) -> str:
    """``YYYYmmdd-HHMMSS-micros_TITLE``: unique in this process, sortable by creation time."""
    global _last_stamp
    micros = max(int(time.time() * 1_000_000), _last_stamp + 1)
    _last_stamp = micros
    stamp = dt.datetime.fromtimestamp(micros / 1e6, tz=dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return f"{stamp}_{title}"


def by_backend(items: Iterable[tuple[Backend, _T]]) -> list[tuple[Backend, list[_T]]]:
    """``(backend, item)`` pairs as one list of items per backend, in the order first seen: what
    a call that serves many jobs at once (poll, launch_many, cancel_many) is given."""
    groups: dict[int, tuple[Backend, list[_T]]] = {}
    for backend, item in items:
        groups.setdefault(id(backend), (backend, []))[1].append(item)
    return list(groups.values())


def _last_lines(data: bytes) -> list[LogEntry]:
    """The entries of what an ended attempt wrote last, an unfinished last line included."""
    return parse_journal(data if data.endswith(b"\n") else data + b"\n")[0]


def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None else None
