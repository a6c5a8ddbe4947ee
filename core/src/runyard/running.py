"""Which process drives an experiment: this one (attached, or direct), a supervisor
(detached), or none (its jobs drive themselves, and whoever looks reads their news: sync).
And waiting for it, and taking it over when its driver died."""

from __future__ import annotations

import sys
import threading
import time
import warnings
from typing import Any

from runyard.engine import CANCEL_PENDING, Engine
from runyard.errors import DiskFullError, ExperimentStateError
from runyard.scheduler import STALE_AFTER, Driver, is_driven
from runyard.states import FINAL_STATES, State, experiment_state
from runyard.store import Store

SYNC_WAIT = 2.0  # seconds a read waits for the backends' news before it answers from the store
END_WAIT = 5.0  # seconds wait() waits, once every task has ended, for the driver to record the end
_syncing: dict[str, threading.Thread] = {}  # experiment id -> a sync still waiting on its backends


def driver_alive(engine: Engine) -> bool:
    """Whether a live process (attached caller or supervisor) drives the experiment (its
    record read afresh: ``engine.record`` is then up to date too)."""
    return is_driven(engine.reload())


def sync(engine: Engine, wait: float | None = None) -> list[State]:
    """Read the backends' news into the store when no process drives the experiment (a
    detached experiment whose jobs drive themselves, or one whose driver died; or jobs of
    cancelled tasks still to be ended); returns the tasks' states, as the store has them then.

    A read never hangs on a backend: the store's states are answered after ``wait`` seconds at
    most, with a warning, while the news (if any) is recorded in the background; a backend
    found unreachable is named in a warning, with since when."""
    states = engine.store.task_states(engine.experiment_id)
    if driver_alive(engine) or engine.record.launched_at is None:
        return states
    if all(s in FINAL_STATES for s in states):
        if engine.record.ended_at is not None or not _cancels_pending(engine):
            return states
    failed: list[BaseException] = []
    wait = SYNC_WAIT if wait is None else wait
    late = (
        f"the backends of {engine.experiment_id} did not answer within {wait:g}s: the states shown"
        " are the last recorded (they are brought up to date when the backends answer)"
    )
    earlier = _syncing.get(engine.experiment_id)
    if earlier is not None and earlier.is_alive():  # the backends have not answered the last one yet
        warnings.warn(late, stacklevel=4)
        return states

    def poll() -> None:
        try:
            Driver(engine.store, engine.experiment_id, kind="sync", engine=engine).poll_once()
        except BaseException as exc:  # reported by the caller's thread
            failed.append(exc)

    worker = _syncing[engine.experiment_id] = threading.Thread(target=poll, name="runyard-sync", daemon=True)
    worker.start()
    worker.join(wait)
    if worker.is_alive():
        warnings.warn(late, stacklevel=4)
    elif failed:
        if not isinstance(failed[0], DiskFullError):
            raise failed[0]
        warnings.warn(f"{failed[0]} (the state shown may be behind the backends')", stacklevel=4)
    for _, exc in engine.unreachable.values():
        warnings.warn(f"{exc}: the states shown are the last recorded", stacklevel=4)
    return engine.store.task_states(engine.experiment_id)


def _cancels_pending(engine: Engine) -> bool:
    return any(r.handle.get(CANCEL_PENDING) for r in engine.store.tasks(engine.experiment_id))


def _quiet(interrupt: KeyboardInterrupt) -> None:
    """Mark a Ctrl+C runyard has dealt with (cancelled or detached, and said so): raised on, it
    stops the caller's program as any Ctrl+C does (exit by SIGINT), but uncaught it prints no
    traceback (``sys.excepthook`` skips it; every other exception is shown as before)."""
    interrupt.runyard_handled = True  # type: ignore[attr-defined]
    previous = sys.excepthook
    if not getattr(previous, "runyard_quiet", False):

        def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
            if not (kind is KeyboardInterrupt and getattr(value, "runyard_handled", False)):
                previous(kind, value, tb)

        hook.runyard_quiet = True  # type: ignore[attr-defined]
        sys.excepthook = hook


def run_attached(engine: Engine, *, tail_logs: bool, on_interrupt: str) -> State:
    """Drive the experiment here, showing progress; Ctrl+C cancels, or detaches."""
    from runyard.progress import make_observer  # (what only running needs: imported then)

    observer = make_observer(engine, tail_logs=tail_logs)
    driver = Driver(engine.store, engine.experiment_id, kind="attached", observer=observer, engine=engine)
    if not driver.claim():
        raise ExperimentStateError(
            f"experiment {engine.experiment_id} is driven by another live process "
            f"(pid {engine.reload().driver_pid}); follow it with `runyard status {engine.experiment_id}`"
        )
    try:
        state = driver.run()
        observer.finish(state)
        return state
    except KeyboardInterrupt as interrupt:
        if on_interrupt == "detach":
            driver.release()
            pid = start_supervisor(engine.store, engine.experiment_id)
            message = f"detached: a supervisor (pid {pid}) drives {engine.experiment_id} on"
        else:
            driver.cancel_all("cancelled (interrupted)")
            message = f"interrupted: cancelled the tasks of {engine.experiment_id} that had not ended"
        observer.interrupted(list(driver.tasks.values()), message)  # (the last view shows them as left)
        _quiet(interrupt)
        raise
    finally:
        observer.close()
        driver.release()


def run_direct(engine: Engine) -> State:
    """Every task in this process, in order, on the engine's in-process backend, by the same
    driver as any run (``direct.DirectBackend``)."""
    direct = Engine(engine.store, engine.experiment_id, engine.plugins, direct=True)
    driver = Driver(engine.store, engine.experiment_id, kind="direct", engine=direct)
    if not driver.claim():
        raise ExperimentStateError(f"experiment {engine.experiment_id} is driven by another live process")
    try:
        return driver.run()
    except KeyboardInterrupt as interrupt:
        driver.cancel_all("cancelled (interrupted)")
        _quiet(interrupt)
        raise
    finally:
        driver.release()


def run_detached(engine: Engine) -> None:
    """Launch what can be launched now; a supervisor drives the rest, unless nothing is left
    to drive (every job went to a backend that drives itself)."""
    driver = Driver(engine.store, engine.experiment_id, kind="launcher", engine=engine)
    if not driver.claim():
        raise ExperimentStateError(f"experiment {engine.experiment_id} is driven by another live process")
    try:
        driver.run_once()
        needed = driver.needs_driver()
    finally:
        driver.release()
    if needed:
        start_supervisor(engine.store, engine.experiment_id)


def ensure_driver(engine: Engine) -> None:
    """After retry/resume: make sure some process drives the experiment."""
    if not driver_alive(engine) and engine.record.launched_at is not None:
        start_supervisor(engine.store, engine.experiment_id)


def wait(engine: Engine, timeout: float | None, interval: float) -> State:
    """Block until every task has ended, and the experiment's end is recorded: its driver
    records it just after the last task's (``ended_at``, the ``ended`` event), so a caller
    reading them next finds them; ``END_WAIT`` seconds at most for that (see ``Experiment.wait``)."""
    exp_id = engine.experiment_id
    deadline = None if timeout is None else time.monotonic() + timeout
    orphaned_since: float | None = None
    ended_since: float | None = None
    while True:
        states = engine.store.task_states(exp_id)
        if all(s in FINAL_STATES for s in states):
            ended_since = time.monotonic() if ended_since is None else ended_since
            if not driver_alive(engine) or engine.record.ended_at is not None:
                return experiment_state(states)
            if time.monotonic() - ended_since > END_WAIT:  # (its driver carries out cancels still)
                return experiment_state(states)
            time.sleep(min(interval, 0.05))
            continue
        if driver_alive(engine):
            orphaned_since = None
        elif not Driver(engine.store, exp_id, kind="sync", engine=engine).needs_driver_now():
            sync(engine)  # the jobs drive themselves: just read their news
            orphaned_since = None
        elif orphaned_since is None:
            orphaned_since = time.monotonic()
        elif time.monotonic() - orphaned_since > STALE_AFTER:
            raise ExperimentStateError(
                f"no process drives experiment {exp_id} any more (its supervisor died?): "
                f"take it over with `runyard takeover {exp_id}`"
            )
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"experiment {exp_id} still {experiment_state(states)} after {timeout}s")
        time.sleep(interval)


def takeover(engine: Engine, *, detach: bool) -> State | None:
    """Drive an experiment whose driver died: a new supervisor, or this process (attached).
    None when there is nothing to drive (every task has ended) or a supervisor took it."""
    if driver_alive(engine):
        raise ExperimentStateError(
            f"experiment {engine.experiment_id} is still driven by live pid {engine.record.driver_pid}"
        )
    if all(s in FINAL_STATES for s in engine.store.task_states(engine.experiment_id)):
        return None
    if detach:
        start_supervisor(engine.store, engine.experiment_id)
        return None
    return run_attached(engine, tail_logs=False, on_interrupt="cancel")


def start_supervisor(store: Store, experiment_id: str) -> int:
    """A supervisor process for the experiment (``supervisor.py``); its pid once it drives it."""
    from runyard import supervisor

    return supervisor.start_supervisor(store, experiment_id)
