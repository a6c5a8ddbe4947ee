"""Detached runs: a supervisor process drives the experiment after the launcher exits, and
`runyard takeover` replaces a supervisor that died, without re-running or relaunching tasks."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runyard as run
from helpers import until as _until
from runyard.errors import ExperimentStateError

LAUNCHER = """\
import runyard as run
import taskdefs

exp = run.Experiment("detached", max_retries={max_retries})
{body}
exp.run(detach=True)
print(exp.experiment_id, flush=True)
"""


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (nothing reaps orphans in some containers)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def _launch(tmp_path: Path, body: str, max_retries: int = 0) -> tuple[run.Experiment, float]:
    """Run a launcher script that adds tasks, calls run(detach=True) and exits.

    Returns the experiment (rebuilt here from its id) and the time the launcher had exited.
    """
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER.format(max_retries=max_retries, body=textwrap.dedent(body)))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    exited_at = time.time()
    assert proc.returncode == 0, proc.stderr
    return run.Experiment.from_id(proc.stdout.split()[-1]), exited_at


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _by_id(exp: run.Experiment) -> dict[str, Any]:
    return {t.id: t for t in exp.tasks}


def _supervisor_ends(exp: run.Experiment) -> None:
    _until(lambda: exp.store.experiment(exp.id).driver_pid is None, "the supervisor to let go")


# ------------------------------------------------------------------------------ supervisor drives
def test_launcher_exits_while_its_tasks_still_run(tmp_path: Path) -> None:
    exp, exited_at = _launch(
        tmp_path,
        """
        first = exp.add(run.Config(taskdefs.sleep_then_print, 2.0, "first"), name="first")
        exp.add(run.Config(taskdefs.hello, "second"), name="second", dependencies=[first])
        """,
    )
    assert not exp.status().is_final
    assert exp.driver_alive()

    assert exp.wait(timeout=60) == "SUCCEEDED"
    second = _by_id(exp)["second"]
    assert second.start_time is not None
    assert second.start_time.timestamp() > exited_at  # launched by the supervisor, not the launcher
    _supervisor_ends(exp)


def test_supervisor_launches_dependents_after_their_dependencies(tmp_path: Path) -> None:
    exp, _ = _launch(
        tmp_path,
        """
        a = exp.add(run.Config(taskdefs.sleep_then_print, 0.5, "a"), name="a")
        b = exp.add(run.Config(taskdefs.sleep_then_print, 0.3, "b"), name="b", dependencies=[a])
        c = exp.add(run.Config(taskdefs.sleep_then_print, 0.2, "c"), name="c", dependencies=[a])
        exp.add(run.Config(taskdefs.hello, "d"), name="d", dependencies=[b, c])
        """,
    )
    assert exp.wait(timeout=60) == "SUCCEEDED"
    tasks = _by_id(exp)
    for task in tasks.values():
        assert task.status == "SUCCEEDED"
        for dep in task.dependencies:
            assert task.start_time >= tasks[dep].end_time, f"{task.id} started before {dep} ended"
    assert tasks["b"].start_time < tasks["c"].end_time  # b and c ran side by side
    _supervisor_ends(exp)


def test_supervisor_retries_a_failed_task_before_its_dependents(tmp_path: Path) -> None:
    runs = tmp_path / "flaky-runs"
    exp, _ = _launch(
        tmp_path,
        f"""
        flaky = exp.add(run.Config(taskdefs.count_runs, {str(runs)!r}, fail_until=2), name="flaky")
        exp.add(run.Config(taskdefs.hello, "after"), name="after", dependencies=[flaky])
        """,
        max_retries=1,
    )
    assert exp.wait(timeout=60) == "SUCCEEDED"
    tasks = _by_id(exp)
    assert tasks["flaky"].status == "SUCCEEDED"
    assert tasks["flaky"].attempts == 2
    assert len(_lines(runs)) == 2
    assert tasks["after"].attempts == 1
    assert tasks["after"].start_time >= tasks["flaky"].end_time
    _supervisor_ends(exp)


def test_supervisor_exits_when_the_experiment_ends(tmp_path: Path) -> None:
    # 3 s: the task outlives the launcher's exit and this first look, even on a loaded machine
    exp, _ = _launch(tmp_path, 'exp.add(run.Config(taskdefs.sleep_then_print, 3), name="only")')
    pid = exp.store.experiment(exp.id).driver_pid
    assert pid is not None and exp.store.experiment(exp.id).driver_kind == "supervisor"

    assert exp.wait(timeout=60) == "SUCCEEDED"
    _until(lambda: not _alive(pid), "the supervisor process to exit")
    assert exp.store.experiment(exp.id).driver_pid is None


# ------------------------------------------------------------------------------ supervisor killed
@pytest.fixture
def orphaned(tmp_path: Path) -> Iterator[tuple[run.Experiment, Path]]:
    """A detached experiment whose supervisor was SIGKILLed while task b was running.

    a (quick) has SUCCEEDED; b sleeps 3 s then writes b-done; c depends on b.
    """
    b_script = f"sleep 3; echo done >> {shlex.quote(str(tmp_path / 'b-done'))}"
    exp, _ = _launch(
        tmp_path,
        f"""
        exp.add(run.Config(taskdefs.count_runs, {str(tmp_path / "a-runs")!r}), name="a")
        b = exp.add(run.Script(inline={b_script!r}), name="b")
        exp.add(run.Config(taskdefs.count_runs, {str(tmp_path / "c-runs")!r}), name="c", dependencies=[b])
        """,
    )
    _until(
        lambda: (t := _by_id(exp))["a"].status == "SUCCEEDED" and t["b"].status == "RUNNING",
        "a SUCCEEDED and b RUNNING",
    )
    record = exp.store.experiment(exp.id)
    assert record.driver_kind == "supervisor" and record.driver_pid is not None
    os.kill(record.driver_pid, signal.SIGKILL)
    _until(lambda: not _alive(record.driver_pid), "the supervisor to die")
    yield exp, tmp_path
    exp.cancel_all()  # whatever a test left unfinished
    _until(lambda: exp.store.experiment(exp.id).driver_pid in (None, record.driver_pid), "drivers to end")


def test_running_task_outlives_its_killed_supervisor(orphaned: tuple[run.Experiment, Path]) -> None:
    exp, tmp_path = orphaned
    b = _by_id(exp)["b"]
    assert _alive(int(b.job_id))
    _until(lambda: (tmp_path / "b-done").exists(), "b to finish its work", timeout=30)
    assert _by_id(exp)["c"].status == "PENDING"  # nobody launches it


def test_wait_on_orphaned_experiment_says_to_take_it_over(
    orphaned: tuple[run.Experiment, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    exp, _ = orphaned
    assert exp.driver_alive() is False
    monkeypatch.setattr("runyard.running.STALE_AFTER", 0.5)  # the stale period, shortened
    with pytest.raises(ExperimentStateError, match="no process drives") as info:
        exp.wait(timeout=60)
    assert f"runyard takeover {exp.id}" in str(info.value)


def test_takeover_finishes_without_rerunning_or_relaunching(orphaned: tuple[run.Experiment, Path]) -> None:
    exp, tmp_path = orphaned
    b_job = _by_id(exp)["b"].job_id
    proc = subprocess.run(
        [sys.executable, "-m", "runyard", "takeover", exp.id], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert exp.store.experiment(exp.id).driver_kind == "supervisor" or exp.status().is_final

    assert exp.wait(timeout=60) == "SUCCEEDED"
    tasks = _by_id(exp)
    assert tasks["a"].attempts == 1
    assert _lines(tmp_path / "a-runs") == ["run"]  # a was not run again
    assert tasks["b"].attempts == 1 and tasks["b"].job_id == b_job  # b was not relaunched...
    assert tasks["b"].exit_code == 0  # ...its result came from the runner's files
    assert _lines(tmp_path / "b-done") == ["done"]
    assert not Path(tasks["b"].local_directory, "attempt-2").exists()
    assert tasks["c"].status == "SUCCEEDED" and tasks["c"].attempts == 1
    assert _lines(tmp_path / "c-runs") == ["run"]
    _supervisor_ends(exp)
