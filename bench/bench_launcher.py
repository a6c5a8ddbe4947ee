"""The cost of the torchrun launcher: a 2-process torchrun task through runyard against
torchrun alone running the same training step.

    uv run --frozen python bench/bench_launcher.py [--repeat N] [--python TORCH_PYTHON] [--json]

The step: each of 2 ranks joins a gloo process group on CPU, all-reduces one tensor and
leaves. The figures, each the median (min..max) of N runs (default 3), round-robin after an
untimed warm-up round, every run checked (the sum of the all-reduce, the task SUCCEEDED):

- ``torchrun alone``: ``PYTHON -m torch.distributed.run --nnodes 1 --nproc-per-node 2
  --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:0 ddp_step.py``, start to exit;
- ``through runyard``: a fresh process (this venv's python) that creates an experiment, adds
  the step as a ``Config`` task with ``LocalExecutor(python=PYTHON,
  launcher=run.Torchrun(nproc_per_node=2))`` and runs it attached, start to exit (its own
  fresh RUNYARD_HOME);
- ``its attempt``: of those runs, the attempt as its runner recorded it (result.json's
  ``end - start``: the runner's fork, the agent and the ranks, without runyard's driver).

The difference of the first two is what the launcher costs a user; that of the last two is
runyard's driver around any task (start, store, supervisor). PYTHON: ``--python``, else
``RUNYARD_TEST_TORCH_PYTHON`` (from the environment or the test bed's env.sh): a Python with
PyTorch, which runyard does not need. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

TIMEOUT = 600.0
ENV_FILE = os.path.join(os.environ.get("RUNYARD_INFRA_DIR", "/tmp/runyard-infra"), "env.sh")

STEP = """\
def main():  # torch imported here: the driver imports this module too, without torch
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value)
    print(f"rank {dist.get_rank()} of {dist.get_world_size()}: sum {value.item()}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
"""

DRIVER = """\
import sys

import runyard as run

import ddp_step

exp = run.Experiment("bench-launcher")
executor = run.LocalExecutor(python=sys.argv[1], launcher=run.Torchrun(nproc_per_node=2))
exp.add(run.Config(ddp_step.main), executor=executor, name="ddp")
state = exp.run()
task = exp.tasks[0]
print(task.local_directory)
sys.exit(0 if state == "SUCCEEDED" else f"the task ended {state}: {task.reason}")
"""


def torch_python(given: str | None) -> str:
    python = given or os.environ.get("RUNYARD_TEST_TORCH_PYTHON")
    if not python and os.path.exists(ENV_FILE):
        with open(ENV_FILE) as f:
            m = re.search(r"^export RUNYARD_TEST_TORCH_PYTHON=(.*)$", f.read(), re.M)
        python = shlex.split(m.group(1))[0] if m else None
    if not python:
        sys.exit("no Python with torch: give --python, or set RUNYARD_TEST_TORCH_PYTHON (./dev.sh services)")
    return python


def timed(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, stdout) of one run. (No CPU figure: an attached runyard run drives its
    task from a supervisor process of its own, which the timed process does not reap.)"""
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"`{shlex.join(argv)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def torchrun_alone(python: str, work: str) -> float:
    argv = [
        python, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", "bench", "ddp_step.py",
    ]  # fmt: skip
    seconds, out = timed(argv, work, dict(os.environ))
    assert out.count(" of 2: sum 3.0") == 2, out  # (two ranks' lines: they may interleave)
    return seconds


def through_runyard(python: str, work: str) -> tuple[float, float]:
    """(the whole runyard process, the attempt as its runner recorded it)."""
    home = tempfile.mkdtemp(prefix="home-", dir=work)
    env = {**os.environ, "RUNYARD_HOME": home, "RUNYARD_PLAIN": "1"}
    try:
        seconds, out = timed([sys.executable, "driver.py", python], work, env)
        attempt = os.path.join(out.splitlines()[-1], "attempt-1")
        with open(os.path.join(attempt, "stdout.log")) as f:
            assert f.read() == "rank 0 of 2: sum 3.0\n"
        with open(os.path.join(attempt, "result.json")) as f:
            result = json.load(f)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return seconds, result["end"] - result["start"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--python", help="a Python with torch (default: RUNYARD_TEST_TORCH_PYTHON)")
    parser.add_argument("--json", action="store_true", help="print every run as JSON after the table")
    args = parser.parse_args()
    python = torch_python(args.python)

    work = tempfile.mkdtemp(prefix="runyard-bench-launcher-")
    try:
        for name, text in (("ddp_step.py", STEP), ("driver.py", DRIVER)):
            with open(os.path.join(work, name), "w") as f:
                f.write(text)
        runs: dict[str, list[float]] = {"torchrun alone": [], "through runyard": [], "its attempt": []}
        for round_ in range(args.repeat + 1):  # round 0 warms the page cache up, untimed
            print(f"round {round_}: torchrun alone", file=sys.stderr)
            alone = torchrun_alone(python, work)
            print(f"round {round_}: through runyard", file=sys.stderr)
            whole, attempt = through_runyard(python, work)
            if round_:
                for name, seconds in zip(runs, (alone, whole, attempt), strict=True):
                    runs[name].append(seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    median: dict[str, Any] = {name: statistics.median(values) for name, values in runs.items()}
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    print(f"torch python: {python}; a 2-process torchrun task (gloo all-reduce), median of {args.repeat}")
    print(f"{'figure':28s} {'median':>9s} {'min..max':>16s}")
    for name, values in runs.items():
        print(f"{name:28s} {median[name]:7.2f} s   {min(values):6.2f}..{max(values):.2f} s")
    launcher = median["through runyard"] - median["torchrun alone"]
    print(f"{'runyard - torchrun alone':28s} {launcher:+7.2f} s   (what the launcher costs a user)")
    driver = median["through runyard"] - median["its attempt"]
    print(f"{'runyard - its attempt':28s} {driver:+7.2f} s   (runyard's driver around the attempt)")
    if args.json:
        print(json.dumps(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
