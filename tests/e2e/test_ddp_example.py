"""examples/ddp_sweep.py runs as a user runs it, with real torch: a sweep of 2-process DDP runs
under torchrun (gloo on the CPU), at most two at once, then the pick of the best."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import runyard as run

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ddp_sweep.py"

pytestmark = [pytest.mark.slow]  # 3 tasks of 2 ranks that each import torch: seconds each, on 2 cores


@pytest.fixture(scope="module")
def sweep(
    tmp_path_factory: pytest.TempPathFactory, torch_python: str
) -> tuple[subprocess.CompletedProcess[str], run.Experiment]:
    home = str(tmp_path_factory.mktemp("ddp") / "runyard-home")
    env = dict(os.environ, RUNYARD_HOME=home, RUNYARD_PLAIN="1", RUNYARD_TORCH_PYTHON=torch_python)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc, run.Experiment.from_title("ddp-sweep", base_dir=home)


def test_every_run_trains_on_two_ranks_and_the_best_is_picked(sweep) -> None:
    proc, exp = sweep
    assert exp.status() == "SUCCEEDED"
    assert [t.id for t in exp.tasks] == ["ddp-0", "ddp-1", "ddp-2", "pick-best"]
    picked = exp.get_logs("pick-best").stdout
    assert picked.count("(world size 2)") == 3
    assert re.search(r"^best learning rate: 0\.(05|2|8)$", picked, re.MULTILINE)
    assert picked in proc.stdout


def test_rank_0_prints_the_steps_and_logs_them_as_metrics_rank_1_is_kept_beside(sweep) -> None:
    _, exp = sweep
    for task in exp.tasks[:3]:
        out = exp.get_logs(task.id).stdout
        steps = [int(s) for s in re.findall(r"^step (\d+)/12 loss: \d+\.\d{4}$", out, re.MULTILINE)]
        assert steps == list(range(1, 13)), out
        attempt = Path(task.local_directory, "attempt-1")
        lines = [json.loads(line) for line in (attempt / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in lines] == list(range(1, 13)) and all("loss" in m["values"] for m in lines)
        assert (attempt / "ranks" / "1" / "stdout.log").exists()


def test_no_more_than_two_runs_overlapped(sweep) -> None:
    _, exp = sweep
    runs = [(t.start_time, t.end_time) for t in exp.tasks[:3]]
    for start, _ in runs:  # when each run started, how many were running (itself included)
        assert sum(1 for s, e in runs if s <= start < e) <= 2, runs
