"""The plugin author kit, end to end: the example third-party package in
examples/plugins/runyard-nice is built and installed into a fresh venv beside core and
runyard-local, runs an experiment there, shows up in `runyard plugins`, and passes its
own tests (written with runyard.testing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _fresh_venv import REPO, make_venv, run

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "plugins" / "runyard-nice"

TASKS = """
import json, os, sys


def report():
    print(json.dumps({"nice": os.nice(0), "cpus": sorted(os.sched_getaffinity(0)), "python": sys.executable}))
"""

MAIN = """
import json, sys
import runyard as run
import tasks

if __name__ == "__main__":
    cpu = sys.argv[1]
    with run.Experiment("through-a-third-party-plugin") as exp:
        py = exp.add(run.Config(tasks.report), executor=run.NiceExecutor(niceness=4), name="python")
        sh = exp.add(run.Script(inline="nice"), executor=run.NiceExecutor(niceness=6, cpus=cpu), name="script")
        state = exp.run()
        print(json.dumps({
            "state": str(state),
            "python": json.loads(exp.get_logs(py).stdout),
            "script": exp.get_logs(sh).stdout.strip(),
            "executors": [t.executor.describe() for t in exp.tasks],
        }))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv with core, runyard-local, the example plugin and pytest."""
    path = tmp_path_factory.mktemp("third-party") / "venv"
    return make_venv(path, "./core", "./plugins/local", "./examples/plugins/runyard-nice", "pytest")


def expected_niceness(added: int) -> int:
    return max(-20, min(19, os.nice(0) + added))


def test_an_experiment_runs_through_the_installed_example_executor(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "main.py").write_text(MAIN)
    cpu = str(min(os.sched_getaffinity(0)))

    out = run([venv / "python", "main.py", cpu], cwd=tmp_path, timeout=120).stdout

    result = json.loads(out.strip().splitlines()[-1])
    assert result["state"] == "SUCCEEDED"
    assert result["python"]["nice"] == expected_niceness(4)
    assert result["python"]["python"] == str(venv / "python")  # the venv's interpreter ran it
    assert int(result["script"]) == expected_niceness(6)
    assert result["executors"] == ["nice 4", f"nice 6 cpus {cpu}"]


def test_runyard_plugins_lists_the_example_with_its_hook_and_export(venv: Path) -> None:
    plugins = {p["name"]: p for p in json.loads(run([venv / "runyard", "plugins", "--json"]).stdout)}

    assert plugins["nice"] == {
        "name": "nice",
        "distribution": "runyard-nice",
        "version": "0.1.0",
        "hooks": ["runyard_register_executors"],
        "exports": ["NiceExecutor"],
        "error": None,
    }
    assert sorted(plugins) == ["local", "nice", "runyard.builtin"]  # nothing else of the workspace


def test_the_example_passes_its_own_tests_in_the_venv(venv: Path) -> None:
    done = run([venv / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=EXAMPLE)
    assert " passed" in done.stdout.splitlines()[-1]
