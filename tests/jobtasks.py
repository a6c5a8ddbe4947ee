"""Task targets that use ``runyard.job``, and under a launcher ``torch.distributed`` (gloo on
CPU). Importable by the task processes (tests/ is on PYTHONPATH); the standard library only
at import time, so that they also run on a Python with neither runyard nor torch."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

WAIT = 120.0  # seconds a task waits for what its test does, at most (only against hangs)


def _write(path: str, value: object) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)  # the test never reads a half-written file


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _wait_for(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {WAIT}s")
        time.sleep(0.05)


def report_job(path: str) -> None:
    """Writes what ``runyard.job`` says here, and which runyard was imported, to ``path``;
    logs one metric point."""
    import runyard
    import runyard.job as job

    try:
        import runyard.config

        other = "importable"
    except ModuleNotFoundError:
        other = "missing"
    job.log_metrics({"loss": 0.5, "tokens": 12}, step=3)
    info = job.info()
    _write(
        path,
        {
            "info": info._asdict() if info is not None else None,
            "has_config": hasattr(runyard, "Config"),
            "runyard_file": runyard.__file__,
            "job_file": job.__file__,
            "attempt_dir": job.attempt_dir(),
            "env_attempt_dir": os.environ.get("RUNYARD_ATTEMPT_DIR"),
            "preempting": job.preempting(),
            "other_module": other,
        },
    )


def wait_for_preemption(ready: str, called: str, callback: bool = True) -> None:
    """Registers an ``on_preempt`` callback (``callback``) that appends to ``called``, says
    ``ready``, then waits until ``preempting()`` and ends well: a checkpoint-and-exit."""
    import runyard.job as job

    if callback:
        job.on_preempt(lambda: _append(called, f"called in pid {os.getpid()}"))
    _write(ready, os.getpid())
    _wait_for(job.preempting, "preemption warning")
    if callback:
        _wait_for(lambda: os.path.exists(called), "on_preempt callback")
    print("preempted: checkpointed")


def print_module_file(name: str) -> None:
    """Prints the file that ``import <name>`` loads where the task runs."""
    import importlib

    print(importlib.import_module(name).__file__)


# ------------------------------------------------------------------------------ under torchrun
def allreduce(out_dir: str) -> None:
    """Each rank joins the gloo group, all-reduces rank + 1 and prints (and writes into
    ``out_dir``) what it saw: rank, world size, the sum, ``runyard.job.info()``, its process
    group and session."""
    import runyard.job as job
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value)
    info = job.info()
    seen = {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "sum": value.item(),
        "info": info._asdict() if info is not None else None,
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "attempt_dir": os.environ.get("RUNYARD_ATTEMPT_DIR"),
    }
    dist.destroy_process_group()
    print(json.dumps(seen), flush=True)
    _write(os.path.join(out_dir, f"rank-{seen['rank']}.json"), seen)


def allreduce_beside(out_dir: str, meeting: str, me: str, other: str) -> None:
    """``allreduce``, then waits in ``meeting`` until the same rank of task ``other`` has
    all-reduced too: the two tasks had their rendezvous at the same time."""
    allreduce(out_dir)
    rank = os.environ["RANK"]
    _write(os.path.join(meeting, f"{me}-{rank}"), os.getpid())
    _wait_for(lambda: os.path.exists(os.path.join(meeting, f"{other}-{rank}")), f"task {other}'s rank {rank}")


def fail_on_rank(rank: int, message: str, meeting: str) -> None:
    """Each rank prints ``rank R here`` and says so in ``meeting``; rank ``rank`` then raises
    ValueError(message), once every other rank has printed (so that none is stopped before
    it did); the others end well."""
    me = int(os.environ["RANK"])
    print(f"rank {me} here", flush=True)
    _write(os.path.join(meeting, f"rank-{me}"), os.getpid())
    if me == rank:
        others = [r for r in range(int(os.environ["WORLD_SIZE"])) if r != me]
        _wait_for(
            lambda: all(os.path.exists(os.path.join(meeting, f"rank-{r}")) for r in others), "the others"
        )
        raise ValueError(message)


def sleep_in_every_rank(pid_dir: str, ignore_sigterm: bool = False) -> None:
    """Each rank writes its pid into ``pid_dir`` and sleeps (deaf to SIGTERM with
    ``ignore_sigterm``)."""
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _write(os.path.join(pid_dir, f"rank-{os.environ['RANK']}.pid"), os.getpid())
    time.sleep(300)


def every_rank_waits_for_preemption(out_dir: str) -> None:
    """Each rank registers an ``on_preempt`` callback, says it is ready, and waits for the
    warning; the callback's call is written into ``out_dir``."""
    rank = os.environ["RANK"]
    wait_for_preemption(os.path.join(out_dir, f"ready-{rank}"), os.path.join(out_dir, f"called-{rank}"))
