"""A sweep of distributed data-parallel training runs, each under torchrun, then an evaluation.

    RUNYARD_TORCH_PYTHON=/path/to/venv-with-torch/bin/python python examples/ddp_sweep.py

    ddp-0 (lr 0.05) ──┐
    ddp-1 (lr 0.2)  ──┼──> pick-best
    ddp-2 (lr 0.8)  ──┘

Each training task runs as 2 processes (``run.Torchrun(nproc_per_node=2)``, gloo on the CPU:
no GPU needed) that fit a linear model with ``DistributedDataParallel``; at most two tasks run at
once (``max_parallel=2``). Rank 0 prints ``step 6/12 loss: 0.226`` lines, logs metrics with
``runyard.job.log_metrics`` and saves a checkpoint every few steps; a run that is preempted
(``runyard.job.preempting()``) saves and stops, and its next attempt resumes from the checkpoint.
``pick-best`` reads the final losses and names the best learning rate.

torch is needed only by the tasks, in the interpreter that runs them: ``RUNYARD_TORCH_PYTHON``
(default: the one running this script). On a cluster the same tasks run unchanged with, say,
``run.SlurmExecutor(partition="gpu", nodes=2, gpus_per_node=4, launcher="torchrun",
signal="USR1@90")``: torchrun then starts on every node, 4 ranks each.

Exits 0 when every task succeeded, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import sys

import runyard as run

LEARNING_RATES = [0.05, 0.2, 0.8]
STEPS = 12
CHECKPOINT_EVERY = 3
TORCH_PYTHON = os.environ.get("RUNYARD_TORCH_PYTHON") or sys.executable


# ----------------------------------------------------------------------------- the tasks
def train_ddp(learning_rate: float, out_dir: str, steps: int = STEPS) -> None:
    """One rank of a data-parallel fit of y = 3 x - 1: each rank its own shard of the data."""
    import datetime

    import torch
    import torch.distributed as dist
    from runyard import job
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)
    x = torch.rand(256, 1) * 2 - 1
    y = 3 * x - 1 + 0.05 * torch.randn(256, 1)
    model = DistributedDataParallel(torch.nn.Linear(1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    checkpoint = os.path.join(out_dir, "checkpoint.pt")
    start = 0
    if os.path.exists(checkpoint):  # an earlier attempt (preempted, or failed) got this far
        state = torch.load(checkpoint)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        if rank == 0:
            print(f"attempt {job.info().attempt}: resuming at step {start}")
    loss = torch.tensor(0.0)
    for step in range(start + 1, steps + 1):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()  # DDP all-reduces the gradients across the ranks
        optimizer.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        mean /= world
        if rank == 0:
            print(f"step {step}/{steps} loss: {mean.item():.4f}", flush=True)
            job.log_metrics({"loss": mean.item()}, step=step)
        if rank == 0 and (step % CHECKPOINT_EVERY == 0 or job.preempting()):
            os.makedirs(out_dir, exist_ok=True)
            state = {"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
            torch.save(state, checkpoint + ".tmp")
            os.replace(checkpoint + ".tmp", checkpoint)
        if job.preempting():  # the backend warned: checkpointed, stop; the next attempt resumes
            print(f"rank {rank}: preempted at step {step}, stopping", flush=True)
            sys.exit(1)
    if rank == 0:
        with open(os.path.join(out_dir, "final.json"), "w") as f:
            json.dump({"learning_rate": learning_rate, "loss": mean.item(), "world_size": world}, f)
        print(f"done: lr {learning_rate}, world size {world}, final loss: {mean.item():.4f}")
    dist.destroy_process_group()


def pick_best(run_dirs: list[str]) -> None:
    """Name the learning rate with the lowest final loss."""
    results = []
    for folder in run_dirs:
        with open(os.path.join(folder, "final.json")) as f:
            results.append(json.load(f))
    for r in results:
        print(f"lr {r['learning_rate']}: final loss {r['loss']:.4f} (world size {r['world_size']})")
    best = min(results, key=lambda r: r["loss"])
    print(f"best learning rate: {best['learning_rate']}")


# ----------------------------------------------------------------------------- the experiment
def create_sweep() -> run.Experiment:
    exp = run.Experiment(
        "ddp-sweep",
        description="Learning-rate sweep of 2-process DDP runs (torchrun, gloo on the CPU)",
        tags=["example", "distributed"],
        max_parallel=2,
        max_retries=1,
    )
    run_dirs = [os.path.join(exp.directory, "work", f"lr-{lr}") for lr in LEARNING_RATES]
    trainer = run.LocalExecutor(python=TORCH_PYTHON, launcher=run.Torchrun(nproc_per_node=2))
    with exp:
        sweep = exp.add(
            [
                run.Config(train_ddp, learning_rate=lr, out_dir=d)
                for lr, d in zip(LEARNING_RATES, run_dirs, strict=True)
            ],
            executor=trainer,
            name="ddp",
        )
        exp.add(run.Config(pick_best, run_dirs=run_dirs), name="pick-best", dependencies=sweep)
    return exp


def main() -> int:
    exp = create_sweep()
    state = exp.run()
    print(f"\nfinal status: {state}")
    if state != "SUCCEEDED":
        print(f"a task failed; its output: runyard logs {exp.experiment_id} TASK", file=sys.stderr)
        return 1
    print(exp.get_logs("pick-best").stdout, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
