"""The in-task helper: ``import runyard.job`` in a task's own code.

Standard library only, and carried by every job beside the runner, so that a task can import
it on every backend whether or not runyard is installed where it runs (the runner puts a
stand-in ``runyard`` package on the task's ``PYTHONPATH``, which hands over to a real runyard
when there is one). Outside a runyard task ``info()`` is None, ``log_metrics`` does nothing,
``preempting()`` is False: the same code runs under runyard and without it.

- :func:`info`: the experiment, task and attempt of this process; its rank, world size and
  local rank under a launcher (``launcher=run.Torchrun(...)``).
- :func:`log_metrics`: one JSON line ``{"time", "step", "values"}`` appended to the attempt's
  ``metrics.jsonl`` (by rank 0 only, under a launcher).
- :func:`preempting`, :func:`on_preempt`: the backend warned that the job will be stopped
  (Slurm's ``signal=``): time to checkpoint and exit. The runner creates the attempt's
  ``preempting`` file, then passes the signal (``RUNYARD_PREEMPT_SIGNAL``) on to the task,
  for which it does nothing unless a callback was registered.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["Info", "attempt_dir", "info", "log_metrics", "on_preempt", "preempting"]

METRICS = "metrics.jsonl"
PREEMPTING = "preempting"  # the marker file the runner creates on the preemption warning
WATCH_INTERVAL = 0.5  # seconds between two looks of the watcher thread at the marker


class Info(NamedTuple):
    """Where this process runs: ``rank``, ``world_size`` and ``local_rank`` are None
    outside a launcher."""

    experiment_id: str
    task_id: str
    attempt: int
    rank: int | None = None
    world_size: int | None = None
    local_rank: int | None = None


def _int(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def info() -> Info | None:
    """This task's experiment, task and attempt (and rank under a launcher); None outside a
    runyard task."""
    task_id = os.environ.get("RUNYARD_TASK_ID")
    if not task_id:
        return None
    ranked = bool(os.environ.get("RUNYARD_LAUNCHER"))
    return Info(
        experiment_id=os.environ.get("RUNYARD_EXPERIMENT_ID", ""),
        task_id=task_id,
        attempt=_int("RUNYARD_ATTEMPT") or 1,
        rank=_int("RANK") if ranked else None,
        world_size=_int("WORLD_SIZE") if ranked else None,
        local_rank=_int("LOCAL_RANK") if ranked else None,
    )


def attempt_dir() -> str | None:
    """The folder of this attempt (its logs, ``metrics.jsonl``); None outside a task."""
    folder = os.environ.get("RUNYARD_ATTEMPT_DIR")
    if folder:
        return folder
    task_dir, attempt = os.environ.get("RUNYARD_TASK_DIR"), os.environ.get("RUNYARD_ATTEMPT")
    if not (task_dir and attempt and os.environ.get("RUNYARD_TASK_ID")):
        return None
    return os.path.join(task_dir, f"attempt-{attempt}")


def _number(name: str, value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"log_metrics: the value of {name!r} must be a number (int or float), got "
            f"{type(value).__name__} {value!r}; convert it first (e.g. float(loss))"
        )
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None  # JSON has no NaN or infinity: null


def log_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    """Record ``values`` (metric name -> number) at ``step``: one line of the attempt's
    ``metrics.jsonl``. Under a launcher only rank 0 writes (every rank may call it); a
    non-finite value is written as null. Outside a task: nothing happens."""
    if not isinstance(values, Mapping):
        raise TypeError(f"log_metrics: values must be a dict of metric name -> number, got {values!r}")
    checked = {}
    for name, value in values.items():
        if not isinstance(name, str):
            raise TypeError(f"log_metrics: metric names must be strings, got {name!r}")
        checked[name] = _number(name, value)
    if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral)):
        raise TypeError(f"log_metrics: step must be an integer or None, got {step!r}")
    folder = attempt_dir()
    me = info()
    if folder is None or (me is not None and me.rank not in (None, 0)):
        return
    line = json.dumps({"time": time.time(), "step": None if step is None else int(step), "values": checked})
    fd = os.open(os.path.join(folder, METRICS), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one write: lines of concurrent writers never mix
    finally:
        os.close(fd)


def preempting() -> bool:
    """True once the backend has warned that this job will be stopped (preempted, or its time
    is up): the task should checkpoint and exit. Always False outside a task."""
    folder = attempt_dir()
    return folder is not None and os.path.exists(os.path.join(folder, PREEMPTING))


# --- on_preempt ----------------------------------------------------------------------------
_callbacks: list[Callable[[], Any]] = []
_called: set[int] = set()  # indexes into _callbacks of the callbacks that have run
_lock = threading.RLock()  # re-entrant: the signal handler may run while the main thread holds it
_watcher: threading.Thread | None = None
_handled: int | None = None  # the signal our handler is installed for


def _fire() -> None:
    """Runs every registered callback that has not run yet (each once)."""
    while True:
        with _lock:
            todo = next((i for i in range(len(_callbacks)) if i not in _called), None)
            if todo is None:
                return
            _called.add(todo)
        _callbacks[todo]()


def _watch() -> None:
    while not preempting():
        time.sleep(WATCH_INTERVAL)
    _fire()


def _preempt_signal() -> int | None:
    """The warning signal, as the runner reads it (``RUNYARD_PREEMPT_SIGNAL``: ``USR1``)."""
    sig = getattr(signal, "SIG" + os.environ.get("RUNYARD_PREEMPT_SIGNAL", "").strip().upper(), None)
    return int(sig) if isinstance(sig, signal.Signals) else None


def on_preempt(callback: Callable[[], Any]) -> None:
    """Call ``callback()`` once when the preemption warning comes (at once if it came
    already). In the main thread a signal handler runs it as soon as the signal arrives;
    a watcher thread that looks at the attempt's ``preempting`` file twice a second does
    in any case. Outside a task the callback is kept and never called."""
    global _watcher, _handled
    if not callable(callback):
        raise TypeError(f"on_preempt: callback must be callable, got {callback!r}")
    with _lock:
        _callbacks.append(callback)
    if attempt_dir() is None:
        return
    signum = _preempt_signal()
    if signum is not None and _handled is None and threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: Any) -> None:
            _fire()
            if callable(previous):
                previous(sig, frame)

        try:
            signal.signal(signum, handler)
            _handled = signum
        except (OSError, ValueError):
            pass  # not a signal that can be caught here: the watcher will see the file
    if _watcher is None:
        _watcher = threading.Thread(target=_watch, name="runyard-preempt-watcher", daemon=True)
        _watcher.start()
