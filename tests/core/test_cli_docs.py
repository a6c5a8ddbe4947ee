"""docs/cli.md stays true: every transcript in it (a fenced block whose first line starts with
``$ ``) is run, in the order of the page, against a home prepared with the experiments it
names, and what each command prints must be what the page shows after its output is
normalised: experiment ids, times, process ids, versions, the working folder and the home.
A line ``...`` in the page stands for any lines (output that varies, or is long).

Plain commands run in this process, as on a terminal of 250 columns (stdout and stderr
together, as a terminal shows them); those with shell syntax (a pipe, ``&&``, ``2>&1``) run
in bash, with the ``runyard`` console script."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import metrictasks
import pytest
import runyard as run
from helpers import until
from runyard import cli as runyard_cli
from runyard.plugins import reset_plugin_manager
from runyard.registries import BLOCK_ENV
from runyard.store import pid_alive

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / "docs" / "cli.md"
DOC_CWD = "/tmp/clidemo"  # the working folder, as the page shows it
DOC_HOME = "~/.runyard"  # the home, as the page shows it
COLUMNS = "250"
# the plugins the page's `runyard plugins` shows are runyard-local's and core's own
BLOCKED = "docker,ray,slurm,mixed-precision"


@dataclass
class Transcript:
    line: int  # in the page
    command: str  # after the `$ `
    output: list[str]


def transcripts(text: str) -> list[Transcript]:
    """The commands of every transcript block, each with the lines it shows as output."""
    found = []
    for block in re.finditer(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        lines = block.group(1).splitlines()
        if not lines or not lines[0].startswith("$ "):
            continue
        first = text.count("\n", 0, block.start(1)) + 1
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                found.append(Transcript(first + i, line[2:], []))
            else:
                found[-1].output.append(line)
    return found


def normalise(lines: list[str], cwd: str, home: str) -> list[str]:
    """What may differ from one run to the next, replaced by a name for it; runs of spaces as
    one (a column's width follows its widest cell)."""
    out = []
    for line in lines:
        line = line.replace(home, DOC_HOME).replace(cwd, DOC_CWD)
        line = re.sub(r"\b\d{8}-\d{6}-\d{6}_", "ID_", line)
        line = re.sub(r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)?", "TIME", line)
        line = re.sub(r"\b\d{2}:\d{2}:\d{2}\b", "TIME", line)
        line = re.sub(r"\b\d+\.\d+\.\d+\b", "VERSION", line)
        line = re.sub(r"(?<![\w.])\d{3,}(?![\w.])", "N", line)  # process ids, sizes
        out.append(" ".join(line.split()))
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line for line, where ``...`` matches any lines (none too)."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_command(command: str) -> str:
    """What the command prints, stdout and stderr as one."""
    argv = shlex.split(command)
    if argv[0] == "runyard" and not any(w in ("|", "&&", ";") or ">" in w for w in argv):
        out = _Terminal()
        reset_plugin_manager()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                runyard_cli.main(argv[1:])
            except SystemExit:
                pass
        return out.getvalue()
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    done = subprocess.run(
        ["bash", "-c", command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    return done.stdout


# ------------------------------------------------------------------------------ the prepared home
DEMO_SCRIPT = "#!/bin/sh\necho this is the demo script\n"
LONG = "echo epoch 1 loss 2.31; echo epoch 2 loss 1.87; sleep 600"


def prepare(cwd: Path) -> None:
    """The experiments the page names: cli-demo (FAILED: greet, boom, after), lr-sweep
    (SUCCEEDED, lr-0.5 on its second attempt), llama3-sweep (RUNNING: train-0..2, detached)
    and scratch (SUCCEEDED); orphan-demo comes later (``orphan``)."""
    (cwd / "demo.sh").write_text(DEMO_SCRIPT)
    demo = run.Experiment("cli-demo", tags=["demo"], metadata={"owner": "me"})
    demo.add(run.Script(inline="echo hello docs"), name="greet")
    boom = demo.add(run.Script(inline="echo working; sleep 0.2; echo boom >&2; exit 1"), name="boom")
    demo.add(run.Script(inline="echo after"), name="after", dependencies=[boom])
    assert demo.run(sequential=True) == "FAILED"
    demo.add_artifact("script", "demo.sh", description="the script")

    sweep = run.Experiment("lr-sweep", max_retries=1)
    for lr in (0.1, 0.5, 0.9):
        sweep.add(run.Partial(metrictasks.train, steps=3, lr=lr, fail_first=lr == 0.5), name=f"lr-{lr}")
    assert sweep.run() == "SUCCEEDED"

    llama = run.Experiment("llama3-sweep", tags=["llm"])
    ids = llama.add([run.Script(inline=LONG) for _ in range(3)], name="train")
    llama.run(detach=True)
    until(
        lambda: (
            all(t.status == "RUNNING" for t in llama.tasks)
            and all(llama.get_logs(t).stdout.count("\n") == 2 for t in ids)
        ),
        "llama3-sweep's tasks to run and print their two lines",
    )

    scratch = run.Experiment("scratch")
    scratch.add(run.Script(inline="echo scratch"), name="try")
    assert scratch.run() == "SUCCEEDED"


def orphan() -> None:
    """orphan-demo: detached, its supervisor killed while its task runs (for `takeover`)."""
    exp = run.Experiment("orphan-demo")
    exp.add(run.Script(inline="sleep 3; echo done"), name="slow")
    exp.run(detach=True)
    until(lambda: exp.tasks[0].status == "RUNNING", "orphan-demo's task to run")
    pid = exp.store.experiment(exp.id).driver_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    until(lambda: not pid_alive(pid), "orphan-demo's supervisor to die")


BEFORE: dict[str, Callable[[], None]] = {"runyard status orphan-demo": orphan}


# ------------------------------------------------------------------------------ the tests
def test_transcripts_are_found_with_their_output() -> None:
    text = "```\n$ runyard a\none\n\n$ runyard b\n```\n```\nrunyard [--home HOME]\n```\n"
    assert transcripts(text) == [Transcript(2, "runyard a", ["one", ""]), Transcript(5, "runyard b", [])]
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"]) and matches(["a", "..."], ["a"])
    assert not matches(["a", "...", "d"], ["a", "b"])
    assert normalise(["20261127-155756-914440_x  12345  2026-11-27 15:57:57 /h/a"], "/c", "/h") == [
        "ID_x N TIME ~/.runyard/a"
    ]


def test_every_command_has_a_transcript_in_the_reference() -> None:
    shown = {
        t.command.split()[1] for t in transcripts(CLI_DOC.read_text()) if t.command.startswith("runyard ")
    }
    commands = set(runyard_cli._subcommands(runyard_cli.parser()))
    assert commands <= shown | {"--home", "--version"}, f"no transcript of: {sorted(commands - shown)}"


@pytest.mark.slow
def test_every_transcript_in_the_cli_reference_prints_what_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runyard_home: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", COLUMNS)
    monkeypatch.setenv(BLOCK_ENV, BLOCKED)
    reset_plugin_manager()
    prepare(tmp_path)
    failures = []
    for t in transcripts(CLI_DOC.read_text()):
        if t.command in BEFORE:
            BEFORE[t.command]()
        printed = run_command(t.command).splitlines()
        want = normalise(t.output, str(tmp_path), runyard_home)
        got = normalise(printed, str(tmp_path), runyard_home)
        while want and not want[-1]:
            want.pop()
        if not matches(want, got):
            failures.append(
                f"docs/cli.md line {t.line}: $ {t.command}\n--- the page shows (normalised):\n"
                + "\n".join(want)
                + "\n--- it printed:\n"
                + "\n".join(printed)
            )
    assert not failures, f"{len(failures)} transcript(s) differ:\n\n" + "\n\n".join(failures)
