"""The in-task helper ``runyard.job``: importable in every task whether or not runyard is
installed where it runs (the job carries it, with a stand-in ``runyard`` package that hands
over to a real one), quiet outside a task, and the preemption warning: the runner marks the
attempt ``preempting`` and passes the signal (RUNYARD_PREEMPT_SIGNAL) on, which a Python task
lives through and ``on_preempt`` callbacks hear. Tasks run as real local processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jobtasks
import pytest
import runyard as run
import runyard.job as job
from helpers import until
from runyard.jobfiles import runner_path
from runyard.naming import attempt_dir


def view(exp: run.Experiment, task_id: str) -> Any:
    return next(t for t in exp.tasks if t.id == task_id)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python with nothing installed: no runyard, no attrs (a cluster's or an image's)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    missing = subprocess.run([python, "-c", "import runyard"], capture_output=True, check=False)
    assert missing.returncode != 0, "the bare venv must not see runyard"
    return python


@pytest.fixture
def outside_a_task(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("RUNYARD_") and name != "RUNYARD_HOME":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


# ------------------------------------------------------------------------------ in this process
def test_outside_a_task_info_is_none_and_the_rest_does_nothing(outside_a_task: Path) -> None:
    called: list[int] = []

    assert job.info() is None
    assert job.attempt_dir() is None
    job.log_metrics({"loss": 0.25}, step=1)
    assert job.preempting() is False
    job.on_preempt(lambda: called.append(1))

    assert list(outside_a_task.iterdir()) == []  # nothing written anywhere
    assert called == []


def test_log_metrics_appends_one_json_line_per_call(
    outside_a_task: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNYARD_TASK_ID", "t")
    monkeypatch.setenv("RUNYARD_ATTEMPT_DIR", str(outside_a_task))

    job.log_metrics({"loss": 0.5, "tokens": 12}, step=3)
    job.log_metrics({"loss": float("nan")})

    lines = [json.loads(line) for line in (outside_a_task / "metrics.jsonl").read_text().splitlines()]
    assert [(p["step"], p["values"]) for p in lines] == [
        (3, {"loss": 0.5, "tokens": 12}),
        (None, {"loss": None}),
    ]
    assert all(isinstance(p["time"], float) for p in lines)


@pytest.mark.parametrize(
    ("values", "step", "said"),
    [
        ({"loss": "0.5"}, None, "the value of 'loss' must be a number (int or float), got str '0.5'"),
        ({"done": True}, None, "the value of 'done' must be a number"),
        ({1: 0.5}, None, "metric names must be strings, got 1"),
        ([("loss", 0.5)], None, "values must be a dict of metric name -> number"),
        ({"loss": 0.5}, 1.5, "step must be an integer or None, got 1.5"),
    ],
)
def test_log_metrics_refuses_what_is_not_a_number_and_writes_nothing(
    outside_a_task: Path, monkeypatch: pytest.MonkeyPatch, values: Any, step: Any, said: str
) -> None:
    monkeypatch.setenv("RUNYARD_TASK_ID", "t")
    monkeypatch.setenv("RUNYARD_ATTEMPT_DIR", str(outside_a_task))

    with pytest.raises(TypeError, match=r"^log_metrics: ") as caught:
        job.log_metrics(values, step=step)

    assert said in str(caught.value)
    assert not (outside_a_task / "metrics.jsonl").exists()


# ------------------------------------------------------------------------------ in real tasks
def _report(exp: run.Experiment, task_id: str, path: Path) -> dict[str, Any]:
    assert exp.run() == "SUCCEEDED", view(exp, task_id).reason
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def test_a_python_task_on_a_python_without_runyard_imports_runyard_job(
    bare_python: str, tmp_path: Path
) -> None:
    exp = run.Experiment("bare")
    out = tmp_path / "report.json"
    task_id = exp.add(
        run.Config(jobtasks.report_job, str(out)), executor=run.LocalExecutor(python=bare_python)
    )

    report = _report(exp, task_id, out)

    folder = attempt_dir(exp.directory, task_id, 1)
    assert report["info"] == {
        "experiment_id": exp.id, "task_id": task_id, "attempt": 1,
        "rank": None, "world_size": None, "local_rank": None,
    }  # fmt: skip
    assert report["job_file"] == runner_path("job.py")  # the one the job carries
    assert report["has_config"] is False and report["other_module"] == "missing"  # runyard.job only
    assert report["attempt_dir"] == report["env_attempt_dir"] == folder
    assert report["preempting"] is False
    point = json.loads(Path(folder, "metrics.jsonl").read_text())
    assert (point["step"], point["values"]) == (3, {"loss": 0.5, "tokens": 12})


def test_a_python_task_where_runyard_is_installed_gets_the_real_package(tmp_path: Path) -> None:
    exp = run.Experiment("installed")
    out = tmp_path / "report.json"
    task_id = exp.add(run.Config(jobtasks.report_job, str(out)), executor=run.LocalExecutor())

    report = _report(exp, task_id, out)

    assert report["has_config"] is True and report["other_module"] == "importable"
    assert report["runyard_file"] == run.__file__ and report["job_file"] == job.__file__


@pytest.mark.parametrize("installed", [False, True], ids=["without-runyard", "with-runyard"])
def test_a_script_task_imports_runyard_job_through_its_pythonpath(
    bare_python: str, installed: bool, tmp_path: Path
) -> None:
    """A Script's Python finds the stand-in first on PYTHONPATH (before site-packages): it
    hands over to the installed runyard, if there is one."""
    out = tmp_path / "report.json"
    code = f"import jobtasks; jobtasks.report_job({str(out)!r})"
    exp = run.Experiment("script")
    task_id = exp.add(run.Script(inline=code, entrypoint=sys.executable if installed else bare_python))

    report = _report(exp, task_id, out)

    assert report["info"]["task_id"] == task_id
    assert report["has_config"] is installed
    assert report["runyard_file"] == (run.__file__ if installed else runner_path("_shim/runyard/__init__.py"))


def test_the_runners_folder_is_not_on_a_python_tasks_import_path() -> None:
    """runner.py runs from core's folder, whose modules (packaging.py, config.py...) would
    shadow the task's own imports of the same names."""
    exp = run.Experiment("imports")
    task_id = exp.add(run.Config(jobtasks.print_module_file, "packaging"), executor=run.LocalExecutor())

    assert exp.run() == "SUCCEEDED", view(exp, task_id).reason

    assert exp.get_logs(task_id).stdout.strip() != os.path.join(os.path.dirname(run.__file__), "packaging.py")
    assert "site-packages" in exp.get_logs(task_id).stdout


# ------------------------------------------------------------------------------ preemption
WARNED = run.LocalExecutor(env_vars={"RUNYARD_PREEMPT_SIGNAL": "USR1"})


def _start(task: Any, ready: Path) -> tuple[run.Experiment, str, int]:
    """Starts ``task`` detached; (experiment, task id, runner pid) once it wrote ``ready``."""
    exp = run.Experiment("preempt")
    task_id = exp.add(task, executor=WARNED)
    exp.run(detach=True)
    until(lambda: ready.exists(), f"{ready.name} to be written")
    return exp, task_id, int(view(exp, task_id).job_id)


@pytest.mark.parametrize("callback", [True, False], ids=["on_preempt", "no-callback"])
def test_the_preemption_warning_marks_the_attempt_and_a_python_task_lives_through_it(
    tmp_path: Path, callback: bool
) -> None:
    """The signal sent to the runner (the local job id is its pid): preempting() turns True,
    an on_preempt callback runs once, and a task without one is not killed by the signal:
    it checkpoints and ends well."""
    ready, called = tmp_path / "ready", tmp_path / "called"
    exp, task_id, runner = _start(
        run.Config(jobtasks.wait_for_preemption, str(ready), str(called), callback), ready
    )

    os.kill(runner, signal.SIGUSR1)

    assert exp.wait(timeout=60) == "SUCCEEDED", view(exp, task_id).reason
    assert view(exp, task_id).exit_code == 0
    assert Path(attempt_dir(exp.directory, task_id, 1), "preempting").exists()
    assert "preempted: checkpointed" in exp.get_logs(task_id).stdout
    if callback:
        assert called.read_text().splitlines() == [f"called in pid {ready.read_text()}"]  # once, in the task


def test_the_preemption_warning_reaches_a_script_which_may_trap_it(tmp_path: Path) -> None:
    """A Script gets the signal with its default disposition (runner.sh forwards it): a trap
    hears it, and the attempt is marked before."""
    ready = tmp_path / "ready"
    script = (
        "trap '[ -e \"$RUNYARD_ATTEMPT_DIR/preempting\" ] && echo marked; exit 0' USR1; "
        f"echo go > {ready}; while :; do sleep 0.05; done"
    )
    exp, task_id, runner = _start(run.Script(inline=script), ready)

    os.kill(runner, signal.SIGUSR1)

    assert exp.wait(timeout=60) == "SUCCEEDED", view(exp, task_id).reason
    assert exp.get_logs(task_id).stdout == "marked\n"
