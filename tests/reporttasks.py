"""Task targets for the report tests: training-like tasks that print ``step i/n loss: x`` lines
and log metrics with ``runyard.job``, and a task whose every word is hostile HTML. The standard
library only."""

from __future__ import annotations

import sys


def train(steps: int = 5, lr: float = 0.5, fail_first: bool = False) -> None:
    """``loss`` printed and ``accuracy`` logged each step; with ``fail_first`` the first attempt
    fails (exit 3) after two steps, and the next one starts over."""
    from runyard import job

    me = job.info()
    attempt = me.attempt if me else 1
    for step in range(1, steps + 1):
        loss = round((1 - lr) ** step, 6)
        print(f"step {step}/{steps} loss: {loss}", flush=True)
        job.log_metrics({"accuracy": round(1 - loss, 6)}, step=step)
        if fail_first and attempt == 1 and step == 2:
            print("out of luck", file=sys.stderr, flush=True)
            raise SystemExit(3)


def hostile(text: str) -> None:
    """Logs a metric named ``text``, prints ``text`` on both streams, then fails with it."""
    from runyard import job

    job.log_metrics({text: 1.0}, step=1)
    job.log_metrics({text: 2.0}, step=2)
    print(text, flush=True)
    print(text, file=sys.stderr, flush=True)
    raise RuntimeError(text)
