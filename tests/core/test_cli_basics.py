"""The command line as a new user meets it: `runyard --version`, shell completion, global
options before or after the command, a "did you mean" for a near miss, tables fitted to the
terminal, ISO 8601 times with a zone in every --json, and read-only commands that never create
a home."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import runyard as run
from rich.cells import cell_len
from runyard import cli as runyard_cli
from runyard import cli_util
from runyard.plugins import reset_plugin_manager
from test_cli import assert_error, cli, here, ok


class Terminal(io.StringIO):
    """What a command writes to a terminal."""

    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch: pytest.MonkeyPatch, columns: int, *args: Any) -> str:
    """`runyard ARGS` in this process with its stdout on a terminal ``columns`` wide."""
    monkeypatch.setenv("COLUMNS", str(columns))
    out = Terminal()
    reset_plugin_manager()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert runyard_cli.main(list(map(str, args))) == 0
    return out.getvalue()


def is_iso_with_zone(text: str) -> bool:
    return dt.datetime.fromisoformat(text).utcoffset() is not None


@pytest.fixture
def ended(tmp_path: Path) -> run.Experiment:
    """An ended experiment (FAILED: ok succeeded, bad failed) with a tag, metadata, an artifact."""
    exp = run.Experiment("basics", tags=["nightly"], metadata={"owner": "me"})
    exp.add(run.Script(inline="echo fine; echo loss: 0.5"), name="ok")
    exp.add(run.Script(inline="echo broken >&2; exit 3"), name="bad")
    assert exp.run() == "FAILED"
    (tmp_path / "weights.bin").write_bytes(b"w" * 10)
    exp.add_artifact("weights", str(tmp_path / "weights.bin"), description="the final weights of the run")
    return exp


# ------------------------------------------------------------------------------ --version
def test_version_prints_the_installed_version() -> None:
    result = cli("--version", console_script=True)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"runyard {metadata.version('runyard')}\n",
        "",
    )


# ------------------------------------------------------------------------------ --home anywhere
def test_the_home_option_goes_before_or_after_the_command(
    ended: run.Experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = os.environ["RUNYARD_HOME"]
    other = tmp_path / "elsewhere"  # RUNYARD_HOME names a home without it: only --home finds it
    monkeypatch.setenv("RUNYARD_HOME", str(other))
    for args in (
        ["--home", home, "status", ended.id, "--json"],
        ["status", ended.id, "--json", "--home", home],
        ["status", "--home", home, ended.id, "--json"],
        ["status", ended.id, f"--home={home}", "--json"],
    ):
        result = cli(*args, console_script=True)
        assert result.returncode == 0, (args, result.stderr)
        assert json.loads(result.stdout)["id"] == ended.id
    assert ok("list", "--quiet", "--home", home).split() == [ended.id]
    assert not other.exists()


# ------------------------------------------------------------------------------ did you mean
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["stauts", "x"], "invalid choice: 'stauts' (did you mean 'status'?)"),
        (["list", "--jsno"], "unrecognized arguments: --jsno (did you mean --json?)"),
        (["logs", "x", "t", "--tial", "3"], "did you mean --tail?"),
        (["list", "--status", "runing"], "invalid choice: 'RUNING' (did you mean 'RUNNING'?)"),
        (["completion", "bsh"], "invalid choice: 'bsh' (did you mean 'bash'?)"),
    ],
)
def test_a_mistyped_command_option_or_choice_gets_a_did_you_mean(args: list[str], says: str) -> None:
    result = here(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[0].startswith("usage: runyard")
    assert says in result.stderr.splitlines()[-1]


def test_a_mistyped_title_gets_a_did_you_mean(ended: run.Experiment) -> None:
    assert_error(here("status", "basic"), "no experiment with id or title 'basic'; did you mean 'basics'?")


# ------------------------------------------------------------------------------ tables
def test_a_table_on_a_terminal_is_fitted_to_its_width_and_piped_it_is_whole(
    ended: run.Experiment, monkeypatch: pytest.MonkeyPatch
) -> None:
    for width, args in [
        (60, ["list"]), (80, ["status", ended.id]), (50, ["artifacts", ended.id]), (70, ["attempts", ended.id, "bad"])
    ]:  # fmt: skip
        text = on_terminal(monkeypatch, width, *args)
        assert all(cell_len(line) <= width for line in text.splitlines()), text
        assert "…" in text and "…" not in ok(*args)  # cut, where piped it is whole
    listed = on_terminal(monkeypatch, 200, "list").splitlines()
    assert listed[0].split() == ["ID", "STATUS", "TASKS", "CREATED", "TAGS"]  # no title beside the id
    assert listed[1].split()[:3] == [ended.id, "FAILED", "2"]
    artifacts = on_terminal(monkeypatch, 50, "artifacts", ended.id).splitlines()
    assert artifacts[1].startswith("weights  10 ") and "…" in artifacts[1]  # the path cut, not the name

    monkeypatch.delenv("COLUMNS")
    piped = ok("list").splitlines()
    assert piped[0].split() == ["ID", "TITLE", "STATUS", "TASKS", "CREATED", "TAGS"]
    assert piped[1].split() == [ended.id, "basics", "FAILED", "2", *piped[1].split()[4:6], "nightly"]
    assert "…" not in ok("artifacts", ended.id)


def test_cells_are_cut_by_display_width(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Terminal()
    monkeypatch.setenv("COLUMNS", "24")
    cli_util.table([["ID", "NOTE"], ["a-1", "训练损失很高的一次运行"], ["a-2", "short"]], out)
    lines = out.getvalue().splitlines()
    assert [cell_len(line) <= 24 for line in lines] == [True, True, True]
    assert lines[1].startswith("a-1  训练") and lines[1].endswith("…")
    assert lines[2] == "a-2  short"
    assert cli_util.cut("训练损失", 5) == "训练…" and cli_util.cut("abc", 3) == "abc"


# ------------------------------------------------------------------------------ JSON times
def test_every_json_time_is_iso_8601_with_a_zone(ended: run.Experiment) -> None:
    listed = json.loads(ok("list", "--json"))[0]
    status = json.loads(ok("status", ended.id, "--json"))
    attempts = json.loads(ok("attempts", ended.id, "bad", "--json"))
    artifacts = json.loads(ok("artifacts", ended.id, "--json"))
    events = json.loads(ok("events", ended.id, "--json"))
    metrics = json.loads(ok("metrics", ended.id, "--json"))
    times = [
        listed["created"], listed["launched"], listed["ended"], status["created"], status["launched"],
        status["ended"], *(t[k] for t in status["tasks"] for k in ("start_time", "end_time")),
        *(a[k] for a in attempts for k in ("start_time", "end_time")), artifacts["weights"]["created_at"],
        *(e["timestamp"] for e in events), metrics["tasks"]["ok"]["loss"]["last_time"],
    ]  # fmt: skip
    assert all(isinstance(t, str) and is_iso_with_zone(t) for t in times), times
    created = dt.datetime.fromisoformat(listed["created"])
    assert abs(created.timestamp() - ended.store.experiment(ended.id).created_at) < 1e-3


# ------------------------------------------------------------------------------ no home is made
READ_ONLY = [
    ["list"], ["list", "--json"], ["status", "x"], ["attempts", "x", "t"], ["logs", "x", "t"],
    ["logs", "x", "--all"], ["metadata", "x"], ["artifacts", "x"], ["metrics", "x"], ["events", "x"],
    ["dry-run", "x"], ["report", "x"], ["wait", "x"], ["gc", "--older-than", "1d"], ["cancel", "x", "--all"],
    ["delete", "x", "--yes"],
]  # fmt: skip


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(a) for a in READ_ONLY])
def test_a_command_given_a_folder_that_is_no_home_says_so_and_creates_nothing(
    args: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nonexistent"
    assert_error(here("--home", missing, *args), f"no runyard home at {missing} (--home): it does not exist")
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(here(*args, "--home", empty), f"no runyard home at {empty} (--home): it has no runyard.db")
    assert os.listdir(empty) == []


def test_no_home_through_the_console_script_either(tmp_path: Path) -> None:
    result = cli("--home", tmp_path / "nonexistent", "list", console_script=True)
    assert_error(result, "no runyard home at")
    assert not (tmp_path / "nonexistent").exists()


# ------------------------------------------------------------------------------ completion
def test_completion_prints_a_script_for_each_shell() -> None:
    for shell in ("bash", "zsh", "fish"):
        text = ok("completion", shell)
        assert text.startswith(f"# runyard completion for {shell}") and "runyard" in text
    assert "bashcompinit" in ok("completion", "zsh")


def _bash_complete(script: str, words: list[str], env: dict[str, str]) -> list[str]:
    """COMPREPLY of the bash completion for the command line ``words`` (the last being completed)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    program = f'source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _runyard; printf "%s\\n" "${{COMPREPLY[@]}}"'
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}


def test_bash_completion_completes_commands_options_values_and_experiments(
    ended: run.Experiment, tmp_path: Path, shell_env: dict[str, str]
) -> None:
    script = completion_script("bash", tmp_path)
    (tmp_path / "snapshot.json").write_text("{}")
    complete = lambda *words: _bash_complete(str(script), ["runyard", *words], shell_env)  # noqa: E731

    assert complete("st") == ["status"]
    assert set(complete("")) >= {"list", "status", "logs", "delete", "gc", "dry-run", "completion"}
    assert complete("--ver") == ["--version"]
    assert set(complete("logs", "x", "y", "--")) >= {
        "--tail",
        "--since",
        "--grep",
        "--all",
        "--stream",
        "--home",
    }
    assert complete("logs", "x", "y", "--stream", "") == ["stdout", "stderr", "both"]
    assert complete("list", "--status", "FA") == ["FAILED"]
    assert complete("completion", "") == ["bash", "zsh", "fish"]
    assert set(complete("status", "")) == {ended.id, "basics"}
    assert complete("logs", "bas") == ["basics"]
    assert complete("logs", ended.id, "") == []  # a task id: not completed
    assert complete("reproduce", f"{tmp_path}/snap") == [f"{tmp_path}/snapshot.json"]
    # the experiments of the home given on the line
    other = tmp_path / "other"
    run.Experiment("elsewhere", base_dir=str(other))
    assert complete("--home", str(other), "status", "") == sorted(
        [*ok("list", "-q", "--home", other).split(), "elsewhere"]
    )
    assert complete("status", "", "--home", str(other)) != complete("status", "")


def need(shell: str) -> None:
    """The shell, installed by the test bed (infra/start-services.sh): missing, CI fails, else skips."""
    if shutil.which(shell) is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"{shell} is not installed (./dev.sh services installs it)"
        )


def completion_script(shell: str, tmp_path: Path) -> Path:
    """``runyard completion SHELL`` written to a file, which SHELL reads without a syntax error
    (a shell that is missing fails the test in CI: ``need``)."""
    need(shell)
    script = tmp_path / f"runyard.{shell}"
    script.write_text(ok("completion", shell))
    assert subprocess.run([shell, "-n", str(script)]).returncode == 0
    return script


def test_zsh_completion_runs_the_same_functions_through_bashcompinit(
    ended: run.Experiment, tmp_path: Path, shell_env: dict[str, str]
) -> None:
    script = completion_script("zsh", tmp_path)
    # as zsh's compgen -F calls it: in sh emulation (zsh filters the words by the prefix itself)
    program = (
        f'source {script}; t() {{ emulate -L sh; setopt kshglob noshglob braceexpand; COMP_WORDS=("$@");'
        ' COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); _runyard; printf "%s\\n" "${COMPREPLY[@]}"; };'
        ' t runyard ""; echo ---; t runyard status ""; echo ---; t runyard logs x y --stream ""'
    )
    done = subprocess.run(
        ["zsh", "-f", "-c", program], capture_output=True, text=True, env=shell_env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    commands, experiments, streams = (part.split() for part in done.stdout.split("---"))
    assert {"list", "status", "dry-run", "completion"} <= set(commands)
    assert set(experiments) == {ended.id, "basics"}
    assert streams == ["stdout", "stderr", "both"]


def test_fish_completion_completes_commands_options_and_experiments(
    ended: run.Experiment, tmp_path: Path, shell_env: dict[str, str]
) -> None:
    script = completion_script("fish", tmp_path)

    def complete(line: str) -> list[str]:
        program = f"source {script}; complete -C {json.dumps(line)}"
        done = subprocess.run(
            ["fish", "-c", program], capture_output=True, text=True, env=shell_env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return [w.split("\t")[0] for w in done.stdout.splitlines()]

    assert complete("runyard stat") == ["status"]
    assert set(complete("runyard status ")) == {ended.id, "basics"}
    assert complete("runyard logs x y ") == []  # a task id: not completed
    assert set(complete("runyard logs x y --stream ")) == {"stdout", "stderr", "both"}
    assert {"--tail", "--grep", "--all"} <= set(complete("runyard logs x --"))
