"""The DAG driver: launch tasks when their dependencies succeeded, poll them, retry failed
ones, enforce the timeout, cancel the dependents of tasks that finally failed.

The same loop runs in the calling process (attached) or in a supervisor (detached). It is
re-entrant from the store: a new driver picks up where a dead one stopped, without
re-running tasks that ended and without losing tasks that are running.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from runyard import redact, serialization
from runyard.dag import find_cycle
from runyard.errors import BackendError, MissingSecretError
from runyard.executor import Backend, Executor, JobRef, JobSpec, JobStatus
from runyard.plugins import Plugins, plugin_manager
from runyard.runner import script_argv
from runyard.states import FINAL_STATES, LIVE_STATES, State, experiment_state
from runyard.store import ExperimentRecord, Lease, LeaseLostError, Store, TaskRecord

HEARTBEAT_INTERVAL = 2.0  # seconds between two driver heartbeats in the store
STALE_AFTER = 10.0  # a driver whose heartbeat is older than this is taken for dead
LAUNCH_BATCH = 64  # tasks launched per loop turn, so polling stays responsive
LOOP_STALL = 600.0  # a loop turn that has not ended after this long: stop heartbeating (hung)
_LIVE = tuple(LIVE_STATES)
_RUNNABLE = (State.SUBMITTED, State.RUNNING)


class Observer(Protocol):
    """What the attached driver shows while the loop runs (progress, tailed logs)."""

    def update(self, tasks: Sequence[TaskRecord], changed: Sequence[TaskRecord]) -> None: ...

    def wants_tick(self) -> float | None:
        """Seconds between two calls of ``update`` when nothing changed (None: no need)."""


def task_env(record: ExperimentRecord, task: TaskRecord, attempt: int, task_dir: str) -> dict[str, str]:
    env = {
        "RUNYARD_EXPERIMENT_ID": record.id,
        "RUNYARD_TASK_ID": task.id,
        "RUNYARD_ATTEMPT": str(attempt),
        "RUNYARD_TASK_DIR": task_dir,
    }
    interval = record.settings.get("checkpoint_interval")
    if interval is not None:
        env["RUNYARD_CHECKPOINT_INTERVAL"] = str(interval)
    return env


class Driver:
    """Drives one experiment to its end. ``run()`` returns the experiment's final state."""

    def __init__(
        self,
        store: Store,
        experiment_id: str,
        *,
        kind: str = "attached",
        observer: Observer | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.kind = kind
        self.observer = observer
        self.plugins = plugins or plugin_manager()
        self.pid = os.getpid()
        self.lease: Lease | None = None
        self.tasks: dict[str, TaskRecord] = {}
        self._rev = 0
        self._executors: dict[str, Executor] = {}
        self._last_heartbeat = 0.0
        self._turn_started: float | None = None
        self._stop = False
        self._lease_lost = False
        self._stopped = threading.Event()
        raise_fd_limit()

    # --- public -------------------------------------------------------------------------
    def claim(self) -> bool:
        """Become the experiment's driver; False if a live driver holds it."""
        number = self.store.claim_driver(self.experiment_id, self.pid, self.kind, STALE_AFTER)
        self.lease = None if number is None else Lease(self.pid, number)
        self._last_heartbeat = time.time()
        return self.lease is not None

    def release(self) -> None:
        if self.lease is not None:
            self.store.release_driver(self.experiment_id, self.pid, self.lease.number)
            self.lease = None

    @property
    def lost_lease(self) -> bool:
        """Whether another driver took the experiment over from this one (it then stops)."""
        return self._lease_lost

    def stop(self) -> None:
        """Ask the loop to return at its next turn (tasks keep running)."""
        self._stop = True

    def _setup(self) -> None:
        record = self.store.experiment(self.experiment_id)
        self._settings = record.settings
        self._record = record
        self._refresh()

    def run_once(self) -> list[TaskRecord]:
        """One turn of the loop (poll, cascade, launch what is ready); returns what changed.

        ``run(detach=True)`` launches this way before it decides whether a supervisor is needed.
        """
        self._setup()
        self._recover()
        return self._turn()

    def poll_once(self) -> None:
        """Bring the store up to date with the backends, launching nothing, claiming nothing.

        Any process may do this for an experiment no driver holds (a detached experiment on
        self-driving backends): every transition is conditional, so two at once are safe.
        """
        self._setup()
        self._poll()
        self._cascade_failures()

    def needs_driver(self) -> bool:
        """Whether the experiment needs a process to drive it on: tasks still to launch,
        retries or a timeout to enforce, or live jobs whose backend does not drive itself."""
        self._refresh()
        open_tasks = [t for t in self.tasks.values() if t.status not in FINAL_STATES]
        if not open_tasks:
            return False
        if self._max_retries() or self._settings.get("timeout"):
            return True
        for task in open_tasks:
            if task.job_id is None or not self.plugins.backend(self._executor(task).kind).self_driving:
                return True
        return False

    def needs_driver_now(self) -> bool:
        """``needs_driver`` for a Driver that has not run (reads the store first)."""
        self._setup()
        return self.needs_driver()

    def run(self) -> State:
        self._setup()
        beat = threading.Thread(target=self._heartbeats, name="runyard-driver-heartbeat", daemon=True)
        beat.start()
        try:
            return self._run()
        except LeaseLostError as exc:
            self._lease_lost = True
            print(f"runyard: {exc}; this driver stops (the new one drives on)", file=sys.stderr, flush=True)
            return experiment_state(self.store.task_states(self.experiment_id))
        finally:
            self._stopped.set()
            beat.join(timeout=5)

    def _heartbeats(self) -> None:
        """Beat in the store on its own clock, whatever the loop is doing (a slow backend call,
        a timeout enforced over many tasks), unless the loop is hung; stop the loop as soon as
        the lease turns out to be another driver's."""
        while not self._stopped.wait(max(0.05, self._last_heartbeat + self._heartbeat_every() - time.time())):
            started = self._turn_started
            if started is not None and time.time() - started > LOOP_STALL:
                continue  # hung: let the heartbeat go stale, so that a new driver may take over
            if self.lease is None:
                continue  # not claimed (yet, or between two claims): nothing to refresh
            try:
                ok = self.store.driver_heartbeat(self.experiment_id, self.pid, self.lease.number)
            except Exception:  # a busy or full disk: the next beat tries again
                ok = True
            self._last_heartbeat = time.time()
            if not ok:
                self._lease_lost = True
                self._stop = True
                return

    def _run(self) -> State:
        self._recover()
        self._cancel_cycles()
        while not self._stop:
            changed = self._turn()
            if self.observer is not None:
                self.observer.update(list(self.tasks.values()), changed)
            states = [t.status for t in self.tasks.values()]
            if all(s in FINAL_STATES for s in states):
                self.store.mark_ended(self.experiment_id, True)
                self.release()
                # a retry from another process may have landed just now: if so, drive on
                states = self.store.task_states(self.experiment_id)
                if all(s in FINAL_STATES for s in states) or not self.claim():
                    return experiment_state(states)
                self._refresh()
                continue
            if not changed:  # something moved: look again at once (dependents may be ready)
                self._sleep()
        return experiment_state([t.status for t in self.tasks.values()])

    def cancel_all(self, reason: str = "cancelled") -> None:
        """Cancel every task that has not ended (Ctrl+C on an attached run)."""
        self._refresh()
        for task in list(self.tasks.values()):
            cancel_task(self.store, self.plugins, task, reason, self._executor(task))
        self._refresh()

    # --- one turn of the loop ------------------------------------------------------------
    def _turn(self) -> list[TaskRecord]:
        now = self._turn_started = time.time()
        before = {k: (t.status, t.attempts, t.rev) for k, t in self.tasks.items()}
        self._refresh()
        self._poll()
        self._cascade_failures()
        self._enforce_timeout(now)
        self._launch_ready()
        self._refresh()
        self._turn_started = None
        return [t for k, t in self.tasks.items() if before.get(k) != (t.status, t.attempts, t.rev)]

    def _move(self, task_id: str, to: State, when: Sequence[State], **fields: Any) -> State | None:
        """A state transition of one task, under this driver's lease (if it holds one)."""
        return self.store.transition(self.experiment_id, task_id, to, when=when, lease=self.lease, **fields)

    def _checkpoint_interval(self) -> float:
        value = self._settings.get("checkpoint_interval")
        return float(value) if value else HEARTBEAT_INTERVAL

    def _heartbeat_every(self) -> float:
        return min(HEARTBEAT_INTERVAL, self._checkpoint_interval())

    def _refresh(self) -> None:
        for task in self.store.tasks(self.experiment_id, self._rev):
            self.tasks[task.id] = task
            self._rev = max(self._rev, task.rev)

    def _executor(self, task: TaskRecord) -> Executor:
        ex = self._executors.get(task.id)
        if ex is None:
            ex = self._executors[task.id] = serialization.structure_executor(json.loads(task.executor))
        return ex

    def _ref(self, task: TaskRecord) -> JobRef:
        return job_ref(self.store, task, self._executor(task))

    def _recover(self) -> None:
        """Tasks a dead driver was launching but never recorded: adopt the job that runs the
        attempt if the backend finds one (its runner claimed the attempt), else launch the
        same attempt again. A runner that finds its attempt claimed runs nothing, so even a
        job the dead driver started after all cannot run the task a second time."""
        for task in list(self.tasks.values()):
            if task.status is not State.SUBMITTED or task.job_id is not None:
                continue
            spec = self._spec(task, task.attempts)
            try:
                found = self.plugins.backend(spec.executor.kind).adopt(spec)
            except BackendError:
                found = None  # unreachable now: relaunching the same attempt is safe all the same
            if found is not None:
                self._move(
                    task.id, found.state, [State.SUBMITTED], attempt=task.attempts,
                    job_id=found.job_id, handle=found.handle, start_time=task.start_time or time.time(),
                    reason=None,
                )  # fmt: skip
            else:
                self._move(
                    task.id, State.PENDING, [State.SUBMITTED], attempt=task.attempts,
                    attempts=task.attempts - 1, reason="launch interrupted; launching it again",
                )  # fmt: skip
        self._refresh()

    def _cancel_cycles(self) -> None:
        """Tasks whose dependencies form a cycle (a store written before snapshots were
        checked) can never start: cancel them, naming the cycle, rather than wait forever."""
        open_tasks = {t.id: t.dependencies for t in self.tasks.values() if t.status not in FINAL_STATES}
        while cycle := find_cycle(open_tasks):
            for task_id in cycle[:-1]:
                self._move(
                    task_id, State.CANCELLED, [State.PENDING, State.PAUSED],
                    reason=f"dependency cycle: {' -> '.join(cycle)}", end_time=time.time(),
                )  # fmt: skip
                open_tasks.pop(task_id, None)
        self._refresh()

    def _adopt(self, task: TaskRecord, claim: dict[str, Any]) -> None:
        """The polled job lost its attempt's claim to another launch: follow that one."""
        spec = self._spec(task, task.attempts)
        try:
            found = self.plugins.backend(spec.executor.kind).adopt(spec)
        except BackendError:
            return  # next poll
        if found is not None and found.job_id != task.job_id:
            self._move(
                task.id, task.status, [task.status], attempt=task.attempts,
                job_id=found.job_id, handle=found.handle,
            )  # fmt: skip

    # --- polling ----------------------------------------------------------------------------
    def _poll(self) -> None:
        by_kind: dict[str, list[TaskRecord]] = {}
        for task in self.tasks.values():
            if task.status in _LIVE and task.job_id is not None:
                by_kind.setdefault(self._executor(task).kind, []).append(task)
        for kind, tasks in by_kind.items():
            backend = self.plugins.backend(kind)
            refs = [self._ref(t) for t in tasks]
            try:
                statuses = backend.poll(refs)
            except BackendError:
                continue  # a dropped connection never fails a task by itself; poll again later
            for task in tasks:
                status = statuses.get(task.job_id or "")
                if status is not None:
                    self._observe(task, status)

    def _observe(self, task: TaskRecord, status: JobStatus) -> None:
        if status.claim is not None:
            self._adopt(task, status.claim)
            return
        if status.state in FINAL_STATES:
            fields: dict[str, Any] = {
                "exit_code": status.exit_code,
                "reason": status.reason,
                "start_time": _ts(status.start_time) or task.start_time,
                "end_time": _ts(status.end_time) or time.time(),
            }
            if status.state is State.FAILED and task.attempts <= self._max_retries():
                fields["reason"] = (
                    f"retrying (attempt {task.attempts} of {self._max_retries() + 1} failed:"
                    f" {status.reason or 'exit code %s' % status.exit_code})"
                )
                fields["job_id"] = None
                self._move(task.id, State.PENDING, _LIVE, attempt=task.attempts, **fields)
            else:
                self._move(task.id, status.state, _LIVE, attempt=task.attempts, **fields)
        elif status.state is State.RUNNING and task.status is State.SUBMITTED:
            self._move(
                task.id, State.RUNNING, [State.SUBMITTED], attempt=task.attempts,
                start_time=_ts(status.start_time) or time.time(),
            )  # fmt: skip

    def _max_retries(self) -> int:
        return int(self._settings.get("max_retries") or 0)

    # --- dependencies, timeout, launching ------------------------------------------------
    def _cascade_failures(self) -> None:
        changed = True
        while changed:
            changed = False
            for task in list(self.tasks.values()):
                if task.status in FINAL_STATES:
                    continue
                # a dependency the experiment has not got (stored before snapshots were checked)
                missing = [d for d in task.dependencies if d not in self.tasks]
                if missing:
                    reason = f"dependency {missing[0]!r} does not exist in this experiment"
                elif any(self.tasks[d].status in (State.FAILED, State.CANCELLED) for d in task.dependencies):
                    reason = "dependency failed"
                else:
                    continue
                if task.job_id is not None and task.status in _LIVE:
                    # chained in its backend's queue: take it out of there too
                    try:
                        changed |= cancel_task(
                            self.store, self.plugins, task, reason, self._executor(task), lease=self.lease
                        )
                    except BackendError:
                        continue  # the backend is unreachable: try again next turn
                elif self._move(
                    task.id, State.CANCELLED, [State.PENDING, State.PAUSED],
                    reason=reason, end_time=time.time(),
                ):  # fmt: skip
                    changed = True
            if changed:
                self._refresh()

    def _deadline(self, task: TaskRecord) -> float | None:
        """When the experiment's timeout ends ``task``: counted from the launch, or from the
        retry that put the task back (a retry starts a new clock for what it re-runs)."""
        timeout = self._settings.get("timeout")
        start = task.clock_start or self._record.launched_at
        return start + float(timeout) if timeout and start else None

    def _enforce_timeout(self, now: float) -> None:
        """End what has run out of time: recorded first (under the lease), then the job told
        to stop; no call waits for a job to die, so a timeout over many tasks is quick."""
        changed = False
        for task in list(self.tasks.values()):
            deadline = self._deadline(task)
            if task.status in FINAL_STATES or deadline is None or now <= deadline:
                continue
            changed = True
            if task.job_id is not None and task.status in _LIVE:
                if self._move(
                    task.id,
                    State.FAILED,
                    _LIVE,
                    attempt=task.attempts,
                    reason="timeout",
                    end_time=time.time(),
                ):
                    self._backend_call("cancel", task)
            else:
                self._move(
                    task.id, State.CANCELLED, [State.PENDING, State.PAUSED, State.SUBMITTED],
                    reason="timeout", end_time=time.time(),
                )  # fmt: skip
        if changed:
            self._refresh()

    def _backend_call(self, what: str, task: TaskRecord) -> None:
        backend = self.plugins.backend(self._executor(task).kind)
        try:
            getattr(backend, what)(self._ref(task))
        except BackendError:
            pass

    def _ready(self) -> list[tuple[TaskRecord, list[TaskRecord]]]:
        """PENDING tasks that can launch now, each with the live dependencies it must be
        chained after (empty when all its dependencies succeeded)."""
        out: list[tuple[TaskRecord, list[TaskRecord]]] = []
        chaining = not self._max_retries()  # a retried dependency would leave a chain dangling
        # self.tasks is in add order already (filled from the store by seq; tasks cannot be
        # added once an experiment is launched), so no sort in this per-turn loop
        for task in self.tasks.values():
            if task.status is not State.PENDING or any(d not in self.tasks for d in task.dependencies):
                continue  # (a missing dependency: _cascade_failures cancels it)
            deps = [self.tasks[d] for d in task.dependencies]
            if all(d.status is State.SUCCEEDED for d in deps):
                out.append((task, []))
                continue
            if not chaining or any(d.status not in (*_RUNNABLE, State.SUCCEEDED) for d in deps):
                continue
            live = [d for d in deps if d.status is not State.SUCCEEDED]
            if any(d.job_id is None for d in live):
                continue
            backend = self.plugins.backend(self._executor(task).kind)
            if type(backend).can_chain is Backend.can_chain:
                continue  # this backend never chains: no need to build a job spec to ask
            refs = [self._ref(d) for d in live]
            if all(self._executor(d).kind == self._executor(task).kind for d in live) and backend.can_chain(
                self._spec(task, task.attempts + 1), refs
            ):
                out.append((task, live))
        return out

    def _launch_ready(self) -> None:
        budget = LAUNCH_BATCH
        while budget > 0:  # again after each wave: its dependents may chain behind it now
            ready = self._ready()
            if self._sequential():
                if any(t.status in _LIVE for t in self.tasks.values()):
                    return
                ready = [r for r in ready[:1] if not r[1]]
            if not ready:
                return
            by_kind: dict[str, list[tuple[TaskRecord, list[TaskRecord]]]] = {}
            for task, after in ready[:budget]:
                by_kind.setdefault(self._executor(task).kind, []).append((task, after))
            for kind, batch in by_kind.items():
                self._launch(kind, batch)
            budget -= min(budget, len(ready))
            self._refresh()

    def _sequential(self) -> bool:
        return bool((self._record.run_options or {}).get("sequential"))

    def _spec(
        self, task: TaskRecord, attempt: int, after: Sequence[TaskRecord] = (), with_secrets: bool = False
    ) -> JobSpec:
        """``job_spec``; the secrets' values only for a launch (``with_secrets``)."""
        spec = job_spec(
            self._record,
            task,
            self._executor(task),
            attempt,
            self.store.task_dir(self.experiment_id, task.id),
            with_secrets=with_secrets,
        )
        spec.after = [self._ref(d) for d in after]
        grace = getattr(spec.executor, "cancel_grace", None)
        if grace is not None:  # the runner escalates a cancel by itself, after this grace
            spec.env.setdefault("RUNYARD_CANCEL_GRACE", str(grace))
        return spec

    def _launch(self, kind: str, batch: list[tuple[TaskRecord, list[TaskRecord]]]) -> None:
        claimed: list[JobSpec] = []
        for task, after in batch:
            attempt = task.attempts + 1
            # recorded before the job starts: a driver that dies after starting it leaves the
            # launch id behind, and the runner's claim names it (see _recover)
            launch = secrets.token_hex(8)
            if self._move(
                task.id,
                State.SUBMITTED,
                [State.PENDING],
                attempts=attempt,
                reason=None,
                handle={"launch": launch},
                job_id=None,
            ):  # fmt: skip  (else: cancelled or paused by another process meanwhile)
                try:
                    spec = self._spec(task, attempt, after, with_secrets=True)
                except MissingSecretError as exc:  # nothing to launch it with: say so
                    self._move(task.id, State.FAILED, [State.SUBMITTED], attempt=attempt,
                               reason=f"launch failed: {exc}", end_time=time.time())  # fmt: skip
                    continue
                spec.env["RUNYARD_LAUNCH_ID"] = launch
                claimed.append(spec)
        if not claimed:
            return
        backend = self.plugins.backend(kind)
        results = backend.launch_many(claimed)
        for spec, result in zip(claimed, results, strict=True):
            if isinstance(result, Exception):  # the backend refused: the attempt failed, say why
                to = State.PENDING if spec.attempt <= self._max_retries() else State.FAILED
                self._move(
                    spec.task_id, to, [State.SUBMITTED], attempt=spec.attempt,
                    reason=f"launch failed: {result}", end_time=time.time(),
                )  # fmt: skip
                continue
            handle = {**result.handle, "launch": spec.env["RUNYARD_LAUNCH_ID"]}
            ok = self._move(
                spec.task_id, result.state, [State.SUBMITTED], attempt=spec.attempt,
                job_id=result.job_id, handle=handle, start_time=time.time(),
            )  # fmt: skip
            if not ok:  # cancelled while we were launching it: honour that
                ref = JobRef(result.job_id, handle, spec.task_dir, spec.attempt, spec.executor)
                try:
                    backend.cancel(ref)
                except BackendError:
                    pass

    # --- waiting ------------------------------------------------------------------------------
    def _sleep(self) -> None:
        # wake up when the next heartbeat is due, so the store is never older than the
        # checkpoint interval (a backend's poll interval may be longer than it)
        wait = max(0.01, self._last_heartbeat + self._heartbeat_every() - time.time())
        fds: list[int] = []
        live: dict[str, list[JobRef]] = {}
        pending = False
        for task in self.tasks.values():
            if task.status in _LIVE and task.job_id is not None:
                live.setdefault(self._executor(task).kind, []).append(self._ref(task))
            elif task.status is State.PENDING:
                pending = True
        for kind, refs in live.items():
            backend = self.plugins.backend(kind)
            wait = min(wait, backend.poll_interval())
            fds.extend(backend.wakeup_fds(refs))
        if pending and not live:
            wait = min(wait, 0.2)  # waiting on another process (resume, retry) to move things
        if self.observer is not None:
            tick = self.observer.wants_tick()
            if tick is not None:
                wait = min(wait, tick)
        deadlines = [
            d for t in self.tasks.values() if t.status not in FINAL_STATES and (d := self._deadline(t))
        ]
        if deadlines:
            wait = max(0.0, min(wait, min(deadlines) - time.time() + 0.01))
        if fds:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            poller.poll(wait * 1000)
        else:
            time.sleep(wait)


def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def job_ref(store: Store, task: TaskRecord, executor: Executor) -> JobRef:
    return JobRef(
        job_id=task.job_id or "",
        handle=task.handle,
        task_dir=store.task_dir(task.experiment_id, task.id),
        attempt=task.attempts,
        executor=executor,
    )


def job_spec(
    record: ExperimentRecord,
    task: TaskRecord,
    executor: Executor,
    attempt: int,
    task_dir: str,
    *,
    with_secrets: bool = True,
) -> JobSpec:
    """The job of one attempt. Its ``env`` has the values of the secrets the store holds only
    markers for (``redact.reveal``: MissingSecretError if this process has none);
    ``with_secrets=False`` leaves the markers (a dry run, a question to the backend)."""
    encoded = json.loads(task.task)
    is_script = encoded.get(serialization.TAG) == "script"
    env = dict(executor.env_vars)
    argv: list[str] = []
    if is_script:
        env.update(encoded.get("env") or {})
        argv = script_argv(encoded)
    if with_secrets:
        env = redact.reveal(record.id, task.id, env)
    env.update(task_env(record, task, attempt, task_dir))
    return JobSpec(
        experiment_id=record.id, task_id=task.id, attempt=attempt, task_dir=task_dir,
        executor=executor, is_script=is_script, argv=argv, env=env,
        cwd=record.settings.get("cwd"),
    )  # fmt: skip


def cancel_task(
    store: Store,
    plugins: Plugins,
    task: TaskRecord,
    reason: str,
    executor: Executor,
    *,
    lease: Lease | None = None,
) -> bool:
    """Cancel one task from any process: record CANCELLED, then end its job on the backend.

    Recording first means a driver polling at the same moment cannot take the dying job for
    a failure (and retry it). If the backend cannot end the job, the task's state is put
    back and the error raised. Returns False if the task had ended already.
    """
    if task.status in FINAL_STATES:
        return False
    exp = task.experiment_id
    previous = store.transition(
        exp, task.id, State.CANCELLED,
        when=[State.PENDING, State.PAUSED, State.SUBMITTED, State.RUNNING],
        reason=reason, end_time=time.time(), lease=lease,
    )  # fmt: skip
    if previous is None:
        return False
    current = store.task(exp, task.id)
    assert current is not None
    if current.job_id is not None:
        try:
            plugins.backend(executor.kind).cancel(job_ref(store, current, executor))
        except Exception as exc:
            store.transition(
                exp, task.id, previous, when=[State.CANCELLED],
                reason=f"cancel failed: {exc}", end_time=None,
            )  # fmt: skip
            raise
    return True


def raise_fd_limit() -> None:
    """Lift this process's soft limit on open files to the hard one: a driver watches many
    jobs at once (macOS and many containers start at 256)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
