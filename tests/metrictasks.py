"""Training-like task targets for the metrics tests: print ``step i/n loss: x`` lines, a
tqdm-style ``\\r`` progress bar on stderr, and log metrics with ``runyard.job``. The standard
library only (they also run in a container or on a cluster where runyard is not installed)."""

from __future__ import annotations

import sys


def train(steps: int = 3, lr: float = 0.5, fail_first: bool = False) -> None:
    """``loss`` printed each step (``(1 - lr) ** step``), ``accuracy`` logged each step, a
    progress bar of ``\\r`` updates; with ``fail_first`` the first attempt fails after step 1."""
    from runyard import job

    me = job.info()
    attempt = me.attempt if me else 1
    bar = []
    for step in range(1, steps + 1):
        loss = round((1 - lr) ** step, 6)
        print(f"step {step}/{steps} loss: {loss}", flush=True)
        job.log_metrics({"accuracy": round(1 - loss, 6)}, step=step)
        bar.append(f"{100 * step // steps}%|| {step}/{steps} [00:00<00:00, lr={lr}]")
        if fail_first and attempt == 1:
            raise SystemExit(3)
    sys.stderr.write("\r".join(bar) + "\n")
    print("done", flush=True)
