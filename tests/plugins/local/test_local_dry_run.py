"""A local dry run shows exactly what a launch starts: the runner's command line, its working
directory and the variables it adds, as the running process has them (read from /proc)."""

from __future__ import annotations

import io
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from _local_helpers import task
from helpers import until


@pytest.fixture
def experiments() -> Iterator[list[run.Experiment]]:
    """Experiments the test made; their tasks are cancelled after it."""
    made: list[run.Experiment] = []
    yield made
    for exp in made:
        exp.cancel_all()
        until(lambda exp=exp: exp.store.experiment(exp.id).driver_pid is None, "the supervisor to end")


def shown(text: str) -> tuple[list[str], str, dict[str, str]]:
    """(command line, working directory, variables) as the dry run shows them."""
    lines = text.splitlines()
    argv = shlex.split(next(line for line in lines if line.startswith("command: ")).removeprefix("command: "))
    cwd = next(line for line in lines if line.startswith("cwd: ")).removeprefix("cwd: ")
    env_at = next(i for i, line in enumerate(lines) if line.startswith("env "))
    env = dict(shlex.split(line)[0].split("=", 1) for line in lines[env_at + 1 :] if line.startswith("  "))
    return argv, cwd, env


def process(pid: int) -> tuple[list[str], str, dict[str, str]]:
    """(command line, working directory, environment) of a running process, from /proc."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [word.decode() for word in f.read().split(b"\0")[:-1]]
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(entry.decode().split("=", 1) for entry in f.read().split(b"\0") if b"=" in entry)
    return argv, os.readlink(f"/proc/{pid}/cwd"), env


@pytest.mark.parametrize(
    "work",
    [run.Config(taskdefs.sleep_then_print, 600), run.Script(inline="sleep 600")],
    ids=["python", "script"],
)
def test_the_dry_run_shows_the_command_cwd_and_variables_of_the_runner_the_launch_starts(
    work: Any, experiments: list[run.Experiment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the experiment's working directory: the runner's
    exp = run.Experiment("local-dry-run")
    experiments.append(exp)
    executor = run.LocalExecutor(env_vars={"LR": "0.1", "HF_TOKEN": "hf_secret"})
    exp.add(work, executor=executor, name="t")
    argv, cwd, env = shown(exp.dry_run(file=io.StringIO())["t"])

    exp.run(detach=True)
    until(lambda: task(exp, "t").status == "RUNNING" and task(exp, "t").job_id, "the task to run")
    pid = int(task(exp, "t").job_id)  # the job id is the runner's pid
    runner_argv, runner_cwd, runner_env = process(pid)

    assert runner_argv == argv
    assert runner_cwd == os.path.realpath(cwd) == os.path.realpath(tmp_path)
    assert (env["HF_TOKEN"], runner_env["HF_TOKEN"]) == ("***", "hf_secret")  # masked only where shown
    assert {name: runner_env.get(name) for name in env if name != "HF_TOKEN"} == {
        name: value for name, value in env.items() if name != "HF_TOKEN"
    }
    assert env["LR"] == "0.1" and env["RUNYARD_TASK_ID"] == "t" and env["RUNYARD_ATTEMPT"] == "1"
