"""What an attached run prints: plain lines into a pipe, a live view on a terminal (more of it
in test_live_view.py), and task output prefixed by task name with tail_logs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from _terminal import Terminal, terminal_env

SCRIPT = """\
import runyard as run
import taskdefs

exp = run.Experiment("progress")
first = exp.add(run.Config(taskdefs.sleep_then_print, {seconds}, "first done"), name="first")
exp.add(run.Script(inline="echo one; sleep 0.2; echo two"), name="talker", dependencies=[first])
exp.run(tail_logs={tail_logs})
"""

ANSI = re.compile(r"\x1b\[")
ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[^\[])")
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


def _run_on_terminal(tmp_path: Path, **env: str) -> tuple[list[str], str]:
    """Run the script on a pseudo-terminal (120 x 40); returns the final screen and all it wrote
    (escape sequences cut out: every text it showed at some time)."""
    script = _write_script(tmp_path, seconds=1.5)
    with Terminal(
        [sys.executable, str(script)], columns=120, lines=40, cwd=tmp_path, env=terminal_env(**env)
    ) as term:
        assert term.wait() == 0, "\n".join(term.screen)
        return term.screen, ESCAPES.sub("", term.output.decode())


def test_output_to_a_pipe_is_one_plain_line_per_state_change(tmp_path: Path) -> None:
    out = _run_in_pipe(tmp_path)
    assert not ANSI.search(out)
    changes = [m.groups() for m in map(PLAIN_LINE.match, out.splitlines()) if m]
    assert [c for c in changes if c[0] == "first"] == [("first", "RUNNING"), ("first", "SUCCEEDED")]
    assert [c for c in changes if c[0] == "talker"] == [("talker", "RUNNING"), ("talker", "SUCCEEDED")]
    assert changes.index(("first", "SUCCEEDED")) < changes.index(("talker", "RUNNING"))
    assert re.search(r"^experiment \S+_progress: SUCCEEDED$", out, re.M)


def test_output_to_a_terminal_is_a_live_view(tmp_path: Path) -> None:
    screen, shown = _run_on_terminal(tmp_path)
    assert re.search(r"first +RUNNING +#1", shown)  # (once, while it ran)
    header, first, talker, end = screen[:4]
    assert re.fullmatch(r"\S+_progress  2/2 ended · 2 SUCCEEDED · \d+:\d\d", header)
    assert re.fullmatch(r"first +SUCCEEDED +#1 +\d:\d\d +first done", first)
    assert re.fullmatch(r"talker +SUCCEEDED +#1 +\d:\d\d +two", talker)
    assert re.fullmatch(r"experiment \S+_progress: SUCCEEDED", end)


def test_runyard_plain_gives_plain_lines_on_a_terminal_too(tmp_path: Path) -> None:
    screen, shown = _run_on_terminal(tmp_path, RUNYARD_PLAIN="1")
    changes = [m.groups() for m in map(PLAIN_LINE.match, screen) if m]
    assert changes == [
        ("first", "RUNNING"),
        ("first", "SUCCEEDED"),
        ("talker", "RUNNING"),
        ("talker", "SUCCEEDED"),
    ]
    assert "ended" not in shown  # no live view


def test_tail_logs_prefixes_each_task_output_line_with_its_task_name(tmp_path: Path) -> None:
    out = _run_in_pipe(tmp_path, tail_logs=True)
    lines = out.splitlines()
    assert "first: first done" in lines
    assert "talker: one" in lines and "talker: two" in lines
    assert lines.index("talker: one") < lines.index("talker: two")
    for text in ("first done", "one", "two"):  # never shown without its task name
        assert text not in lines
