"""``Experiment``: the user's facade over the store, the driver and the plugins.

Every method works the same on an experiment created here or rebuilt in another process
with :meth:`Experiment.from_id` / :meth:`Experiment.from_title`: all state is in the store.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
import sqlite3
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from runyard import naming, redact, serialization
from runyard.artifacts import Artifact
from runyard.config import Config, Partial, Script, target_name
from runyard.errors import (
    ConfigError,
    DiskFullError,
    ExperimentStateError,
    TaskStateError,
    UnknownTaskError,
)
from runyard.executor import Executor
from runyard.jobfiles import TASK, timestamp, utc
from runyard.logs import LogEntry, LogRef, TaskLogs, parse_journal
from runyard.plugins import TaskSpec, plugin_manager, resolve_export
from runyard.scheduler import STALE_AFTER, Driver, cancel_task, job_ref
from runyard.states import FINAL_STATES, LIVE_STATES, State, experiment_state
from runyard.store import ExperimentRecord, Store, TaskRecord, open_store, pid_alive

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ON_INTERRUPT = ("cancel", "detach")


@attrs.define(eq=False)
class TaskView:
    """A task as it was when ``Experiment.tasks`` was read."""

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
    _executor_json: str = attrs.field(repr=False)
    _executor: Executor | None = attrs.field(default=None, repr=False)

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = serialization.structure_executor(json.loads(self._executor_json))
        return self._executor

    @property
    def duration(self) -> dt.timedelta | None:
        if self.start_time is None:
            return None
        return (self.end_time or dt.datetime.now(dt.timezone.utc)) - self.start_time


@attrs.frozen
class ConfigVersion:
    """One stored version of a tracked configuration."""

    version: int
    config: Any
    description: str | None
    created_at: dt.datetime


class Plugin:
    """Base class for the guide's plugins: change a task and its executor at ``add()``.

    Both methods receive private copies and return the object to use.
    """

    def modify_task(self, task: Any) -> Any:
        return task

    def modify_executor(self, executor: Executor) -> Executor:
        return executor


_last_stamp = 0


def _new_id(title: str) -> str:
    global _last_stamp
    micros = max(int(time.time() * 1_000_000), _last_stamp + 1)
    _last_stamp = micros
    stamp = dt.datetime.fromtimestamp(micros / 1e6, tz=dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return f"{stamp}_{title}"


def _check_number(
    value: Any, what: str, *, integer: bool = False, allow_zero: bool = False, at_least: float = 0
) -> Any:
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    finite = not isinstance(value, float) or math.isfinite(value)  # nan compares False to everything
    if isinstance(value, bool) or not isinstance(value, kinds) or not finite:
        raise ConfigError(f"{what} must be a finite {'whole ' if integer else ''}number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{what} must be {'zero or more' if allow_zero else 'positive'}, got {value!r}")
    if value < at_least:
        raise ConfigError(f"{what} must be at least {at_least}, got {value!r}")
    return value


def _check_metadata(values: Any, what: str = "metadata") -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{what} must be a dict of JSON values, got {values!r}")
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"{what} keys must be strings, got {key!r}")
        serialization.check_json_value(value, f"{what}[{key!r}]")
    return dict(values)


class Experiment:
    """A set of tasks with dependencies, launched on executors, tracked in the store.

    See docs/user-guide.md for every method; the signatures follow the NeMo Run guide.
    """

    def __init__(
        self,
        title: str,
        *,
        description: str | None = None,
        tags: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
        log_level: str = "INFO",
        max_retries: int = 0,
        timeout: float | None = None,
        checkpoint_interval: float | None = None,
        base_dir: str | None = None,
    ) -> None:
        naming.check_name(title, "experiment title")
        if description is not None and not isinstance(description, str):
            raise ConfigError(f"description must be a string, got {description!r}")
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"tags must be a list of strings, got {tags!r}")
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        _check_number(max_retries, "max_retries", integer=True, allow_zero=True)
        _check_number(timeout, "timeout")
        # the driver refreshes its heartbeat in the store that often: not every few ms
        _check_number(checkpoint_interval, "checkpoint_interval", at_least=0.1)
        meta = _check_metadata(metadata or {})
        main = sys.modules.get("__main__")
        # a script run as `python file.py` (not `-m pkg`, whose targets import by module name)
        main_file = getattr(main, "__file__", None) if getattr(main, "__spec__", None) is None else None
        settings = {
            "log_level": log_level,
            "max_retries": max_retries,
            "timeout": timeout,
            "checkpoint_interval": checkpoint_interval,
            "cwd": os.getcwd(),
            "python_path": [
                p
                for p in (os.getcwd(), os.path.dirname(os.path.abspath(main_file)) if main_file else None)
                if p
            ],
        }
        store = open_store(base_dir)
        for _ in range(100):
            experiment_id = _new_id(title)
            try:
                store.create_experiment(
                    experiment_id, title, description, list(tags), settings, meta,
                    os.path.abspath(main_file) if main_file else None,
                )  # fmt: skip
                break
            except sqlite3.IntegrityError:  # another process took this microsecond
                continue
        os.makedirs(store.experiment_dir(experiment_id), mode=0o700, exist_ok=True)
        self._store = store
        self._id = experiment_id
        self._record_cache: ExperimentRecord | None = None
        self._ids_cache: set[str] | None = None  # see _known_ids
        self._suffix_hints: dict[str, int] = {}  # see _unique

    # --- identity ---------------------------------------------------------------------------
    @classmethod
    def _attach(cls, store: Store, record: ExperimentRecord) -> Experiment:
        self = cls.__new__(cls)
        self._store = store
        self._id = record.id
        self._record_cache = record
        self._ids_cache = None
        self._suffix_hints = {}
        return self

    @classmethod
    def from_id(cls, experiment_id: str, *, base_dir: str | None = None) -> Experiment:
        """The experiment with that id, rebuilt from the store (any process)."""
        if not isinstance(experiment_id, str):
            raise ConfigError(f"experiment id must be a string, got {experiment_id!r}")
        store = open_store(base_dir)
        return cls._attach(store, store.experiment(experiment_id))

    @classmethod
    def from_title(cls, title: str, *, base_dir: str | None = None) -> Experiment:
        """The newest experiment with that title, rebuilt from the store (any process)."""
        store = open_store(base_dir)
        return cls._attach(store, store.newest_with_title(title))

    @property
    def experiment_id(self) -> str:
        return self._id

    id = experiment_id

    @property
    def _record(self) -> ExperimentRecord:
        return self._store.experiment(self._id)

    @property
    def title(self) -> str:
        return self._meta().title

    @property
    def description(self) -> str | None:
        return self._meta().description

    @property
    def tags(self) -> list[str]:
        return list(self._meta().tags)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self._meta().settings)

    @property
    def directory(self) -> str:
        """The experiment's folder (task directories, supervisor log)."""
        return self._store.experiment_dir(self._id)

    @property
    def store(self) -> Store:
        return self._store

    def _meta(self) -> ExperimentRecord:
        if self._record_cache is None:
            self._record_cache = self._record
        return self._record_cache

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        return None  # leaving the block launches nothing

    def __repr__(self) -> str:
        return f"Experiment({self._id!r})"

    # --- tasks ------------------------------------------------------------------------------
    def add(
        self,
        task: Any,
        *,
        executor: Executor | None = None,
        name: str | None = None,
        dependencies: Sequence[str] | str | None = None,
        plugins: Sequence[Plugin] | None = None,
    ) -> Any:
        """Add a task (returns its id) or a list of tasks run in parallel (returns their ids)."""
        if self._record.launched_at is not None:
            raise ExperimentStateError(
                f"experiment {self._id} has been launched: tasks cannot be added to it now; "
                "create a new experiment (or reproduce this one) and add them there"
            )
        group = isinstance(task, (list, tuple))
        tasks = list(task) if group else [task]
        if not tasks:
            raise ConfigError("add() got an empty list of tasks")
        for t in tasks:
            if not isinstance(t, (Config, Partial, Script)):
                raise ConfigError(
                    f"a task must be run.Config, run.Partial or run.Script, got {type(t).__name__}: {t!r}"
                )
        if executor is None:
            executor = resolve_export("LocalExecutor")()
        if not isinstance(executor, Executor):
            raise ConfigError(
                f"executor must be a runyard executor (run.LocalExecutor(), ...), got {executor!r}"
            )
        pm = plugin_manager()
        pm.executors.executor_class(executor.kind)  # a clear error if its plugin is missing
        existing = self._known_ids()
        deps = self._check_dependencies(dependencies, existing)
        plugins = list(plugins or [])
        for p in plugins:
            if not (hasattr(p, "modify_task") or hasattr(p, "modify_executor")):
                raise ConfigError(f"plugins must have modify_task/modify_executor, got {p!r}")
        base = naming.check_name(name, "task name") if name is not None else self._default_name(tasks[0])
        ids: list[str] = []
        rows = []
        taken = set(existing)
        for i, t in enumerate(tasks):
            task_id = self._unique(f"{base}-{i}" if group else base, taken)
            taken.add(task_id)
            spec = TaskSpec(copy.deepcopy(t), copy.deepcopy(executor), task_id, self._id)
            pm.modify_task(spec)
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
            rows.append((task_id, encoded, unstructured, deps, applied))
            ids.append(task_id)
        self._store_tasks(rows)
        existing.update(ids)  # the cache stays whole without reading every id again
        return ids if group else ids[0]

    def _known_ids(self) -> set[str]:
        """The experiment's task ids, cached: read again only when the store has more tasks
        than the cache knows (another process, or reproduce(), added some). Without the
        cache every add() would read every id, and adding n tasks would take O(n²)."""
        cache = self._ids_cache
        if cache is None or len(cache) != self._store.task_count(self._id):
            cache = self._ids_cache = set(self._store.task_ids(self._id))
        return cache

    def _check_dependencies(self, dependencies: Any, existing: set[str]) -> list[str]:
        if dependencies is None:
            return []
        if isinstance(dependencies, str):
            dependencies = [dependencies]
        if not isinstance(dependencies, (list, tuple)):
            raise ConfigError(f"dependencies must be a list of task ids, got {dependencies!r}")
        out = []
        for dep in dependencies:
            if not isinstance(dep, str) or dep not in existing:
                known = ", ".join(sorted(existing)) or "none yet"
                raise ConfigError(
                    f"unknown dependency {dep!r}: dependencies name ids returned by earlier "
                    f"add() calls (this experiment has: {known})"
                )
            if dep not in out:
                out.append(dep)
        return out

    @staticmethod
    def _default_name(task: Any) -> str:
        if isinstance(task, Script):
            return naming.slug(os.path.basename(task.path)) if task.path else "script"
        return naming.slug(target_name(task._target).split(".")[-1])

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

    def _store_tasks(self, rows: list[tuple[str, Any, dict[str, Any], list[str], list[Any]]]) -> None:
        """Write each task ``(id, encoded task, unstructured executor, dependencies, plugins)``
        to its task.json and to the store, with no secret value (``redact.conceal``)."""
        settings = self._meta().settings
        stored = []
        for task_id, task, executor, deps, applied in rows:
            redact.conceal(self._id, task_id, executor, task)
            task_json = serialization.dumps(task)
            self._write_task_file(task_id, task_json, settings)
            stored.append((task_id, task_json, serialization.dumps(executor), deps, applied))
        self._store.add_task(self._id, stored)

    def _write_task_file(self, task_id: str, task_json: str, settings: dict[str, Any]) -> None:
        task_dir = self._store.task_dir(self._id, task_id)
        os.makedirs(task_dir, mode=0o700, exist_ok=True)  # others read nothing, whatever the umask
        body = (
            '{"task": ' + task_json + ', "main_path": ' + json.dumps(self._meta().main_path)
            + ', "python_path": ' + json.dumps(settings.get("python_path") or []) + "}"
        )  # fmt: skip
        tmp = os.path.join(task_dir, f".{TASK}.tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(body)
        os.replace(tmp, os.path.join(task_dir, TASK))

    @property
    def tasks(self) -> list[TaskView]:
        """A fresh list of task views, in the order the tasks were added."""
        self._sync()
        return [self._view(t) for t in self._store.tasks(self._id)]

    def _view(self, t: TaskRecord) -> TaskView:
        return TaskView(
            id=t.id, name=t.id, status=t.status, job_id=t.job_id,
            local_directory=self._store.task_dir(self._id, t.id),
            start_time=timestamp(t.start_time), end_time=timestamp(t.end_time),
            attempts=t.attempts, exit_code=t.exit_code, reason=t.reason,
            dependencies=list(t.dependencies), executor_json=t.executor,
        )  # fmt: skip

    def _task(self, task_id: str) -> TaskRecord:
        if not isinstance(task_id, str):
            raise ConfigError(f"task id must be a string, got {task_id!r}")
        record = self._store.task(self._id, task_id)
        if record is None:
            known = ", ".join(t.id for t in self._store.tasks(self._id)) or "none"
            raise UnknownTaskError(f"experiment {self._id} has no task {task_id!r} (its tasks: {known})")
        return record

    def status(self) -> State:
        """The experiment's state from its tasks' states."""
        self._sync()
        return experiment_state(self._store.task_states(self._id))

    def _sync(self) -> None:
        """Read the backends' news into the store when no process drives the experiment
        (a detached experiment whose jobs drive themselves, or one whose driver died)."""
        states = self._store.task_states(self._id)
        if all(s in FINAL_STATES for s in states) or self._record.launched_at is None:
            return
        if not self.driver_alive():
            try:
                Driver(self._store, self._id, kind="sync").poll_once()
            except DiskFullError as exc:  # what the store holds is still worth showing
                warnings.warn(f"{exc} (the state shown may be behind the backends')", stacklevel=3)

    # --- running ----------------------------------------------------------------------------
    def run(
        self,
        *,
        detach: bool = False,
        sequential: bool = False,
        tail_logs: bool = False,
        direct: bool = False,
        on_interrupt: str | None = None,
    ) -> State:
        """Launch every task. Attached (default): return when all have ended.

        ``detach``: return once a supervisor process drives the experiment (it outlives this
        process). ``sequential``: one task at a time, in the order added. ``direct``: every
        task in this process, in order, no executor. ``tail_logs``: show task output live.
        ``on_interrupt``: what Ctrl+C does while attached, ``"cancel"`` (default, or
        ``$RUNYARD_ON_INTERRUPT``) or ``"detach"``.
        """
        mode = on_interrupt or os.environ.get("RUNYARD_ON_INTERRUPT") or "cancel"
        if mode not in ON_INTERRUPT:
            raise ConfigError(f"on_interrupt must be 'cancel' or 'detach', got {mode!r}")
        if detach and direct:
            raise ConfigError("run(detach=True, direct=True) contradicts itself: direct runs in this process")
        options = {"detach": detach, "sequential": sequential, "tail_logs": tail_logs, "direct": direct}
        if not self._store.mark_launched(self._id, options):
            raise ExperimentStateError(
                f"experiment {self._id} was launched already (status {self.status()}); use retry() "
                "for ended tasks, or create_snapshot().reproduce() for a new run"
            )
        self._record_cache = None
        if not self._store.task_states(self._id):
            warnings.warn(f"experiment {self._id} has no tasks: nothing to run", stacklevel=2)
            self._store.mark_ended(self._id, True)
            return self.status()
        if direct:
            from runyard.direct import run_direct

            return run_direct(self, tail_logs=tail_logs)
        if detach:
            return self._launch_detached()
        return self._drive_attached(tail_logs=tail_logs, on_interrupt=mode)

    def _launch_detached(self) -> State:
        """Launch what can be launched now; a supervisor drives the rest, unless nothing
        is left to drive (every job went to a backend that drives itself)."""
        driver = Driver(self._store, self._id, kind="launcher")
        if not driver.claim():
            raise ExperimentStateError(f"experiment {self._id} is driven by another live process")
        try:
            driver.run_once()
            needed = driver.needs_driver()
        finally:
            driver.release()
        if needed:
            from runyard.supervisor import start_supervisor

            start_supervisor(self._store, self._id)
        return self.status()

    def dry_run(self, *, file: Any = None) -> dict[str, str]:
        """What each task would launch (an sbatch script, a container spec, a command), by
        task id, without launching anything; printed to ``file`` (default stdout) too.
        Values of secret environment variables are shown as ``***``."""
        from runyard.scheduler import job_spec

        record = self._record
        out: dict[str, str] = {}
        for task in self._store.tasks(self._id):
            executor = self._executor_of(task)
            spec = job_spec(
                record, task, executor, task.attempts + 1, self._store.task_dir(self._id, task.id),
                with_secrets=False,  # shown masked: no need to look for their values
            )  # fmt: skip
            out[task.id] = plugin_manager().backend(executor.kind).dry_run(spec)
        stream = file if file is not None else sys.stdout
        for task_id, text in out.items():
            stream.write(f"--- {task_id}\n{text.rstrip()}\n")
        return out

    def _drive_attached(self, *, tail_logs: bool, on_interrupt: str) -> State:
        from runyard.progress import make_observer

        observer = make_observer(self, tail_logs=tail_logs)
        driver = Driver(self._store, self._id, kind="attached", observer=observer)
        if not driver.claim():
            raise ExperimentStateError(
                f"experiment {self._id} is driven by another live process "
                f"(pid {self._record.driver_pid}); follow it with `runyard status {self._id}`"
            )
        try:
            state = driver.run()
            observer.finish(state)
            return state
        except KeyboardInterrupt:
            if on_interrupt == "detach":
                driver.release()
                from runyard.supervisor import start_supervisor

                pid = start_supervisor(self._store, self._id)
                observer.say(f"detached: a supervisor (pid {pid}) drives {self._id} on")
            else:
                driver.cancel_all("cancelled (interrupted)")
                observer.say(f"interrupted: cancelled the tasks of {self._id} that had not ended")
            raise
        finally:
            driver.release()

    def driver_alive(self) -> bool:
        """Whether a live process (attached caller or supervisor) drives this experiment."""
        r = self._record
        return bool(
            r.driver_pid and r.driver_heartbeat and time.time() - r.driver_heartbeat < STALE_AFTER
            and pid_alive(r.driver_pid)
        )  # fmt: skip

    def wait(self, timeout: float | None = None, interval: float = 0.2) -> State:
        """Block until every task has ended; returns the experiment's state.

        Raises ExperimentStateError if nothing drives the experiment any more (its supervisor
        died: `runyard takeover`), TimeoutError after ``timeout`` seconds.
        """
        _check_number(timeout, "timeout", allow_zero=True)
        _check_number(interval, "interval")
        self._check_launched("wait for")
        deadline = None if timeout is None else time.monotonic() + timeout
        orphaned_since: float | None = None
        while True:
            states = self._store.task_states(self._id)
            if all(s in FINAL_STATES for s in states):
                return experiment_state(states)
            if self.driver_alive():
                orphaned_since = None
            elif not Driver(self._store, self._id, kind="sync").needs_driver_now():
                self._sync()  # the jobs drive themselves: just read their news
                orphaned_since = None
            elif orphaned_since is None:
                orphaned_since = time.monotonic()
            elif time.monotonic() - orphaned_since > STALE_AFTER:
                raise ExperimentStateError(
                    f"no process drives experiment {self._id} any more (its supervisor died?): "
                    f"take it over with `runyard takeover {self._id}`"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"experiment {self._id} still {experiment_state(states)} after {timeout}s")
            time.sleep(interval)

    def takeover(self, *, detach: bool = True) -> State:
        """Drive an experiment whose driver died: a new supervisor (or this process)."""
        self._check_launched("take over")
        if self.driver_alive():
            raise ExperimentStateError(
                f"experiment {self._id} is still driven by live pid {self._record.driver_pid}"
            )
        if all(s in FINAL_STATES for s in self._store.task_states(self._id)):
            return self.status()
        if detach:
            from runyard.supervisor import start_supervisor

            start_supervisor(self._store, self._id)
            return self.status()
        return self._drive_attached(tail_logs=False, on_interrupt="cancel")

    def _check_launched(self, doing: str) -> None:
        states = self._store.task_states(self._id)
        if self._record.launched_at is None and not all(s in FINAL_STATES for s in states):
            raise ExperimentStateError(
                f"experiment {self._id} has not been launched: nothing to {doing}; "
                f"launch it with run.Experiment.from_id({self._id!r}).run()"
            )

    def _ensure_driver(self) -> None:
        """After retry/resume: make sure some process drives the experiment."""
        if self._record.launched_at is None or self.driver_alive():
            return
        from runyard.supervisor import start_supervisor

        start_supervisor(self._store, self._id)

    # --- control ------------------------------------------------------------------------------
    def _executor_of(self, task: TaskRecord) -> Executor:
        return serialization.structure_executor(json.loads(task.executor))

    def cancel(self, task_id: str) -> None:
        """Cancel a task that has not ended (its job is ended on its backend)."""
        task = self._task(task_id)
        if task.status in FINAL_STATES:
            raise TaskStateError(f"task {task_id!r} has already ended ({task.status}): nothing to cancel")
        cancel_task(self._store, plugin_manager(), task, "cancelled by user", self._executor_of(task))

    def cancel_all(self) -> list[str]:
        """Cancel every task that has not ended; returns their ids."""
        done = []
        for task in self._store.tasks(self._id):
            if task.status not in FINAL_STATES and cancel_task(
                self._store, plugin_manager(), task, "cancelled by user", self._executor_of(task)
            ):
                done.append(task.id)
        return done

    def retry(self, task_id: str) -> list[str]:
        """Run an ended task again, and every ended task that depends on it; returns their ids."""
        task = self._task(task_id)
        if task.status not in FINAL_STATES:
            raise TaskStateError(
                f"task {task_id!r} is {task.status}: only a task that has ended can be retried"
                + (" (cancel it first)" if task.status in LIVE_STATES else "")
            )
        all_tasks = self._store.tasks(self._id)
        again = [task_id]
        for t in all_tasks:  # in add order, so dependencies come before dependents
            if t.id not in again and t.status in FINAL_STATES and set(t.dependencies) & set(again):
                again.append(t.id)
        self._store.reset_tasks(self._id, again)
        self._ensure_driver()
        return again

    def pause(self, task_id: str) -> None:
        """Suspend a running task, or hold a pending one."""
        task = self._task(task_id)
        if task.status is State.PAUSED:
            raise TaskStateError(f"task {task_id!r} is paused already")
        if task.status in FINAL_STATES:
            raise TaskStateError(f"task {task_id!r} has ended ({task.status}): it cannot be paused")
        if task.status is State.PENDING:
            if not self._store.transition(
                self._id, task_id, State.PAUSED, when=[State.PENDING], paused_from=State.PENDING
            ):
                return self.pause(task_id)  # it moved meanwhile: decide again
            return None
        if task.job_id is None:
            # a driver is launching it this moment (right after run(), retry(), resume()):
            # wait for its job id rather than fail a call that makes sense
            deadline = time.monotonic() + 30.0
            while task.status is State.SUBMITTED and task.job_id is None and time.monotonic() < deadline:
                time.sleep(0.01)
                task = self._task(task_id)
            if task.status is not State.SUBMITTED or task.job_id is not None:
                return self.pause(task_id)
            raise TaskStateError(f"task {task_id!r} is still being launched; pause it in a moment")
        executor = self._executor_of(task)
        try:
            plugin_manager().backend(executor.kind).pause(job_ref(self._store, task, executor))
        except NotImplementedError as exc:
            raise TaskStateError(f"task {task_id!r} cannot be paused: {exc}") from None
        self._store.transition(
            self._id, task_id, State.PAUSED, when=[task.status], attempt=task.attempts,
            paused_from=task.status,
        )  # fmt: skip
        return None

    def resume(self, task_id: str) -> None:
        """Continue a paused task (a held pending task becomes pending again)."""
        task = self._task(task_id)
        if task.status is not State.PAUSED:
            raise TaskStateError(f"task {task_id!r} is {task.status}, not PAUSED: nothing to resume")
        if task.job_id is None:
            self._store.transition(self._id, task_id, State.PENDING, when=[State.PAUSED], paused_from=None)
            self._ensure_driver()
            return
        executor = self._executor_of(task)
        try:
            plugin_manager().backend(executor.kind).resume(job_ref(self._store, task, executor))
        except NotImplementedError as exc:
            raise TaskStateError(f"task {task_id!r} cannot be resumed: {exc}") from None
        self._store.transition(
            self._id, task_id, task.paused_from or State.RUNNING, when=[State.PAUSED],
            attempt=task.attempts, paused_from=None,
        )  # fmt: skip

    # --- logs --------------------------------------------------------------------------------------
    def _log_ref(self, task: TaskRecord, attempt: int | None = None) -> tuple[LogRef, Any]:
        executor = self._executor_of(task)
        ref = LogRef(self._store.task_dir(self._id, task.id), attempt or task.attempts, executor, task.job_id)
        return ref, plugin_manager().log_source(executor)

    def get_logs(self, task_id: str) -> TaskLogs:
        """Output of the task's latest attempt and its exit code (None while it runs)."""
        task = self._task(task_id)
        if task.attempts == 0:
            return TaskLogs(exit_code=None, stdout="", stderr="", attempt=0)
        ref, source = self._log_ref(task)
        return TaskLogs(
            exit_code=task.exit_code if task.status in FINAL_STATES else None,
            stdout=source.read(ref, "stdout.log").decode("utf-8", "replace"),
            stderr=source.read(ref, "stderr.log").decode("utf-8", "replace"),
            attempt=task.attempts,
        )

    def get_all_logs(self) -> dict[str, TaskLogs]:
        """``get_logs`` of every task, by task name."""
        return {t.id: self.get_logs(t.id) for t in self._store.tasks(self._id)}

    def stream_logs(self, task_id: str, follow: bool = True, interval: float = 0.2) -> Iterator[LogEntry]:
        """Output lines of the task with their timestamps; with ``follow``, until it ends
        (across retries: each attempt's lines in turn)."""
        _check_number(interval, "interval")
        task = self._task(task_id)
        attempt = max(task.attempts, 1)
        offset = 0
        while True:
            if follow:
                self._sync()  # no driver (self-driving jobs): read the backend's news, or never end
            task = self._task(task_id)
            if task.attempts >= attempt and task.attempts > 0:
                ref, source = self._log_ref(task, attempt)
                data = source.read(ref, "journal.log", offset)
                entries, used = parse_journal(data)
                offset += used
                yield from entries
            if task.attempts > attempt:  # a newer attempt started: drain this one, move on
                ref, source = self._log_ref(task, attempt)
                entries, used = parse_journal(source.read(ref, "journal.log", offset))
                yield from entries
                attempt, offset = attempt + 1, 0
                continue
            if not follow or task.status in FINAL_STATES:
                if task.status in FINAL_STATES and task.attempts > 0:
                    ref, source = self._log_ref(task, attempt)
                    tail = source.read(ref, "journal.log", offset)
                    entries, _ = parse_journal(tail if tail.endswith(b"\n") else tail + b"\n")
                    yield from entries
                return
            time.sleep(interval)

    # --- metadata and artifacts -------------------------------------------------------------------
    def add_metadata(self, values: dict[str, Any]) -> None:
        """Merge ``values`` (JSON values) into the experiment's metadata."""
        self._store.add_metadata(self._id, _check_metadata(values))

    def get_metadata(self) -> dict[str, Any]:
        """All metadata, including what was given at creation."""
        return self._store.metadata(self._id)

    def add_artifact(
        self, name: str, path: str, description: str | None = None, *, store: str = "local"
    ) -> Artifact:
        """Record a file or folder (size, SHA-256) through an artifact store."""
        naming.check_name(name, "artifact name")
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ConfigError(f"artifact path must be a path, got {path!r}")
        if description is not None and not isinstance(description, str):
            raise ConfigError(f"artifact description must be a string, got {description!r}")
        backend = plugin_manager().artifact_store(store)
        stored = backend.put(self.directory, name, os.fspath(path))
        now = time.time()
        self._store.add_artifact(
            self._id,
            {"name": name, "path": stored.path, "description": description, "size": stored.size,
             "sha256": stored.sha256, "created_at": now, "store": store},
        )  # fmt: skip
        return Artifact(name, stored.path, description, stored.size, stored.sha256, utc(now), store)

    def get_artifacts(self) -> dict[str, Artifact]:
        """Recorded artifacts by name."""
        return {
            row["name"]: Artifact(
                row["name"],
                row["path"],
                row["description"],
                row["size"],
                row["sha256"],
                utc(row["created_at"]),
                row["store"],
            )
            for row in self._store.artifacts(self._id)
        }

    def fetch_artifact(self, name: str, dest: str | None = None) -> str:
        """A local path holding artifact ``name`` (copied to ``dest`` when given)."""
        artifacts = self.get_artifacts()
        if name not in artifacts:
            raise ConfigError(
                f"experiment {self._id} has no artifact {name!r} (it has: {', '.join(artifacts) or 'none'})"
            )
        a = artifacts[name]
        return plugin_manager().artifact_store(a.store).get(a, dest)

    # --- reproducibility -----------------------------------------------------------------------
    def create_snapshot(self) -> Any:
        """Everything needed to run this experiment again (see ExperimentSnapshot)."""
        from runyard.snapshot import create_snapshot

        return create_snapshot(self)

    def track_config_version(self, name: str, config: Any, description: str | None = None) -> int:
        """Store a copy of ``config`` as the next version of ``name``; returns the version."""
        naming.check_name(name, "config name")
        if description is not None and not isinstance(description, str):
            raise ConfigError(f"config version description must be a string, got {description!r}")
        encoded = serialization.dumps(serialization.encode(config, where=f"config {name!r}"))
        return self._store.add_config_version(self._id, name, encoded, description)

    def get_config_history(self, name: str) -> dict[int, ConfigVersion]:
        """Every stored version of ``name``: version → (version, config, description, created_at)."""
        out = {}
        for version, config, description, created in self._store.config_versions(self._id, name):
            out[version] = ConfigVersion(
                version,
                serialization.decode(json.loads(config)),
                description,
                utc(created),
            )
        return out

    # used by reproduce(): tasks that are already encoded
    def _add_encoded(
        self,
        rows: list[tuple[str, str, str, list[str], list[Any]]],
        main_path: str | None = None,
        python_path: list[str] | None = None,
    ) -> None:
        if main_path or python_path:  # tasks from another script: import them as it did
            self._store.set_paths(self._id, main_path, python_path)
            self._record_cache = None
        self._store_tasks([(i, json.loads(t), json.loads(e), d, p) for i, t, e, d, p in rows])
