"""What an attached run prints: plain lines into a pipe, a live table on a terminal, and
task output prefixed by task name with tail_logs."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

SCRIPT = """\
import runyard as run
import taskdefs

exp = run.Experiment("progress")
first = exp.add(run.Config(taskdefs.sleep_then_print, {seconds}, "first done"), name="first")
exp.add(run.Script(inline="echo one; sleep 0.2; echo two"), name="talker", dependencies=[first])
exp.run(tail_logs={tail_logs})
"""

ANSI = re.compile(r"\x1b\[")
PLAIN_LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+) +([A-Z]+)\b")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RUNYARD_PLAIN"}
    env.update(extra)
    return env


def _write_script(tmp_path: Path, *, seconds: float = 0.3, tail_logs: bool = False) -> Path:
    script = tmp_path / "attached.py"
    script.write_text(SCRIPT.format(seconds=seconds, tail_logs=tail_logs))
    return script


def _run_in_pipe(tmp_path: Path, *, tail_logs: bool = False) -> str:
    script = _write_script(tmp_path, tail_logs=tail_logs)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=_env(TERM="xterm"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _run_on_terminal(tmp_path: Path) -> str:
    """Run the script with a pseudo-terminal as its stdout/stderr; returns all it wrote."""
    script = _write_script(tmp_path, seconds=1.5)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
        cwd=tmp_path, env=_env(TERM="xterm", COLUMNS="120", LINES="40"),
    )  # fmt: skip
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                raise AssertionError("the attached run wrote nothing for 60s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return b"".join(chunks).decode(errors="replace")


def test_output_to_a_pipe_is_one_plain_line_per_state_change(tmp_path: Path) -> None:
    out = _run_in_pipe(tmp_path)
    assert not ANSI.search(out)
    changes = [m.groups() for m in map(PLAIN_LINE.match, out.splitlines()) if m]
    assert [c for c in changes if c[0] == "first"] == [("first", "RUNNING"), ("first", "SUCCEEDED")]
    assert [c for c in changes if c[0] == "talker"] == [("talker", "RUNNING"), ("talker", "SUCCEEDED")]
    assert changes.index(("first", "SUCCEEDED")) < changes.index(("talker", "RUNNING"))
    assert re.search(r"^experiment \S+_progress: SUCCEEDED$", out, re.M)


def test_output_to_a_terminal_is_a_live_table(tmp_path: Path) -> None:
    out = _run_on_terminal(tmp_path)
    assert re.search(r"\x1b\[\d+F", out), "no cursor movement: the table is not redrawn in place"
    screen = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out)  # the text, without colors and movements
    assert re.search(r"first +RUNNING", screen)
    assert re.search(r"first +SUCCEEDED", screen)
    assert re.search(r"talker +SUCCEEDED", screen)
    assert re.search(r"\d/2 ended", screen)
    assert "experiment " in screen and ": SUCCEEDED" in screen


def test_tail_logs_prefixes_each_task_output_line_with_its_task_name(tmp_path: Path) -> None:
    out = _run_in_pipe(tmp_path, tail_logs=True)
    lines = out.splitlines()
    assert "first: first done" in lines
    assert "talker: one" in lines and "talker: two" in lines
    assert lines.index("talker: one") < lines.index("talker: two")
    for text in ("first done", "one", "two"):  # never shown without its task name
        assert text not in lines
