"""``Experiment``: the user's facade. It checks arguments and hands the work to the engine
(``engine.py``: one handle per task), the drivers (``running.py``) and the store.

Every method works the same on an experiment created here or rebuilt in another process
with :meth:`Experiment.from_id` / :meth:`Experiment.from_title`: all state is in the store.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import attrs

from runyard import checks, naming, running, serialization, snapshot
from runyard.artifacts import Artifact, ExperimentInfo
from runyard.engine import Engine
from runyard.errors import ConfigError, ExperimentStateError
from runyard.executor import Executor
from runyard.jobfiles import utc
from runyard.logs import LogEntry, TaskLogs
from runyard.metrics import MetricParser, MetricPoint, parser_for
from runyard.registries import Plugin
from runyard.states import FINAL_STATES, RETRY_ON, State
from runyard.store import ExperimentRecord, Settings, Store, open_store
from runyard.views import AttemptView, ConfigVersion, EventView, TaskView, experiment_status

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ON_INTERRUPT = ("cancel", "detach")
__all__ = [
    "AttemptView", "ConfigVersion", "EventView", "Experiment", "ExperimentSnapshot", "MetricPoint", "Plugin",
    "TaskView",
]  # fmt: skip


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
        max_parallel: int | None = None,
        retry_on: Sequence[str] = RETRY_ON,
        metric_patterns: dict[str, str] | None = None,
    ) -> None:
        naming.check_name(title, "experiment title")
        checks.check_text(description, "description")
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"tags must be a list of strings, got {tags!r}")
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        checks.check_number(max_retries, "max_retries", integer=True, allow_zero=True)
        checks.check_number(timeout, "timeout")
        # the driver refreshes its heartbeat in the store that often: not every few ms
        checks.check_number(checkpoint_interval, "checkpoint_interval", at_least=0.1)
        checks.check_number(max_parallel, "max_parallel", integer=True)
        retry_kinds = checks.check_retry_on(retry_on)
        patterns = checks.check_metric_patterns(metric_patterns)
        meta = checks.check_metadata(metadata or {})
        main = sys.modules.get("__main__")
        # a script run as `python file.py` (not `-m pkg`, whose targets import by module name)
        main_file = getattr(main, "__file__", None) if getattr(main, "__spec__", None) is None else None
        here = os.getcwd()
        script_dir = os.path.dirname(os.path.abspath(main_file)) if main_file else None
        settings = Settings(
            log_level=log_level, max_retries=max_retries, timeout=timeout,
            checkpoint_interval=checkpoint_interval, cwd=here, python_path=[p for p in (here, script_dir) if p],
            max_parallel=max_parallel, retry_on=retry_kinds, metric_patterns=patterns,
        )  # fmt: skip
        self._engine = Engine.create(
            open_store(base_dir), title, description, list(tags), settings, meta,
            os.path.abspath(main_file) if main_file else None,
        )  # fmt: skip

    # --- identity ---------------------------------------------------------------------------
    @classmethod
    def _attach(cls, store: Store, record: ExperimentRecord) -> Experiment:
        self = cls.__new__(cls)
        self._engine = Engine(store, record.id)
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
        return self._engine.experiment_id

    id = experiment_id

    @property
    def title(self) -> str:
        return self._engine.record.title

    @property
    def description(self) -> str | None:
        return self._engine.record.description

    @property
    def tags(self) -> list[str]:
        return list(self._engine.record.tags)

    @property
    def settings(self) -> dict[str, Any]:
        return self._engine.record.settings.to_dict()

    @property
    def directory(self) -> str:
        """The experiment's folder (task directories, supervisor log)."""
        return self._engine.directory

    @property
    def store(self) -> Store:
        return self._engine.store

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        return None  # leaving the block launches nothing

    def __repr__(self) -> str:
        return f"Experiment({self.experiment_id!r})"

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
        if self._engine.reload().launched_at is not None:
            raise ExperimentStateError(
                f"experiment {self.experiment_id} has been launched: tasks cannot be added to it now; "
                "create a new experiment (or reproduce this one) and add them there"
            )
        group = isinstance(task, (list, tuple))
        tasks = checks.check_tasks(list(task) if group else [task])
        executor = checks.check_executor(executor)
        self._engine.plugins.executors.executor_class(executor.kind)  # a clear error if its plugin is missing
        deps = checks.check_dependencies(dependencies, self._engine.known_ids())
        plugins = checks.check_plugins(plugins)
        base = naming.check_name(name, "task name") if name is not None else checks.default_name(tasks[0])
        ids = self._engine.add(tasks, executor, base, group=group, dependencies=deps, plugins=plugins)
        return ids if group else ids[0]

    @property
    def tasks(self) -> list[TaskView]:
        """A fresh list of task views, in the order the tasks were added."""
        running.sync(self._engine)
        engine = self._engine
        folder = partial(naming.task_dir, engine.directory)
        return [
            TaskView.of(t.record, folder(t.id), partial(engine.executor, t.record)) for t in engine.handles()
        ]

    def attempts(self, task_id: str) -> list[AttemptView]:
        """The task's attempts, oldest first (each run of it, retries and re-runs included)."""
        running.sync(self._engine)
        return [AttemptView.of(a) for a in self._engine.task(task_id).attempts()]

    def status(self) -> State:
        """The experiment's state from its tasks' states; ``CREATED`` while it has never been
        launched (its tasks are ``PENDING``), unless every task has ended all the same."""
        states = running.sync(self._engine)
        return State(experiment_status(self._engine.reload().launched_at is not None, states))

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
        if not direct:  # more GPUs (say) than the machine has: said now, not a task that waits for ever
            self._engine.check_resources()
        options = {"detach": detach, "sequential": sequential, "tail_logs": tail_logs, "direct": direct}
        if not self.store.mark_launched(self.experiment_id, options):
            raise ExperimentStateError(
                f"experiment {self.experiment_id} was launched already (status {self.status()}); use "
                "retry() for ended tasks, or create_snapshot().reproduce() for a new run"
            )
        if not self.store.task_states(self.experiment_id):
            warnings.warn(f"experiment {self.experiment_id} has no tasks: nothing to run", stacklevel=2)
            self.store.mark_ended(self.experiment_id, True)
            return self.status()
        if direct:
            return running.run_direct(self._engine)
        if detach:
            running.run_detached(self._engine)
            return self.status()
        return running.run_attached(self._engine, tail_logs=tail_logs, on_interrupt=mode)

    def dry_run(self, *, file: Any = None) -> dict[str, str]:
        """What each task would launch (an sbatch script, a container spec, a command), by
        task id, without launching anything; printed to ``file`` (default stdout) too.
        Values of secret environment variables are shown as ``***``."""
        out = self._engine.dry_run()
        stream = file if file is not None else sys.stdout
        for task_id, text in out.items():
            stream.write(f"--- {task_id}\n{text.rstrip()}\n")
        return out

    def driver_alive(self) -> bool:
        """Whether a live process (attached caller or supervisor) drives this experiment."""
        return running.driver_alive(self._engine)

    def wait(self, timeout: float | None = None, interval: float = 0.2) -> State:
        """Block until every task has ended and the experiment's end is recorded (its ``ended``
        event); returns the experiment's state.

        Raises ExperimentStateError if nothing drives the experiment any more (its supervisor
        died: `runyard takeover`), TimeoutError after ``timeout`` seconds.
        """
        checks.check_number(timeout, "timeout", allow_zero=True)
        checks.check_number(interval, "interval")
        self._check_launched("wait for")
        return running.wait(self._engine, timeout, interval)

    def takeover(self, *, detach: bool = True) -> State:
        """Drive an experiment whose driver died: a new supervisor (or this process)."""
        self._check_launched("take over")
        state = running.takeover(self._engine, detach=detach)
        return self.status() if state is None else state

    def _check_launched(self, doing: str) -> None:
        states = self.store.task_states(self.experiment_id)
        if self._engine.reload().launched_at is None and not all(s in FINAL_STATES for s in states):
            raise ExperimentStateError(
                f"experiment {self.experiment_id} has not been launched: nothing to {doing}; "
                f"launch it with run.Experiment.from_id({self.experiment_id!r}).run()"
            )

    # --- control ------------------------------------------------------------------------------
    def cancel(self, task_id: str) -> None:
        """Cancel a task that has not ended (its job is ended on its backend)."""
        self._engine.task(task_id).cancel("cancelled by user", strict=True)

    def cancel_all(self) -> list[str]:
        """Cancel every task that has not ended; returns their ids."""
        return self._engine.cancel_all("cancelled by user")

    def retry(self, task_id: str) -> list[str]:
        """Run an ended task again, and every ended task that depends on it; returns their ids."""
        again = self._engine.retry(task_id)
        running.ensure_driver(self._engine)
        return again

    def pause(self, task_id: str) -> None:
        """Suspend a running task, or hold a pending one."""
        self._engine.task(task_id).pause()

    def resume(self, task_id: str) -> None:
        """Continue a paused task (a held pending task becomes pending again)."""
        if self._engine.task(task_id).resume():
            running.ensure_driver(self._engine)

    # --- logs --------------------------------------------------------------------------------------
    def get_logs(self, task_id: str, attempt: int | None = None) -> TaskLogs:
        """Output of one attempt of the task (None: the latest) and its exit code (None while
        it runs)."""
        return self._engine.task(task_id).logs(attempt)

    def get_all_logs(self) -> dict[str, TaskLogs]:
        """``get_logs`` of every task, by task name."""
        return {h.id: h.logs() for h in self._engine.handles()}

    def stream_logs(
        self, task_id: str, follow: bool = True, interval: float = 0.2, attempt: int | None = None
    ) -> Iterator[LogEntry]:
        """Output lines of the task with their timestamps, from ``attempt`` (None: the latest);
        with ``follow``, until it ends (across retries: each attempt's lines in turn)."""
        checks.check_number(interval, "interval")
        handle = self._engine.task(task_id)
        handle.attempt_number(attempt)  # a wrong attempt fails here, not at the first next()
        return handle.stream(follow=follow, interval=interval, attempt=attempt, sync=self._sync)

    def _sync(self) -> None:
        running.sync(self._engine)

    # --- metrics and events -----------------------------------------------------------------------
    def get_metrics(self, task_id: str, attempt: int | None = None) -> list[MetricPoint]:
        """The task's metric points of one attempt (None: every attempt, oldest first): what it
        logged with ``runyard.job.log_metrics`` and what its output says (``metric_patterns``),
        each attempt's merged by time."""
        running.sync(self._engine)
        return self._metric_parser().task_points(self._engine.task(task_id), attempt)

    def get_all_metrics(self) -> dict[str, list[MetricPoint]]:
        """``get_metrics`` of every task (every attempt), by task id, in the order added."""
        running.sync(self._engine)
        parser = self._metric_parser()
        return {h.id: parser.task_points(h) for h in self._engine.handles()}

    def _metric_parser(self) -> MetricParser:
        # checked again: the store may have been edited since (a clear error, not a traceback)
        return parser_for(checks.check_metric_patterns(self._engine.reload().settings.metric_patterns))

    def events(self, since: int = 0) -> list[EventView]:
        """Every state change, oldest first: of each task (with its attempt and reason) and of
        the experiment itself (created, launched, ended, reopened by a retry). ``since``: only
        the events after the one with that ``seq``."""
        running.sync(self._engine)
        views = (EventView.of(row) for row in self.store.events(self.experiment_id, since))
        return [v for v in views if v is not None]

    def report(self, path: str | None = None) -> str:
        """Write the experiment's one-file HTML report (tasks, DAG, timeline of every attempt,
        metric charts, metadata, artifacts, config versions); returns the path written.
        ``path`` None: ``report.html`` in the experiment's folder."""
        from runyard import report

        return report.write(self, path)

    # --- metadata and artifacts -------------------------------------------------------------------
    def add_metadata(self, values: dict[str, Any]) -> None:
        """Merge ``values`` (JSON values) into the experiment's metadata."""
        self.store.add_metadata(self.experiment_id, checks.check_metadata(values))

    def get_metadata(self) -> dict[str, Any]:
        """All metadata, including what was given at creation."""
        return self.store.metadata(self.experiment_id)

    def add_artifact(
        self, name: str, path: str, description: str | None = None, *, store: str = "local"
    ) -> Artifact:
        """Record a file or folder (size, SHA-256) through an artifact store."""
        naming.check_name(name, "artifact name")
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ConfigError(f"artifact path must be a path, got {path!r}")
        checks.check_text(description, "artifact description")
        info = ExperimentInfo(
            self.experiment_id, self.directory, tuple(t.executor for t in self._engine.handles())
        )
        stored = self._engine.plugins.artifact_store(store).put(info, name, os.fspath(path))
        artifact = Artifact(
            name, stored.path, description, stored.size, stored.sha256, utc(time.time()), store
        )
        self.store.add_artifact(self.experiment_id, artifact.to_row())
        return artifact

    def get_artifacts(self) -> dict[str, Artifact]:
        """Recorded artifacts by name."""
        return {row["name"]: Artifact.of_row(row) for row in self.store.artifacts(self.experiment_id)}

    def fetch_artifact(self, name: str, dest: str | None = None) -> str:
        """A local path holding artifact ``name`` (copied to ``dest`` when given)."""
        artifacts = self.get_artifacts()
        if name not in artifacts:
            raise ConfigError(
                f"experiment {self.experiment_id} has no artifact {name!r} "
                f"(it has: {', '.join(artifacts) or 'none'})"
            )
        a = artifacts[name]
        return self._engine.plugins.artifact_store(a.store).get(a, dest)

    # --- reproducibility -----------------------------------------------------------------------
    def create_snapshot(self) -> ExperimentSnapshot:
        """Everything needed to run this experiment again (see ExperimentSnapshot)."""
        return ExperimentSnapshot(**snapshot.snapshot_fields(self._engine))

    def track_config_version(self, name: str, config: Any, description: str | None = None) -> int:
        """Store a copy of ``config`` as the next version of ``name``; returns the version."""
        naming.check_name(name, "config name")
        checks.check_text(description, "config version description")
        encoded = serialization.dumps(serialization.encode(config, where=f"config {name!r}"))
        return self.store.add_config_version(self.experiment_id, name, encoded, description)

    def get_config_history(self, name: str) -> dict[int, ConfigVersion]:
        """Every stored version of ``name``: version → (version, config, description, created_at)."""
        return {
            version: ConfigVersion(
                version, serialization.decode(json.loads(config)), description, utc(created)
            )
            for version, config, description, created in self.store.config_versions(self.experiment_id, name)
        }


@attrs.define
class ExperimentSnapshot(snapshot.Snapshot):
    """Everything needed to run an experiment again (``runyard.snapshot``), and ``reproduce``."""

    def reproduce(self, *, base_dir: str | None = None) -> Experiment:
        """A new, not yet launched experiment with the same tasks, settings and metadata.

        Everything is checked first: on any error nothing is created."""
        plan = self.checked()
        s = self.settings
        try:  # checks the title, tags, metadata and settings before it creates anything
            exp = Experiment(
                self.title, description=self.description, tags=self.tags, metadata=self.metadata,
                log_level=s.get("log_level", "INFO"), max_retries=s.get("max_retries", 0),
                timeout=s.get("timeout"), checkpoint_interval=s.get("checkpoint_interval"), base_dir=base_dir,
                max_parallel=s.get("max_parallel"), retry_on=s.get("retry_on", RETRY_ON),
                metric_patterns=s.get("metric_patterns"),
            )  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(f"cannot reproduce {self._source()}: {exc}") from None
        exp._engine.add_encoded(plan.rows, main_path=plan.main_path, python_path=plan.python_path)
        return exp
