"""Executors (what the user configures) and backends (what launches tasks on them).

An executor is a mutable attrs class with a ``kind`` and ``env_vars``. A backend is the
object that launches, polls, cancels, pauses and resumes jobs for one executor kind; a
plugin registers the pair through the ``runyard_register_executors`` hook.

Every backend launches the same thing, the in-job runner (``runner.py``, or ``runner.sh``
for Script tasks), and reads the same files it writes (see ``jobfiles.py``).
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from runyard import naming
from runyard.errors import ConfigError, ExecutorFieldError
from runyard.launchers import Torchrun, as_launcher
from runyard.states import State


def _check_env_vars(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{type(instance).__name__}.env_vars must be a dict, got {value!r}")
    for k, v in value.items():
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise ConfigError(f"{type(instance).__name__}.env_vars: invalid variable name {k!r}")
        if not isinstance(v, str):
            raise ConfigError(
                f"{type(instance).__name__}.env_vars[{k!r}] must be a string, got {v!r} (write str({v!r}))"
            )


def check_code(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """The validator of a backend's ``code`` field (what ``runyard.packaging.package_code``
    ships with each task): ``'git'``, a directory, or None (nothing)."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(
            f"{type(instance).__name__}.{attribute.name} must be 'git', a directory or None, got {value!r}"
        )


@attrs.define
class Executor:
    """Base class of executors. Subclasses are ``@attrs.define`` classes with a unique ``kind``.

    Unknown keyword arguments raise :class:`ExecutorFieldError` naming the valid fields.
    """

    kind: ClassVar[str] = ""

    env_vars: dict[str, str] = attrs.field(factory=dict, kw_only=True, validator=_check_env_vars)
    #: how the task's processes start in its job: None (one process), ``"torchrun"`` or
    #: ``run.Torchrun(...)`` (``runyard.launchers``)
    launcher: Torchrun | None = attrs.field(default=None, kw_only=True, converter=as_launcher)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs and attrs.has(cls):
            known = {a.alias for a in attrs.fields(cls) if a.init}
            for name in kwargs:
                if name not in known:
                    raise ExecutorFieldError(
                        f"{cls.__name__} has no field {name!r}; its fields are: " + ", ".join(sorted(known))
                    )
        return super().__new__(cls)

    def describe(self) -> str:
        """A short human description for tables (``local``, ``slurm:gpu@cluster``...)."""
        return self.kind

    def resource_request(self) -> dict[str, int]:
        """Units of resources each attempt holds while it runs, by resource (``{"gpu": 2}``: this
        machine's GPUs; a cluster's job slots): core leases them (machine-wide, through the
        store) from the backend's ``resource_pool`` before the launch, and the job finds them in
        ``JobSpec.resources``. Default: none."""
        return {}

    def default_nproc(self) -> int:
        """Processes per node a launcher starts when its ``nproc_per_node`` is None: the
        executor's GPUs per node if it has any, else its tasks per node, else 1."""
        return 1


class AttemptFolders:
    """The folders of one attempt, from its ids (``naming``: never parsed back into ids). A
    mixin for attrs classes with ``experiment_dir``, ``task_id`` and ``attempt`` fields (a
    backend's own record of a job, where those are the job's paths)."""

    __slots__ = ()

    experiment_dir: str
    task_id: str
    attempt: int

    @property
    def task_dir(self) -> str:
        return naming.task_dir(self.experiment_dir, self.task_id)

    @property
    def attempt_dir(self) -> str:
        return naming.attempt_dir(self.experiment_dir, self.task_id, self.attempt)


@attrs.define
class JobRef(AttemptFolders):
    """One attempt of one task, and the job that runs it once launched (``job_id``, ``handle``):
    enough to find it from any process. Backends and log sources get ids, never paths to parse;
    ``experiment_dir`` is the experiment's folder on this machine (``naming.task_dir``)."""

    experiment_id: str
    task_id: str
    attempt: int
    experiment_dir: str
    executor: Executor
    job_id: str = ""
    handle: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class JobSpec(AttemptFolders):
    """Everything a backend needs to launch one attempt of one task.

    ``task_dir`` holds ``task.json`` (written by core); the runner writes ``attempt_dir``.
    ``env`` is the complete set of variables to add to the job's environment (executor
    ``env_vars``, the task's own, and ``RUNYARD_*``).
    """

    experiment_id: str
    task_id: str
    attempt: int
    experiment_dir: str
    executor: Executor
    is_script: bool
    argv: list[str]  # for Script tasks: the program to run; empty for Python tasks
    env: dict[str, str]
    cwd: str | None = None
    after: list[JobRef] = attrs.field(factory=list)  # queued jobs it must wait for (chained)
    #: the executor's launcher (its ``RUNYARD_LAUNCHER`` is in ``env``), for backends that render it
    launcher: Torchrun | None = None
    #: units of machine resources leased for this attempt: ``{"gpu": ["0", "3"]}``
    resources: dict[str, list[str]] = attrs.field(factory=dict)
    #: set on jobs handed over together to a backend that ``throttles_groups``: at most this
    #: many of them may run at once (``Experiment(max_parallel=...)``; Slurm: ``--array=0-K%N``)
    max_parallel: int | None = None

    def ref(self, job_id: str = "", handle: dict[str, Any] | None = None) -> JobRef:
        """The reference of this attempt (of its job, once launched)."""
        return JobRef(
            self.experiment_id, self.task_id, self.attempt, self.experiment_dir, self.executor,
            job_id, dict(handle or {}),
        )  # fmt: skip


@attrs.define
class Launched:
    """What ``Backend.launch`` returns."""

    job_id: str
    handle: dict[str, Any] = attrs.field(factory=dict)
    state: State = State.RUNNING  # SUBMITTED when the backend queues it (a batch scheduler)


@attrs.define
class JobStatus:
    """A backend's view of a job, already cross-checked with the runner's files.

    ``failure``: what kind of failure ended the job, when the backend knows better than the
    exit code (``"oom"``, ``"timeout"``, ``"preempted"``, ``"node_failure"``); None: core
    says ``"error"`` for an exit code, ``"lost"`` for none.
    ``attempt``: the attempt the job is on now, when the backend ran it again by itself (a
    requeued Slurm job: the attempt it started as plus its restarts); core then closes the
    attempts before it with the failure kind ``requeued_by`` ("preempted" when None, or
    "node_failure") and records the new one, on the same job id; ``failure`` stays the new
    attempt's own.
    ``claim``: set when the job is not the one that runs the attempt — another launch's
    runner claimed it (see ``jobfiles.CLAIM``); core then adopts that job (``Backend.adopt``).
    """

    state: State
    exit_code: int | None = None
    reason: str | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    claim: dict[str, Any] | None = None
    failure: str | None = None  # a failure kind the backend knows (``states.FAILURES``): "oom"...
    attempt: int | None = None  # the attempt the job runs now, when it moved on (requeued)
    requeued_by: str | None = None  # how the attempts before ``attempt`` ended: "preempted", "node_failure"


class Backend(abc.ABC):
    """Launches and controls jobs for one executor kind.

    Public methods are the contract core calls; subclasses implement the ``_`` ones.
    ``cancel`` is idempotent; ``close`` never raises. ``pause``/``resume`` are optional:
    the default raises ``NotImplementedError`` naming the class.

    ``prepare(job)`` decides what ``launch`` submits (a command line, a batch script, a
    container spec) without doing anything; ``launch`` submits what it returns and
    ``dry_run`` shows it, so a dry run shows exactly what a launch would submit.

    ``throttles_groups``: see the attribute.

    ``self_driving``: once submitted, this backend's jobs need no runyard process: the
    backend itself keeps their dependencies (chained jobs) and their outcome, which any
    process reads later. A detached experiment whose tasks all went to such backends at
    launch needs no supervisor.
    """

    self_driving: ClassVar[bool] = False
    #: jobs launched together can be given ``JobSpec.max_parallel``, which the backend itself
    #: enforces (a Slurm job array's ``%N``): the driver hands over a whole group at once
    throttles_groups: ClassVar[bool] = False

    def resource_pool(self, executor: Executor) -> dict[str, list[str]]:
        """The units of each resource there are for ``executor``'s tasks (``{"gpu": ["0", "1"]}``:
        this backend's machine's GPUs; a cluster's job slots), in the order to lease them;
        executors ask for some (``Executor.resource_request``). Default: none."""
        return {}

    def can_chain(self, job: JobSpec, dependencies: Sequence[JobRef]) -> bool:
        """Whether ``job`` can be submitted now to start after ``dependencies`` (live jobs
        of this backend) succeed, the backend holding it until then (Slurm's
        ``--dependency=afterok``). ``launch`` then finds them in ``job.after``. Default: no."""
        return False

    def launch_many(self, jobs: Sequence[JobSpec]) -> list[Launched | Exception]:
        """Launch several jobs; one result per job, in order: its ``Launched`` or the error
        that kept it from starting. Override to submit them together (a job array)."""
        out: list[Launched | Exception] = []
        for job in jobs:
            try:
                out.append(self.launch(job))
            except Exception as exc:  # reported per job: one refusal must not lose the others
                out.append(exc)
        return out

    def launch(self, job: JobSpec) -> Launched:
        """Start one attempt; returns its job id (and any handle needed to find it later)."""
        return self._launch(job)

    def adopt(self, job: JobSpec) -> Launched | None:
        """The job that already runs (or ran) this attempt, if the backend can find it: its
        runner's claim (``jobfiles.CLAIM`` in the attempt folder), or the backend's own records
        (a container's labels, a batch job's name). None when nothing is known of one.

        Core asks before it launches an attempt that a dead driver may have started already
        (it was recorded SUBMITTED, with no job id), and when a polled job turns out to have
        lost the attempt's claim to another launch. Default: nothing is known.
        """
        return None

    def poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        """Current status of many jobs in one go, keyed by ``job_id``.

        A job missing from the result is taken as still in the state the store has.
        """
        if not jobs:
            return {}
        return self._poll(jobs)

    def cancel(self, job: JobRef) -> None:
        """End the job; no error if it has ended already."""
        self._cancel(job)

    def cancel_many(self, jobs: Sequence[JobRef]) -> list[Exception | None]:
        """End several jobs; one result per job, in order: None, or the error that kept it
        from ending. Override to end them together (one ``scancel`` for many jobs)."""
        out: list[Exception | None] = []
        for job in jobs:
            try:
                self.cancel(job)
                out.append(None)
            except Exception as exc:  # reported per job: one failure must not keep the others
                out.append(exc)
        return out

    def pause(self, job: JobRef) -> None:
        """Suspend a running job."""
        self._pause(job)

    def resume(self, job: JobRef) -> None:
        """Continue a suspended job."""
        self._resume(job)

    def wakeup_fds(self, jobs: Sequence[JobRef]) -> list[int]:
        """File descriptors that become readable when one of ``jobs`` changes state.

        Lets the scheduler sleep until something happens instead of polling; optional.
        """
        return []

    def poll_interval(self) -> float:
        """How long the scheduler may wait between two polls of this backend, in seconds."""
        return 1.0

    def prepare(self, job: JobSpec) -> Any:
        """What ``launch`` submits for ``job`` (the command line, batch script or container
        spec, with every path as the job sees it), decided without starting, writing or
        sending anything; looking things up is fine (a cluster's home folder). A backend
        that has it launches exactly this and shows it in ``dry_run``. It holds the values of
        secrets (``job.env``): ``dry_run`` masks them in what it shows, never in what it
        returns. Default: None (nothing to show beyond the job itself)."""
        return None

    def dry_run(self, job: JobSpec) -> str:
        """``prepare(job)`` as text: what ``launch`` would submit, without doing it.

        Show secret values masked (``runyard.redact.masked``).
        """
        what = " ".join(job.argv) if job.is_script else "the Python runner"
        return f"{type(self).__name__}: would run {what} for task {job.task_id}"

    def close(self) -> None:
        """Release connections; never raises."""
        try:
            self._close()
        except Exception:  # noqa: S110  close must not raise by contract
            pass

    @abc.abstractmethod
    def _launch(self, job: JobSpec) -> Launched: ...

    @abc.abstractmethod
    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]: ...

    @abc.abstractmethod
    def _cancel(self, job: JobRef) -> None: ...

    def _pause(self, job: JobRef) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot pause a running task")

    def _resume(self, job: JobRef) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot resume a paused task")

    def _close(self) -> None:
        return None
