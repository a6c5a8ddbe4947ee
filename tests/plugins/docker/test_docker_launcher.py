"""Inside containers of the test image (which has no runyard and no torch): tasks import
``runyard.job`` from the files every job carries, and the torchrun launcher runs in the
container, with the test bed's torch venv mounted read-only at its own path (with the Python
it was made from, and the C++ runtime that torch needs and the image lacks)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jobtasks
import pytest
import runyard as run

Executor = Callable[..., Any]


def _attempt(exp: run.Experiment) -> Path:
    return Path(exp.tasks[0].local_directory, "attempt-1")


def test_a_task_in_an_image_without_runyard_imports_runyard_job(
    docker_executor: Executor, tasks_dir: str
) -> None:
    exp = run.Experiment("docker-job")
    exp.add(
        run.Config(jobtasks.report_job, "/shared/report.json"),
        executor=docker_executor(volumes=[f"{tasks_dir}:/shared"]),
        name="t",
    )

    assert exp.run() == "SUCCEEDED", exp.tasks[0].reason

    report = json.loads(Path(tasks_dir, "report.json").read_text())
    assert report["info"]["task_id"] == "t" and report["info"]["experiment_id"] == exp.id
    assert (report["has_config"], report["job_file"]) == (False, "/runyard/job.py")  # the job's copy
    assert report["attempt_dir"] == "/runyard/task/attempt-1"
    point = json.loads((_attempt(exp) / "metrics.jsonl").read_text())
    assert point["values"] == {"loss": 0.5, "tokens": 12}


def test_a_bash_script_in_the_image_imports_runyard_job(docker_executor: Executor) -> None:
    """runner.sh puts the stand-in on the script's PYTHONPATH too."""
    code = "import runyard.job as j; print(j.info().task_id, j.attempt_dir())"
    exp = run.Experiment("docker-job-script")
    exp.add(run.Script(inline=f"python3 -c '{code}'"), executor=docker_executor(), name="t")

    assert exp.run() == "SUCCEEDED", exp.tasks[0].reason

    assert exp.get_logs("t").stdout == "t /runyard/task/attempt-1\n"


def _torch_mounts(python: str) -> list[str]:
    """The torch venv and the Python it was made from, read-only at their own paths, and this
    machine's libstdc++ (the image is Debian bookworm too, without it)."""
    prefixes = subprocess.run(
        [python, "-c", "import sys; print(sys.prefix); print(sys.base_prefix)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    mounts = [f"{p}:{p}:ro" for p in dict.fromkeys(prefixes) if p != "/usr"]  # /usr: the image's own
    name = ctypes.util.find_library("stdc++")
    assert name, "no libstdc++ on this machine"
    found = [Path(d, name) for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64")]
    library = next(p for p in found if p.exists())
    mounts.append(f"{os.path.realpath(library)}:/usr/lib/x86_64-linux-gnu/{name}:ro")
    return mounts


@pytest.mark.slow
def test_torchrun_runs_in_the_container_and_its_ranks_all_reduce(
    docker_executor: Executor, torch_python: str, tasks_dir: str
) -> None:
    executor = docker_executor(
        python=torch_python,
        volumes=[*_torch_mounts(torch_python), f"{tasks_dir}:/shared"],
        launcher=run.Torchrun(nproc_per_node=2),
    )
    exp = run.Experiment("docker-ddp")
    exp.add(run.Config(jobtasks.allreduce, "/shared"), executor=executor, name="t")

    assert exp.run() == "SUCCEEDED", exp.tasks[0].reason

    for rank in (0, 1):
        seen = json.loads(Path(tasks_dir, f"rank-{rank}.json").read_text())
        assert (seen["rank"], seen["world_size"], seen["sum"]) == (rank, 2, 3.0)
        assert seen["info"]["rank"] == rank and seen["attempt_dir"] == "/runyard/task/attempt-1"
    assert json.loads(exp.get_logs("t").stdout)["rank"] == 0
    assert json.loads((_attempt(exp) / "ranks" / "1" / "stdout.log").read_text())["rank"] == 1
