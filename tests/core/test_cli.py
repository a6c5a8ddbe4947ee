"""The `runyard` command on experiments created by this process: mostly run in this process
(``here``: runyard.cli.main with a fresh plugin manager and its output captured, which does
what the command does without an interpreter start per call), and as a process of its own
(``cli``: `python -m runyard`, or the console script) where a process is the point: the exit
code and the whole stderr a user sees, the installed script, and commands whose effect must
outlive the command (takeover, retry). The tests of damaged and full stores use ``cli``."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from helpers import until as _until
from runyard import cli as runyard_cli
from runyard.plugins import reset_plugin_manager


def cli(*args: Any, console_script: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`runyard ARGS` as a process of its own."""
    if console_script:
        script = shutil.which("runyard", path=os.path.dirname(sys.executable))
        assert script is not None, "the runyard console script is not installed next to python"
        command = [script]
    else:
        command = [sys.executable, "-m", "runyard"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def here(*args: Any) -> subprocess.CompletedProcess[str]:
    """`runyard ARGS` in this process, as a new process would run it: a fresh plugin manager,
    stdout and stderr captured, and its exit code (argparse's SystemExit included)."""
    argv = list(map(str, args))
    out, err = io.StringIO(), io.StringIO()
    reset_plugin_manager()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = runyard_cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(["runyard", *argv], code, out.getvalue(), err.getvalue())


def ok(*args: Any, process: bool = False, **kwargs: Any) -> str:
    """Run the command (in this process unless ``process`` or ``console_script``), expect
    success, return its stdout."""
    result = cli(*args, **kwargs) if process or kwargs.get("console_script") else here(*args)
    assert result.returncode == 0, f"runyard {' '.join(map(str, args))} failed:\n{result.stderr}"
    return result.stdout


def assert_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit code 1, one line on stderr starting with `runyard: error:`, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("runyard: error: ")
    for word in words:
        assert word in lines[0]


def _state_letter(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()[0].decode()


def _tasks(exp: run.Experiment) -> dict[str, Any]:
    return {t.id: t for t in exp.tasks}


def _driver_ends(exp: run.Experiment) -> None:
    _until(lambda: exp.store.experiment(exp.id).driver_pid is None, "the experiment's driver to end")


@pytest.fixture
def finished() -> run.Experiment:
    """An experiment that ran to SUCCEEDED: greet (prints), then talker (stdout and stderr)."""
    exp = run.Experiment("cli-demo", metadata={"lr": 0.1, "team": "vision"})
    greet = exp.add(run.Config(taskdefs.hello, "cli"), name="greet")
    exp.add(run.Script(inline="echo out; echo err >&2"), name="talker", dependencies=[greet])
    assert exp.run() == "SUCCEEDED"
    return exp


@pytest.fixture
def running() -> Iterator[run.Experiment]:
    """A detached experiment whose two tasks (sleeper-0, sleeper-1) run for 30 s."""
    exp = run.Experiment("cli-running")
    exp.add([run.Config(taskdefs.sleep_then_print, 30) for _ in range(2)], name="sleeper")
    exp.run(detach=True)
    _until(lambda: all(t.status == "RUNNING" for t in exp.tasks), "both tasks to run")
    yield exp
    exp.cancel_all()
    _driver_ends(exp)


# ------------------------------------------------------------------------------ reading
def test_list_shows_each_experiment_with_its_title_status_and_task_count(finished: run.Experiment) -> None:
    out = ok("list", console_script=True)
    row = next(line for line in out.splitlines() if line.startswith(finished.id))
    assert row.split()[1:4] == ["cli-demo", "SUCCEEDED", "2"]


def test_list_json_gives_one_entry_per_experiment(finished: run.Experiment) -> None:
    other = run.Experiment("cli-other")
    entries = json.loads(ok("list", "--json"))
    assert [e["id"] for e in entries] == [other.id, finished.id]  # newest first
    assert entries[1]["title"] == "cli-demo" and entries[1]["status"] == "SUCCEEDED"


def test_status_shows_a_table_of_tasks_and_states(finished: run.Experiment) -> None:
    lines = ok("status", finished.id).splitlines()
    assert lines[0].startswith(f"{finished.id}: SUCCEEDED")
    assert lines[1].split()[:4] == ["TASK", "STATUS", "ATTEMPTS", "EXIT"]
    assert [line.split()[:4] for line in lines[2:]] == [
        ["greet", "SUCCEEDED", "1", "0"],
        ["talker", "SUCCEEDED", "1", "0"],
    ]


def test_status_json_gives_the_experiment_and_its_tasks(finished: run.Experiment) -> None:
    data = json.loads(ok("status", finished.id, "--json"))
    assert data["id"] == finished.id and data["status"] == "SUCCEEDED"
    assert [(t["id"], t["status"], t["attempts"], t["exit_code"]) for t in data["tasks"]] == [
        ("greet", "SUCCEEDED", 1, 0),
        ("talker", "SUCCEEDED", 1, 0),
    ]
    assert data["tasks"][1]["dependencies"] == ["greet"]


def test_an_experiment_can_be_named_by_its_title(finished: run.Experiment) -> None:
    assert json.loads(ok("status", "cli-demo", "--json"))["id"] == finished.id


def test_logs_prints_a_tasks_stdout_and_stderr(finished: run.Experiment) -> None:
    result = here("logs", finished.id, "talker")
    assert result.returncode == 0
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    assert ok("logs", finished.id, "talker", "--stream", "stdout") == "out\n"


def test_logs_follow_streams_a_running_task_until_it_ends() -> None:
    exp = run.Experiment("cli-follow")
    task_id = exp.add(
        run.Script(inline="for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done"), name="counter"
    )
    exp.run(detach=True)
    _until(lambda: _tasks(exp)[task_id].status == "RUNNING", "the task to run")
    followed_at = time.time()

    out = ok("logs", exp.id, task_id, "--follow")

    assert out.splitlines() == [f"line-{i}" for i in range(1, 6)]
    task = _tasks(exp)[task_id]
    assert task.status == "SUCCEEDED" and task.end_time.timestamp() > followed_at
    _driver_ends(exp)


def test_metadata_shows_every_key_and_value(finished: run.Experiment) -> None:
    finished.add_metadata({"accuracy": 0.93})
    assert ok("metadata", finished.id).splitlines() == ["lr: 0.1", 'team: "vision"', "accuracy: 0.93"]
    assert json.loads(ok("metadata", finished.id, "--json")) == {
        "lr": 0.1,
        "team": "vision",
        "accuracy": 0.93,
    }


def test_artifacts_shows_each_recorded_artifact(finished: run.Experiment, tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"0123456789")
    finished.add_artifact("weights", str(weights), description="final weights")

    row = ok("artifacts", finished.id).splitlines()[1]
    assert row.split()[:2] == ["weights", "10"] and row.endswith("final weights")
    data = json.loads(ok("artifacts", finished.id, "--json"))
    assert data["weights"]["size"] == 10
    assert data["weights"]["sha256"] == hashlib.sha256(b"0123456789").hexdigest()


def test_plugins_lists_the_local_plugin_with_its_hook_and_export() -> None:
    out = ok("plugins", console_script=True)
    block = out[out.index("local (runyard-local") :].splitlines()[:3]
    assert "runyard_register_executors" in block[1]
    assert block[2].split() == ["exports:", "LocalExecutor"]
    local = next(p for p in json.loads(ok("plugins", "--json")) if p["name"] == "local")
    assert local["distribution"] == "runyard-local" and local["error"] is None
    assert "runyard_register_executors" in local["hooks"] and "LocalExecutor" in local["exports"]


# ------------------------------------------------------------------------------ control
def test_cancel_cancels_one_task(running: run.Experiment) -> None:
    assert ok("cancel", running.id, "sleeper-0").strip() == "cancelled sleeper-0"
    tasks = _tasks(running)
    assert tasks["sleeper-0"].status == "CANCELLED"
    assert tasks["sleeper-1"].status == "RUNNING"


def test_cancel_all_cancels_every_task_that_has_not_ended(running: run.Experiment) -> None:
    pids = [int(t.job_id) for t in running.tasks]
    assert ok("cancel", running.id, "--all").strip() == "cancelled 2 task(s): sleeper-0, sleeper-1"
    assert running.status() == "FAILED"
    assert all(t.status == "CANCELLED" for t in running.tasks)
    for pid in pids:
        _until(lambda pid=pid: _state_letter(pid) in (None, "Z"), f"task process {pid} to end")


def test_pause_stops_a_running_task(running: run.Experiment) -> None:
    assert ok("pause", running.id, "sleeper-0").strip() == "paused sleeper-0"
    assert _tasks(running)["sleeper-0"].status == "PAUSED"
    _until(lambda: _state_letter(int(_tasks(running)["sleeper-0"].job_id)) == "T", "the process to stop")
    assert _tasks(running)["sleeper-1"].status == "RUNNING"


def test_resume_continues_a_paused_task(running: run.Experiment) -> None:
    running.pause("sleeper-0")
    pid = int(_tasks(running)["sleeper-0"].job_id)
    _until(lambda: _state_letter(pid) == "T", "the process to stop")

    assert ok("resume", running.id, "sleeper-0").strip() == "resumed sleeper-0"

    assert _tasks(running)["sleeper-0"].status == "RUNNING"
    _until(lambda: _state_letter(pid) in ("S", "R"), "the process to continue")


def test_retry_runs_a_failed_task_again_with_its_dependents(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    exp = run.Experiment("cli-retry")
    flaky = exp.add(run.Config(taskdefs.count_runs, str(runs), fail_until=2), name="flaky")
    exp.add(run.Config(taskdefs.hello), name="after", dependencies=[flaky])
    assert exp.run() == "FAILED"
    assert _tasks(exp)["after"].status == "CANCELLED"

    assert ok("retry", exp.id, "flaky", process=True).strip() == "retrying flaky, after"
    assert ok("wait", exp.id, process=True).strip() == f"{exp.id}: SUCCEEDED"  # exit code 0

    tasks = _tasks(exp)
    assert (tasks["flaky"].status, tasks["flaky"].attempts) == ("SUCCEEDED", 2)
    assert (tasks["after"].status, tasks["after"].attempts) == ("SUCCEEDED", 1)
    assert runs.read_text().splitlines() == ["run", "run"]
    _driver_ends(exp)


def test_wait_exits_1_when_the_experiment_failed() -> None:
    exp = run.Experiment("cli-failed")
    exp.add(run.Config(taskdefs.fail), name="broken")
    assert exp.run() == "FAILED"
    result = cli("wait", exp.id)
    assert result.returncode == 1
    assert result.stdout.strip() == f"{exp.id}: FAILED"


def test_takeover_gives_an_orphaned_experiment_a_new_supervisor(tmp_path: Path) -> None:
    marker = tmp_path / "done"
    exp = run.Experiment("cli-takeover")
    exp.add(run.Script(inline=f"sleep 1.5; echo done >> {shlex.quote(str(marker))}"), name="slow")
    exp.run(detach=True)
    _until(lambda: _tasks(exp)["slow"].status == "RUNNING", "the task to run")
    old = exp.store.experiment(exp.id).driver_pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    _until(lambda: _state_letter(old) in (None, "Z"), "the supervisor to die")

    assert "a new supervisor drives it" in ok("takeover", exp.id, process=True)
    record = exp.store.experiment(exp.id)
    assert record.driver_pid is None or (record.driver_pid != old and record.driver_kind == "supervisor")

    assert ok("wait", exp.id).strip() == f"{exp.id}: SUCCEEDED"
    assert marker.read_text() == "done\n"  # ran once, not relaunched
    _driver_ends(exp)


# ------------------------------------------------------------------------------ snapshots
def test_snapshot_writes_a_file_that_loads_as_a_snapshot(finished: run.Experiment, tmp_path: Path) -> None:
    path = tmp_path / "snap" / "exp.json"
    assert ok("snapshot", finished.id, "-o", path).strip() == str(path)
    snapshot = run.ExperimentSnapshot.load(str(path))
    assert snapshot.source_experiment_id == finished.id
    assert [t["id"] for t in snapshot.tasks] == ["greet", "talker"]


def test_reproduce_creates_a_new_experiment_that_is_not_launched(
    finished: run.Experiment, tmp_path: Path
) -> None:
    path = tmp_path / "exp.json"
    ok("snapshot", finished.id, "-o", path)

    new_id = ok("reproduce", path).strip()

    assert new_id != finished.id
    again = run.Experiment.from_id(new_id)
    assert again.title == "cli-demo" and again.get_metadata() == {"lr": 0.1, "team": "vision"}
    assert [(t.id, t.status, t.dependencies) for t in again.tasks] == [
        ("greet", "PENDING", []),
        ("talker", "PENDING", ["greet"]),
    ]


def test_reproduce_run_runs_the_new_experiment(finished: run.Experiment, tmp_path: Path) -> None:
    path = tmp_path / "exp.json"
    ok("snapshot", finished.id, "-o", path)

    new_id = ok("reproduce", path, "--run").splitlines()[0]

    again = run.Experiment.from_id(new_id)
    assert again.status() == "SUCCEEDED"
    assert again.get_logs("greet").stdout == "hello cli\n"


# ------------------------------------------------------------------------------ errors
def test_unknown_experiment_is_an_error() -> None:
    assert_error(cli("status", "no-such-experiment"), "no-such-experiment")


def test_unknown_task_is_an_error(finished: run.Experiment) -> None:
    assert_error(here("logs", finished.id, "no-such-task"), "no-such-task")


def test_retry_of_a_running_task_is_an_error(running: run.Experiment) -> None:
    assert_error(here("retry", running.id, "sleeper-0"), "sleeper-0", "RUNNING")
    assert _tasks(running)["sleeper-0"].status == "RUNNING"


def test_takeover_of_an_experiment_with_a_live_driver_is_an_error(running: run.Experiment) -> None:
    assert_error(here("takeover", running.id), "still driven")


def test_reproduce_from_a_missing_snapshot_file_is_an_error(tmp_path: Path) -> None:
    assert_error(here("reproduce", tmp_path / "missing.json"), "missing.json")


def test_snapshot_to_a_path_that_cannot_be_written_is_an_error(
    finished: run.Experiment, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    target = not_a_dir / "exp.json"
    assert_error(here("snapshot", finished.id, "-o", target), "cannot write the snapshot", str(target))


def test_a_state_error_names_the_task_and_its_state(finished: run.Experiment) -> None:
    result = here("cancel", finished.id, "greet")
    assert_error(result, "greet")
    assert re.search(r"ended \(SUCCEEDED\)", result.stderr)


@pytest.mark.parametrize("limit", ["-1", "0", "two"])
def test_list_limit_must_be_a_whole_number_of_1_or_more(finished: run.Experiment, limit: str) -> None:
    result = here("list", "--limit", limit)
    assert result.returncode == 2 and result.stdout == ""  # not "no experiments", not all of them
    assert result.stderr.splitlines()[-1] == (
        f"runyard list: error: argument --limit: must be a whole number of 1 or more, got {limit!r}"
    )


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1"])
def test_wait_timeout_must_be_a_finite_number_of_seconds(running: run.Experiment, timeout: str) -> None:
    result = here("wait", running.id, "--timeout", timeout)  # nan: it would never time out
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"runyard wait: error: argument --timeout: must be a number of seconds, 0 or more, got {timeout!r}"
    )


def test_takeover_of_an_experiment_never_launched_is_an_error_and_runs_nothing() -> None:
    exp = run.Experiment("cli-never-run")
    exp.add(run.Config(taskdefs.hello), name="greet")

    assert_error(here("takeover", exp.id), f"experiment {exp.id} has not been launched", ".run()")
    assert_error(here("wait", exp.id), f"experiment {exp.id} has not been launched")

    assert exp.store.experiment(exp.id).driver_pid is None
    assert [(t.status, t.attempts) for t in exp.tasks] == [("PENDING", 0)]


def test_snapshot_writes_through_a_link_and_never_over_a_pipe(
    finished: run.Experiment, tmp_path: Path
) -> None:
    target = tmp_path / "snap.json"
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)

    ok("snapshot", finished.id, "-o", link)
    assert_error(here("snapshot", finished.id, "-o", pipe), str(pipe), "not a regular file")

    assert link.is_symlink() and run.ExperimentSnapshot.load(str(link)).source_experiment_id == finished.id
    assert pipe.is_fifo()


def test_a_warning_is_one_line(tmp_path: Path) -> None:
    path = run.Experiment("cli-empty").create_snapshot().save(str(tmp_path / "empty.json"))

    result = cli("reproduce", path, "--run")

    assert result.returncode == 0, result.stderr
    new_id = result.stdout.splitlines()[0]
    assert result.stderr.splitlines() == [
        f"runyard: warning: experiment {new_id} has no tasks: nothing to run"
    ]
