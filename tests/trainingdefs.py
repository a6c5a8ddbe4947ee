"""Task functions of the training tests (torch.distributed under a launcher, preemption),
imported by module name in the jobs that run them, like taskdefs. torch is imported inside the
functions: only the interpreter that runs the task needs it (the test bed's torch venv)."""

from __future__ import annotations

import os
import signal
import sys
import time


def allreduce(fail_rank: int | None = None) -> None:
    """One rank: join the gloo group, print ``rank=R world=W sum=S node=N``, where S is the
    all-reduced sum of every rank's number; rank ``fail_rank`` raises instead."""
    import datetime

    import torch
    import torch.distributed as dist
    from runyard import job

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == fail_rank:
        raise RuntimeError(f"rank {rank} fails on purpose")
    value = torch.tensor([float(rank)])
    dist.all_reduce(value)
    me = job.info()
    assert me is not None and (me.rank, me.world_size) == (rank, world), me
    print(
        f"rank={rank} world={world} sum={value.item():g} node={os.environ.get('SLURMD_NODENAME')}", flush=True
    )
    dist.barrier()
    dist.destroy_process_group()


def wait_for_preemption(seconds: float = 300.0) -> None:
    """Attempt 1 prints ``waiting``, then waits (at most ``seconds``) to be stopped: when
    ``runyard.job.preempting()`` turns True it prints ``preempting``, when its
    ``on_preempt`` callback runs ``warned``, and on SIGTERM (which a preemption sends beside
    the warning, in any order) ``terminated preempting=<preempting() then>``, then it exits
    143. Later attempts print ``resumed on attempt N`` and end at once."""
    from runyard import job

    me = job.info()
    assert me is not None
    if me.attempt > 1:
        print(f"resumed on attempt {me.attempt}", flush=True)
        return

    warned: list[bool] = []

    def on_term(signum: int, frame: object) -> None:
        deadline = time.monotonic() + 3  # the warning may come a moment after TERM
        while not (job.preempting() and warned) and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"terminated preempting={job.preempting()}", flush=True)
        os._exit(143)

    def on_preempt() -> None:
        print("warned", flush=True)
        warned.append(True)

    signal.signal(signal.SIGTERM, on_term)
    job.on_preempt(on_preempt)
    print("waiting", flush=True)
    said = False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if job.preempting() and not said:
            print("preempting", flush=True)
            said = True
        time.sleep(0.05)
    sys.exit("never preempted")
