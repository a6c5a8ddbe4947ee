"""The DAG driver: *when* to act on tasks — launch those whose dependencies succeeded, poll
them, enforce the timeout, cancel the dependents of tasks that finally failed. *How* to act
on one (launch, poll, the retry rule, cancel) is the engine's (``engine.py``).

The same loop runs in the calling process (attached), in a supervisor (detached), and for
``run(direct=True)`` on the engine's in-process backend. It is re-entrant from the store: a
new driver picks up where a dead one stopped, without re-running tasks that ended and
without losing tasks that are running.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from runyard.dag import find_cycle
from runyard.engine import CANCEL_PENDING, UNREACHABLE_RETRY, Engine, TaskHandle, by_backend, waiting_for
from runyard.errors import BackendError, RunyardError
from runyard.executor import Backend, JobRef
from runyard.states import FINAL_STATES, LIVE_STATES, Event, State, experiment_state
from runyard.store import ExperimentRecord, Lease, LeaseLostError, Store, TaskRecord, pid_alive

if TYPE_CHECKING:
    from runyard.plugins import Plugins

HEARTBEAT_INTERVAL = 2.0  # seconds between two driver heartbeats in the store
STALE_AFTER = 10.0  # a driver whose heartbeat is older than this is taken for dead
LAUNCH_BATCH = 64  # tasks launched per loop turn, so polling stays responsive
LOOP_STALL = 600.0  # a loop turn that has not ended after this long: stop heartbeating (hung)
RECLAIM_EVERY = 2.0  # seconds between two syncs of an undriven experiment that holds units we wait for
_LIVE = tuple(LIVE_STATES)
_RUNNABLE = (State.SUBMITTED, State.RUNNING)


class Observer(Protocol):
    """What the attached driver shows while the loop runs (progress, tailed logs)."""

    def update(self, tasks: Sequence[TaskRecord], changed: Sequence[TaskRecord]) -> None: ...

    def wants_tick(self) -> float | None:
        """Seconds between two calls of ``update`` when nothing changed (None: no need)."""


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
        engine: Engine | None = None,
    ) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.kind = kind
        self.observer = observer
        self.engine = engine or Engine(store, experiment_id, plugins)
        self.pid = os.getpid()
        self.lease: Lease | None = None
        self.tasks: dict[str, TaskRecord] = {}
        # kept by _refresh, so that a turn costs what changed, not every task: the ids of the
        # tasks PENDING, live (in the order they became so), cancelled with a job still to end;
        # those read again this turn; whether a task failed or was cancelled since the last cascade
        self._pending: set[str] = set()
        self._live: dict[str, None] = {}
        self._cancel_pending: set[str] = set()
        self._changed: set[str] = set()
        self._cascade_due = True
        self._rev = 0
        self._last_heartbeat = 0.0
        self._turn_started: float | None = None
        self._stop = False
        self._lease_lost = False
        # this turn (see _write_reasons): what PENDING tasks that cannot launch wait for; the
        # tasks waiting for a max_parallel slot, and that reason; pending tasks that wait for nothing
        self._why: dict[str, str] = {}
        self._queued: tuple[list[TaskRecord], str] = ([], "")
        self._unblocked: list[TaskRecord] = []
        self._reasons: dict[str, str] = {}  # the reasons this driver wrote, until their tasks change
        self._reclaimed: dict[str, float] = {}  # experiment id -> when _reclaim last synced it
        self._throttling: dict[str, bool] = {}  # task id -> whether its backend throttles_groups
        self._any_throttles: bool | None = None  # see _some_throttle
        self._dependents: dict[str, list[str]] | None = None  # see _maybe_changed_reasons
        self._unseen: set[str] = set()  # PENDING tasks read from the store since _ready last looked at them
        self._pending_order: list[str] | None = None  # see _pending_ids
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
        self._record = self.engine.reload()
        self._settings = self._record.settings
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
        self._finish_cancels()
        self._cascade_failures()
        if all(t.status in FINAL_STATES for t in self.tasks.values()) and not self._cancels_left():
            self.store.mark_ended(self.experiment_id, True)  # (a cancel carried out late: it has ended now)

    def needs_driver(self) -> bool:
        """Whether the experiment needs a process to drive it on: tasks still to launch,
        retries or a timeout to enforce, or live jobs whose backend does not drive itself."""
        self._refresh()
        open_tasks = [t for t in self.tasks.values() if t.status not in FINAL_STATES]
        if not open_tasks:
            return self._cancels_left()
        if self.engine.max_retries or self._settings.timeout:
            return True
        return any(t.job_id is None or not self._handle(t).backend.self_driving for t in open_tasks)

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
            # hung: let the heartbeat go stale, so that a new driver may take over (not in
            # direct mode, whose turn runs a whole task in this process)
            if started is not None and time.time() - started > LOOP_STALL and not self.engine.direct:
                continue
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
            if self._all_ended() and not self._cancels_left():
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
            self._handle(task).cancel(reason)
        self._refresh()

    # --- one turn of the loop ------------------------------------------------------------
    def _turn(self) -> list[TaskRecord]:
        now = self._turn_started = time.time()
        self._changed = set()
        self._refresh()
        self._poll()
        self._finish_cancels()
        self._cascade_failures()
        self._enforce_timeout(now)
        self._launch_ready()
        self._refresh()
        self._turn_started = None
        return sorted((self.tasks[k] for k in self._changed), key=lambda t: t.seq)  # (in add order)

    def _handle(self, task: TaskRecord) -> TaskHandle:
        return self.engine.handle(task)

    def _move(self, task: TaskRecord, event: Event, to: State | None = None, **fields: Any) -> State | None:
        """A transition of one task, under this driver's lease (if it holds one)."""
        return self._handle(task).move(event, to, lease=self.lease, **fields)

    def _checkpoint_interval(self) -> float:
        value = self._settings.checkpoint_interval
        return float(value) if value else HEARTBEAT_INTERVAL

    def _heartbeat_every(self) -> float:
        return min(HEARTBEAT_INTERVAL, self._checkpoint_interval())

    def _refresh(self) -> None:
        for task in self.store.tasks(self.experiment_id, self._rev):
            task_id, status = task.id, task.status
            self.tasks[task_id] = task
            self._rev = max(self._rev, task.rev)
            self._changed.add(task_id)
            self._reasons.pop(task_id, None)  # (its reason is what the change wrote)
            if status is State.PENDING:
                self._unseen.add(task_id)
                if task_id not in self._pending:
                    self._pending.add(task_id)
                    self._pending_order = None
            else:
                self._unseen.discard(task_id)
                if task_id in self._pending:
                    self._pending.discard(task_id)
                    self._pending_order = None
            if status in _LIVE:
                self._live[task_id] = None
            else:
                self._live.pop(task_id, None)
            if status is State.CANCELLED and task.handle.get(CANCEL_PENDING):
                self._cancel_pending.add(task_id)
            else:
                self._cancel_pending.discard(task_id)
            if status in (State.FAILED, State.CANCELLED):
                self._cascade_due = True

    def _all_ended(self) -> bool:
        return not self._pending and not self._live

    def _recover(self) -> None:
        """Tasks a dead driver was launching but never recorded: adopt the job that runs the
        attempt if the backend finds one (its runner claimed the attempt), else launch the
        same attempt again (``TaskHandle.adopt``)."""
        for task in list(self.tasks.values()):
            if task.status is State.SUBMITTED and task.job_id is None:
                self._handle(task).adopt(lease=self.lease)
        self._refresh()

    def _cancel_cycles(self) -> None:
        """Tasks whose dependencies form a cycle (a store written before snapshots were
        checked) can never start: cancel them, naming the cycle, rather than wait forever."""
        open_tasks = {t.id: t.dependencies for t in self.tasks.values() if t.status not in FINAL_STATES}
        while cycle := find_cycle(open_tasks):
            for task_id in cycle[:-1]:
                self._move(self.tasks[task_id], Event.NEVER_RUNS,
                           reason=f"dependency cycle: {' -> '.join(cycle)}", end_time=time.time())  # fmt: skip
                open_tasks.pop(task_id, None)
        self._refresh()

    def _cancels_left(self) -> bool:
        """Whether a cancelled task's job is still to be ended (its backend was unreachable)."""
        return bool(self._cancel_pending)

    def _finish_cancels(self) -> None:
        """End the jobs of tasks cancelled while their backend was unreachable."""
        if self._cancels_left():
            self.engine.finish_cancels([self.tasks[k] for k in self._cancel_pending])
            self._refresh()

    # --- polling ----------------------------------------------------------------------------
    def _poll(self) -> None:
        live = [self._handle(t) for t in self._live_tasks() if t.job_id is not None]
        for task_id, status in self.engine.poll(live).items():
            self._handle(self.tasks[task_id]).observe(status, lease=self.lease)

    def _live_tasks(self) -> list[TaskRecord]:
        return [self.tasks[k] for k in self._live]

    # --- dependencies, timeout, launching ------------------------------------------------
    def _cascade_failures(self) -> None:
        """Cancel the tasks that depend on one that failed or was cancelled (or that does not
        exist); looked for only when a task failed or was cancelled since the last time."""
        if not self._cascade_due:
            return
        self._cascade_due = False
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
                        changed |= self._handle(task).cancel(reason, lease=self.lease)
                    except BackendError:
                        self._cascade_due = True
                        continue  # the backend is unreachable: try again next turn
                elif self._move(task, Event.NEVER_RUNS, reason=reason, end_time=time.time()):
                    changed = True
            if changed:
                self._refresh()

    def _deadline(self, task: TaskRecord) -> float | None:
        """When the experiment's timeout ends ``task``: counted from the launch, or from the
        retry that put the task back (a retry starts a new clock for what it re-runs)."""
        timeout = self._settings.timeout
        start = task.clock_start or self._record.launched_at
        return start + float(timeout) if timeout and start else None

    def _enforce_timeout(self, now: float) -> None:
        """End what has run out of time: recorded first (under the lease), then the job told
        to stop; no call waits for a job to die, so a timeout over many tasks is quick."""
        if not self._settings.timeout:
            return
        changed = False
        for task in list(self.tasks.values()):
            deadline = self._deadline(task)
            if task.status in FINAL_STATES or deadline is None or now <= deadline:
                continue
            changed = True
            if task.job_id is not None and task.status in _LIVE:
                if self._move(
                    task, Event.TIMEOUT, attempt=task.attempts, reason="timeout", end_time=time.time()
                ):
                    self._handle(task).stop_job()
            else:
                self._move(task, Event.EXPIRE, reason="timeout", end_time=time.time())
        if changed:
            self._refresh()

    def _ready(
        self, limit: int, short: dict[tuple[int, str], int]
    ) -> tuple[list[tuple[TaskHandle, list[TaskHandle]]], list[TaskRecord]]:
        """PENDING tasks that can launch now, each with the live dependencies it must be
        chained after (empty when all its dependencies succeeded): ``limit`` of them at most,
        besides those handed to a backend that throttles a group (``_admit``); and the tasks
        ready beyond that (records: no handle is made for them, a turn stays cheap however
        many wait). A task that waits for its dependencies, or for units that were found
        ``short`` this turn (``_may_get_units``), is noted in ``_why``."""
        out: list[tuple[TaskHandle, list[TaskHandle]]] = []
        beyond: list[TaskRecord] = []
        taken = 0  # tasks in out that count against the limit
        grouped = self._settings.max_parallel is not None and self._some_throttle()
        chaining = not self.engine.max_retries  # a retried dependency would leave a chain dangling
        # in add order (self.tasks is: filled from the store by seq; tasks cannot be added
        # once an experiment is launched), so no sort in this per-turn loop
        tasks, pending = self.tasks, State.PENDING
        # once ``limit`` are taken, nothing else launches: only a task whose reason may have
        # changed is looked at (it changed since it was last looked at, or a dependency did
        # this turn); the others wait as they said they did: a turn costs what changed
        candidates: set[str] | None = None
        unseen = self._unseen
        for task_id in self._pending_ids():
            task = tasks[task_id]
            if task.status is not pending:
                continue
            if taken >= limit and not grouped:
                if candidates is None:
                    candidates = self._maybe_changed_reasons()
                if task.id not in candidates and task.id not in unseen:
                    continue
            unseen.discard(task.id)
            throttled = grouped and self._throttles(task)
            deps: list[TaskRecord] = []
            if task.dependencies:
                if any(d not in tasks for d in task.dependencies):
                    continue  # (a missing dependency: _cascade_failures cancels it)
                deps = [tasks[d] for d in task.dependencies]
            if not deps or all(d.status is State.SUCCEEDED for d in deps):
                if taken >= limit and not throttled:
                    beyond.append(task)
                    continue
                handle = self._handle(task)
                if self.engine.waiting(handle.backend):
                    self._unblocked.append(task)
                    continue  # its backend is unreachable: launches on it wait a moment
                if short and not self._may_get_units(handle, short):
                    continue
                out.append((handle, []))
                taken += not throttled
                continue
            self._why[task.id] = _waiting_for_dependencies(deps)  # (unless it is chained now, below)
            if taken >= limit and not throttled:
                continue
            if not chaining or any(d.status not in (*_RUNNABLE, State.SUCCEEDED) for d in deps):
                continue
            live = [self._handle(d) for d in deps if d.status is not State.SUCCEEDED]
            if any(d.record.job_id is None for d in live):
                continue
            handle = self._handle(task)
            backend = handle.backend
            if self.engine.waiting(backend):
                continue  # its backend is unreachable: launches on it wait a moment
            if type(backend).can_chain is Backend.can_chain:
                continue  # this backend never chains: no need to build a job spec to ask
            refs: list[JobRef] = [d.ref() for d in live]
            if all(d.backend is backend for d in live) and backend.can_chain(handle.spec(), refs):
                del self._why[task.id]
                out.append((handle, live))
                taken += not throttled
        return out, beyond

    def _pending_ids(self) -> list[str]:
        """The PENDING tasks' ids, in add order (listed again only when a task starts or stops
        being PENDING; ``self.tasks`` is in add order already)."""
        if self._pending_order is None:
            pending = self._pending
            self._pending_order = [k for k in self.tasks if k in pending]
        return self._pending_order

    def _maybe_changed_reasons(self) -> set[str]:
        """The tasks whose reason may have changed this turn: those that changed, and those
        that depend on one (the tasks of a launched experiment are fixed: mapped once)."""
        if self._dependents is None:
            self._dependents = {}
            for t in self.tasks.values():
                for d in t.dependencies:
                    self._dependents.setdefault(d, []).append(t.id)
        out = set(self._changed)
        for task_id in self._changed:
            out.update(self._dependents.get(task_id, ()))
        return out

    def _throttles(self, task: TaskRecord) -> bool:
        """Whether the task's backend ``throttles_groups`` (asked once per task)."""
        known = self._throttling.get(task.id)
        if known is None:
            known = self._throttling[task.id] = type(self._handle(task).backend).throttles_groups
        return known

    def _some_throttle(self) -> bool:
        """Whether the backend of any task ``throttles_groups`` (asked once: the tasks of a
        launched experiment are all known)."""
        if self._any_throttles is None:
            self._any_throttles = any([self._throttles(t) for t in self.tasks.values()])
        return self._any_throttles

    def _slots(self) -> int | None:
        """How many more tasks may be live now under ``max_parallel`` (None: no limit)."""
        limit = self._settings.max_parallel
        return None if limit is None else limit - self._live_count()

    def _launch_ready(self) -> None:
        """Launch what is ready: ``LAUNCH_BATCH`` tasks a turn at most, within the
        experiment's ``max_parallel`` (``_admit``), each once the units of resources it asks
        for are free; and say what each PENDING task that cannot launch waits for (its
        ``reason``, written in one go by ``_write_reasons``)."""
        self._why, self._queued, self._unblocked = {}, ([], ""), []
        budget = LAUNCH_BATCH
        short: dict[tuple[int, str], int] = {}  # (backend, resource): fewest units found not free this turn
        first = True
        while budget > 0:  # again after each wave: its dependents may chain behind it now
            slots = self._slots()
            if not first and slots is not None and slots <= 0 and not self._some_throttle():
                break  # nothing more can launch this turn (and what waits is noted already)
            first = False
            ready, beyond = self._ready(budget if slots is None else max(0, min(budget, slots)), short)
            if self._sequential():
                if self._live:
                    break
                self._unblocked += [h.record for h, _ in ready[1:]]
                ready = [r for r in ready[:1] if not r[1]]
            ready, group_limit = self._admit(ready, beyond, slots, budget)
            if not ready:
                break
            for h, busy in self.engine.launch(ready, self.lease, max_parallel=group_limit):
                key = (id(h.backend), busy.resource)
                short[key] = min(short.get(key, busy.wanted), busy.wanted)
                self._why[h.id] = waiting_for(busy.resource, busy.wanted)
                self._reclaim(busy.holders)
            budget -= len(ready)
            self._refresh()
        self._write_reasons()

    def _live_count(self) -> int:
        """The experiment's tasks live now: SUBMITTED, RUNNING or PAUSED (a task held before
        it launched is not: it holds nothing)."""
        return sum(
            1 for t in self._live_tasks() if not (t.status is State.PAUSED and t.paused_from is State.PENDING)
        )

    def _admit(
        self,
        ready: list[tuple[TaskHandle, list[TaskHandle]]],
        beyond: list[TaskRecord],
        slots: int | None,
        budget: int,
    ) -> tuple[list[tuple[TaskHandle, list[TaskHandle]]], int | None]:
        """The ready tasks to launch now (from ``_ready``), and the ``max_parallel`` of a
        group among them.

        Under ``Experiment(max_parallel=N)`` no more than N of the experiment's tasks are live
        at once (``_live_count``): ``slots`` is how many more may be; the others wait, PENDING,
        saying so. The ready tasks of a backend that ``throttles_groups`` (Slurm) are handed
        over together instead, whatever the ``budget``, as long as a slot is left: the slots
        left are their ``JobSpec.max_parallel`` (a job array's ``%N``), so that the backend
        runs no more of them at once; once handed over they all count as live. One such
        group a turn."""
        if slots is None or slots > budget:
            self._unblocked += beyond  # (beyond the budget: next turn)
        if slots is None:
            return ready, None
        limit = self._settings.max_parallel
        admitted: list[tuple[TaskHandle, list[TaskHandle]]] = []
        group: list[tuple[TaskHandle, list[TaskHandle]]] = []
        waiting = beyond if slots <= budget else []
        for h, after in ready:
            if not self._throttles(h.record):
                admitted.append((h, after))  # (``_ready`` gave no more than the slots)
            elif not group or group[0][0].backend is h.backend:
                group.append((h, after))
            else:
                waiting.append(h.record)  # (another such backend: its group goes in a later turn)
        left = slots - len(admitted)
        if group and left <= 0:
            waiting += [h.record for h, _ in group]
            group = []
        self._queued = (waiting, f"waiting: max_parallel={limit} tasks running")
        return admitted + group, left if group else None

    def _may_get_units(self, h: TaskHandle, short: dict[tuple[int, str], int]) -> bool:
        """False when the task asks for at least as many units as a task of its backend found
        not free this turn (it would not get them either): it waits, saying so."""
        for resource, count in self.engine.requests(h).items():
            if count >= short.get((id(h.backend), resource), count + 1):
                self._why[h.id] = waiting_for(resource, count)
                return False
        return True

    def _reclaim(self, holders: Sequence[str]) -> None:
        """Bring up to date the experiments holding units this one waits for, when no live
        process drives them (their driver died): their tasks that ended meanwhile give the
        units back (``Store.launch_leased`` then finds them free). Each at most every
        ``RECLAIM_EVERY`` seconds."""
        now = time.monotonic()
        for experiment_id in holders:
            if (
                experiment_id == self.experiment_id
                or now - self._reclaimed.get(experiment_id, -1e9) < RECLAIM_EVERY
            ):
                continue
            self._reclaimed[experiment_id] = now
            try:
                if not is_driven(self.store.experiment(experiment_id)):
                    Driver(self.store, experiment_id, kind="sync", plugins=self.engine.plugins).poll_once()
            except RunyardError:  # (gone, damaged, its backend unreachable: its units stay held)
                continue

    def _write_reasons(self) -> None:
        """Write what PENDING tasks wait for (``_why``, ``_queued``), only where it changed,
        all in one transaction (no event: not a state change); a reason this driver wrote is
        cleared when its task waits for nothing now (``_unblocked``). Each costs little: a
        turn looks at every queued task."""
        tasks, pending = self.tasks, State.PENDING
        changes: dict[str, str | None] = {
            task_id: why
            for task_id, why in self._why.items()
            if (task := tasks[task_id]).reason != why and task.status is pending
        }
        queued, why = self._queued
        changes.update(
            {t.id: why for t in queued if (task := tasks[t.id]).reason != why and task.status is pending}
        )
        written = self._reasons
        for t in self._unblocked:
            task = tasks[t.id]
            if task.reason is not None and written.get(t.id) == task.reason and t.id not in changes:
                changes[t.id] = None
        if not changes:
            return
        self.store.set_reasons(self.experiment_id, changes, self.lease)
        for task_id, change in changes.items():
            tasks[task_id].reason = change
            if change is None:
                written.pop(task_id, None)
            else:
                written[task_id] = change

    def _sequential(self) -> bool:
        return self.engine.direct or bool((self._record.run_options or {}).get("sequential"))

    # --- waiting ------------------------------------------------------------------------------
    def _sleep(self) -> None:
        # wake up when the next heartbeat is due, so the store is never older than the
        # checkpoint interval (a backend's poll interval may be longer than it)
        wait = max(0.01, self._last_heartbeat + self._heartbeat_every() - time.time())
        fds: list[int] = []
        handles = [self._handle(t) for t in self._live_tasks() if t.job_id is not None]
        live = by_backend((h.backend, h.ref()) for h in handles)
        pending = bool(self._pending)
        for backend, refs in live:
            wait = min(wait, backend.poll_interval())
            fds.extend(backend.wakeup_fds(refs))
        if pending and not live:
            wait = min(wait, 0.2)  # waiting on another process (resume, retry) to move things
        if self.engine.unreachable or self._cancels_left():
            wait = min(wait, UNREACHABLE_RETRY)  # try an unreachable backend again soon
        if self.observer is not None:
            tick = self.observer.wants_tick()
            if tick is not None:
                wait = min(wait, tick)
        deadlines = [] if not self._settings.timeout else [
            d for t in self.tasks.values() if t.status not in FINAL_STATES and (d := self._deadline(t))
        ]  # fmt: skip
        if deadlines:
            wait = max(0.0, min(wait, min(deadlines) - time.time() + 0.01))
        if fds:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            poller.poll(wait * 1000)
        else:
            time.sleep(wait)


def is_driven(record: ExperimentRecord) -> bool:
    """Whether a live process drives the experiment (its driver's heartbeat is fresh, and its
    process alive)."""
    return bool(
        record.driver_pid and record.driver_heartbeat and time.time() - record.driver_heartbeat < STALE_AFTER
        and pid_alive(record.driver_pid)
    )  # fmt: skip


def _waiting_for_dependencies(deps: Sequence[TaskRecord]) -> str:
    """``waiting for a, b``: the dependencies that have not succeeded yet (the first few)."""
    ids = [d.id for d in deps if d.status is not State.SUCCEEDED]
    more = f" and {len(ids) - 3} more" if len(ids) > 4 else ""
    return "waiting for " + ", ".join(ids[:3] if more else ids) + more


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
