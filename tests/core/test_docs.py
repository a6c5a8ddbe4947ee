"""The docs stay true to the code: every CLI command and option, the plugin guide's names
and its runnable example, the README's set-up commands and the CI entry point."""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import runyard as run
import taskdefs
from runyard import cli, jobfiles, plugins, testing
from runyard.testing import registered_plugin

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / "docs" / "cli.md"
PLUGIN_DOC = ROOT / "docs" / "plugins.md"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def section(text: str, heading: str) -> str:
    """The text under the first heading line containing ``heading``, up to the next heading."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("#") and heading in line]
    if not starts:
        return ""
    body = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("#"):
            break
        body.append(line)
    return "\n".join(body)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


# ------------------------------------------------------------------------------ the CLI reference
COMMANDS = sorted(subcommands())


def test_the_cli_has_commands() -> None:
    assert {"list", "status", "logs", "plugins"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_cli_command_has_a_section_in_the_reference(command: str) -> None:
    assert section(CLI_DOC.read_text(), f"`runyard {command}`").strip(), (
        f"docs/cli.md: no `runyard {command}`"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_cli_argument_and_option_is_documented_in_its_section(command: str) -> None:
    body = section(CLI_DOC.read_text(), f"`runyard {command}`")
    for action in subcommands()[command]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            for option in action.option_strings:
                assert option in body, f"docs/cli.md, `runyard {command}`: {option} is not documented"
        else:
            assert action.dest.upper() in body, f"docs/cli.md, `runyard {command}`: {action.dest} missing"


def test_the_global_home_option_is_documented() -> None:
    assert "--home" in CLI_DOC.read_text()


def test_the_cli_reference_documents_no_command_that_does_not_exist() -> None:
    documented = set(re.findall(r"^#+ `runyard ([\w-]+)`", CLI_DOC.read_text(), flags=re.M))
    assert documented == set(COMMANDS)


def test_the_cli_reference_states_the_exit_codes() -> None:
    body = section(CLI_DOC.read_text(), "Exit codes")
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 130 |"):
        assert code in body


# ------------------------------------------------------------------------------ the plugin guide
@pytest.mark.parametrize(
    "name",
    [
        plugins.PLUGIN_GROUP,
        plugins.EXPORT_GROUP,
        plugins.DISABLE_ENV,
        plugins.BLOCK_ENV,
        "runyard_home",
        "runyard_plugins",
        testing.registered_plugin.__name__,
        jobfiles.STDOUT,
        jobfiles.STDERR,
        jobfiles.JOURNAL,
        jobfiles.HEARTBEAT,
        jobfiles.RESULT,
        jobfiles.TASK,
    ],
)
def test_the_plugin_guide_names_what_the_code_uses(name: str) -> None:
    code_spans = re.findall(r"`([^`\n]+)`", PLUGIN_DOC.read_text())
    assert any(re.search(rf"(^|\W){re.escape(name)}(\W|$)", span) for span in code_spans)


def test_the_plugin_guide_fixtures_exist_in_runyard_testing() -> None:
    assert callable(testing.runyard_home)
    assert callable(testing.runyard_plugins)


def test_the_plugin_guide_pyproject_example_declares_both_groups_in_four_lines() -> None:
    blocks = re.findall(r"^```toml\n(.*?)^```", PLUGIN_DOC.read_text(), flags=re.S | re.M)
    assert blocks
    lines = blocks[0].strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == f'[project.entry-points."{plugins.PLUGIN_GROUP}"]'
    assert lines[2] == f'[project.entry-points."{plugins.EXPORT_GROUP}"]'


def test_every_python_example_in_the_plugin_guide_parses() -> None:
    blocks = python_blocks(PLUGIN_DOC.read_text())
    assert len(blocks) >= 4
    for block in blocks:
        ast.parse(block)


@pytest.fixture
def guide_example() -> Iterator[types.ModuleType]:
    """The plugin guide's complete executor plugin, loaded as a module."""
    (source,) = [
        b for b in python_blocks(PLUGIN_DOC.read_text()) if b.startswith("# runyard_subprocess/plugin.py")
    ]
    module = types.ModuleType("runyard_guide_example")
    sys.modules[module.__name__] = module  # attrs and typing resolve names through it
    try:
        exec(compile(source, str(PLUGIN_DOC), "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[module.__name__]


def test_the_plugin_guide_executor_example_runs_an_experiment(
    guide_example: types.ModuleType, runyard_plugins: plugins.Plugins
) -> None:
    with registered_plugin(guide_example, name="guide-example"):
        exp = run.Experiment("guide-example")
        ok = exp.add(run.Config(taskdefs.hello, name="guide"), executor=guide_example.SubprocessExecutor())
        script = exp.add(run.Script(inline="echo from a script"), executor=guide_example.SubprocessExecutor())
        bad = exp.add(run.Config(taskdefs.exit_with, 5), executor=guide_example.SubprocessExecutor())

        assert exp.run() == "FAILED"

        states = {t.id: (t.status, t.exit_code) for t in exp.tasks}
        assert states == {ok: ("SUCCEEDED", 0), script: ("SUCCEEDED", 0), bad: ("FAILED", 5)}
        assert exp.get_logs(ok).stdout == "hello guide\n"
        assert exp.get_logs(script).stdout == "from a script\n"


def test_the_plugin_guide_executor_example_cancels_a_running_task(
    guide_example: types.ModuleType, runyard_plugins: plugins.Plugins
) -> None:
    with registered_plugin(guide_example, name="guide-example"):
        exp = run.Experiment("guide-example-cancel")
        task_id = exp.add(
            run.Config(taskdefs.sleep_then_print, 60), executor=guide_example.SubprocessExecutor()
        )
        driver = threading.Thread(target=exp.run)
        driver.start()
        try:
            assert wait_for(lambda: exp.tasks[0].status == "RUNNING")
            pid = int(exp.tasks[0].job_id or 0)
            exp.cancel(task_id)
        finally:
            driver.join(timeout=30)

        assert exp.tasks[0].status == "CANCELLED"
        assert wait_for(lambda: reaped(pid))  # the task's process ended


def reaped(pid: int) -> bool:
    """Whether our child ``pid`` has ended; reaps it."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # the driver's poll reaped it already
        return True


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ------------------------------------------------------------------------------ README and CI
@pytest.mark.parametrize("command", ["./dev.sh demo", "./dev.sh test"])
def test_the_readme_gives_the_two_setup_commands(command: str) -> None:
    assert command in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line.strip() for line in script if line.strip() and not line.lstrip().startswith("#")]
    assert any(re.match(r"^(exec )?\./dev\.sh test\b", line) for line in commands)
