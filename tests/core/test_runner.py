"""The in-job runners (runner.py for Python tasks, runner.sh for Script tasks) write the
same files, which every backend reads: raw logs, a timestamped journal, a heartbeat, and
result.json last."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import taskdefs
from runyard import serialization
from runyard.config import Config, Script
from runyard.jobfiles import runner_path

RUNNERS = ["python", "bash"]


def write_task(task_dir: Path, task: object, main_path: str | None = None) -> None:
    task_dir.mkdir(parents=True, exist_ok=True)
    spec = {"task": serialization.encode(task), "main_path": main_path, "python_path": []}
    (task_dir / "task.json").write_text(json.dumps(spec))


def start(
    task_dir: Path, runner: str, script: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run ``script`` (bash) through the given runner, as attempt 1."""
    write_task(task_dir, Script(inline=script))
    full_env = {**os.environ, **(env or {})}
    if runner == "bash":
        argv = ["bash", runner_path("runner.sh"), str(task_dir), "1", "bash", "-c", script, "runyard-script"]
    else:
        argv = [sys.executable, runner_path("runner.py"), str(task_dir), "1"]
    return subprocess.Popen(argv, env=full_env, start_new_session=True)


def run(task_dir: Path, runner: str, script: str, env: dict[str, str] | None = None) -> int:
    return start(task_dir, runner, script, env).wait(timeout=60)


def journal(attempt: Path) -> list[tuple[float, str, str]]:
    out = []
    for line in (attempt / "journal.log").read_text().splitlines():
        ts, code, text = line.split(" ", 2) if line.count(" ") >= 2 else (*line.split(" ", 1), "")
        out.append((float(ts), code, text))
    return out


@pytest.mark.parametrize("runner", RUNNERS)
def test_raw_logs_keep_the_output_byte_for_byte(tmp_path: Path, runner: str) -> None:
    run(tmp_path / "t", runner, "echo one; echo two >&2; printf 'no newline'")
    attempt = tmp_path / "t" / "attempt-1"
    assert (attempt / "stdout.log").read_bytes() == b"one\nno newline"
    assert (attempt / "stderr.log").read_bytes() == b"two\n"


@pytest.mark.parametrize("runner", RUNNERS)
def test_journal_has_one_timestamped_line_per_output_line(tmp_path: Path, runner: str) -> None:
    before = time.time()
    run(tmp_path / "t", runner, "echo a; sleep 0.2; echo b >&2; sleep 0.2; printf c")
    entries = journal(tmp_path / "t" / "attempt-1")
    assert [(code, text) for _, code, text in entries] == [("o", "a"), ("e", "b"), ("o", "c")]
    stamps = [ts for ts, _, _ in entries]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] - stamps[0] >= 0.3


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("code", [0, 3])
def test_result_records_the_exit_code_and_times(tmp_path: Path, runner: str, code: int) -> None:
    assert run(tmp_path / "t", runner, f"exit {code}") == code
    attempt = tmp_path / "t" / "attempt-1"
    result = json.loads((attempt / "result.json").read_text())
    assert result["exit_code"] == code
    assert result["start"] <= result["end"]
    assert not [p.name for p in attempt.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_command_killed_by_a_signal_is_recorded_with_it(tmp_path: Path, runner: str) -> None:
    run(tmp_path / "t", runner, "kill -9 $$")
    result = json.loads((tmp_path / "t" / "attempt-1" / "result.json").read_text())
    assert result["exit_code"] == 128 + 9
    assert "signal 9" in result["error"]


@pytest.mark.parametrize("runner", RUNNERS)
def test_heartbeat_is_refreshed_while_the_task_is_quiet(tmp_path: Path, runner: str) -> None:
    proc = start(tmp_path / "t", runner, "sleep 3.5", env={"RUNYARD_HEARTBEAT_INTERVAL": "1"})
    beat = tmp_path / "t" / "attempt-1" / "heartbeat"
    seen = set()
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        if beat.exists():
            seen.add(beat.read_text().strip())
        time.sleep(0.1)
    proc.wait(timeout=10)
    assert len({s for s in seen if s}) >= 3  # at start, then about every second


@pytest.mark.parametrize("runner", RUNNERS)
def test_no_heartbeat_when_disabled(tmp_path: Path, runner: str) -> None:
    run(tmp_path / "t", runner, "echo hi", env={"RUNYARD_HEARTBEAT_INTERVAL": "0"})
    assert not (tmp_path / "t" / "attempt-1" / "heartbeat").exists()


def run_python(task_dir: Path, task: object, main_path: str | None = None) -> int:
    write_task(task_dir, task, main_path)
    proc = subprocess.run([sys.executable, runner_path("runner.py"), str(task_dir), "1"], timeout=60)
    return proc.returncode


def test_python_exception_is_a_failure_with_its_traceback(tmp_path: Path) -> None:
    assert run_python(tmp_path / "t", Config(taskdefs.fail, message="kaput")) == 1
    attempt = tmp_path / "t" / "attempt-1"
    assert "Traceback" in (attempt / "stderr.log").read_text()
    assert "RuntimeError: kaput" in (attempt / "stderr.log").read_text()
    result = json.loads((attempt / "result.json").read_text())
    assert result["exit_code"] == 1 and result["error"] == "RuntimeError: kaput"


def test_python_sys_exit_code_is_the_exit_code(tmp_path: Path) -> None:
    assert run_python(tmp_path / "t", Config(taskdefs.exit_with, 7)) == 7


def test_output_of_processes_the_task_starts_is_captured(tmp_path: Path) -> None:
    script = Script(inline="echo from-child; echo child-err >&2", entrypoint="bash")
    assert run_python(tmp_path / "t", script) == 0
    attempt = tmp_path / "t" / "attempt-1"
    assert (attempt / "stdout.log").read_text() == "from-child\n"
    assert (attempt / "stderr.log").read_text() == "child-err\n"


def test_sigterm_lets_the_python_task_run_its_finally_blocks(tmp_path: Path) -> None:
    marker = tmp_path / "finally-ran"
    module = tmp_path / "mod" / "sigterm_task.py"
    module.parent.mkdir()
    module.write_text(
        "import time\n"
        "def work(marker):\n"
        "    try:\n"
        "        print('started', flush=True)\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        "        open(marker, 'w').write('yes')\n"
    )
    task_dir = tmp_path / "t"
    task_dir.mkdir()
    spec = {
        "task": {
            "__runyard__": "config",
            "target": "sigterm_task:work",
            "args": [],
            "kwargs": {"marker": str(marker)},
        },
        "main_path": None,
        "python_path": [str(module.parent)],
    }
    (task_dir / "task.json").write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, runner_path("runner.py"), str(task_dir), "1"])
    stdout = task_dir / "attempt-1" / "stdout.log"
    deadline = time.monotonic() + 20
    while not (stdout.exists() and "started" in stdout.read_text()):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 143
    assert marker.read_text() == "yes"
    result = json.loads((task_dir / "attempt-1" / "result.json").read_text())
    assert result["exit_code"] == 143 and "SIGTERM" in result["error"]


def test_targets_of_the_launching_script_load_without_running_its_main_block(tmp_path: Path) -> None:
    script = tmp_path / "launcher.py"
    script.write_text(
        "def train():\n"
        "    print('trained in', __name__)\n"
        "if __name__ == '__main__':\n"
        "    print('MAIN BLOCK RAN')\n"
    )
    task_dir = tmp_path / "t"
    task_dir.mkdir()
    spec = {
        "task": {"__runyard__": "config", "target": "__main__:train", "args": [], "kwargs": {}},
        "main_path": str(script),
        "python_path": [],
    }
    (task_dir / "task.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, runner_path("runner.py"), str(task_dir), "1"], timeout=60, check=True)
    assert (task_dir / "attempt-1" / "stdout.log").read_text() == "trained in __mp_main__\n"
