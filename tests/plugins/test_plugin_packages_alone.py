"""Each plugin package of this repository installs, and passes its smoke tests (those of
tests/plugins/<folder>/ marked ``alone``), in a fresh venv that holds only core, that plugin
and pytest. The install proves the packaging (what the plugin declares is all it needs); the
smoke tests prove that the plugin works there. The rest of its tests run in the main suite."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _fresh_venv import REPO, make_venv, run

pytestmark = pytest.mark.slow

PLUGINS = sorted(p.parent.name for p in (REPO / "plugins").glob("*/pyproject.toml"))


def distribution(folder: str) -> str:
    text = (REPO / "plugins" / folder / "pyproject.toml").read_text()
    match = re.search(r'^name = "([^"]+)"', text, flags=re.M)
    assert match, f"plugins/{folder}/pyproject.toml has no name"
    return match.group(1)


def test_the_plugin_packages_are_found() -> None:
    assert {"local", "mixed_precision"} <= set(PLUGINS)


@pytest.mark.parametrize("folder", PLUGINS)
def test_every_plugin_package_has_its_own_tests(folder: str) -> None:
    assert list((REPO / "tests" / "plugins" / folder).glob("test_*.py")), (
        f"no tests/plugins/{folder}/test_*.py"
    )


# The services a plugin's smoke tests use: the test is marked (and grouped) as theirs are.
SERVICES = {"slurm": pytest.mark.slurm, "docker": pytest.mark.docker, "ray": pytest.mark.ray}
# What runs in the venv: the tests marked `alone`; for local, until its test files carry the
# marker, its executor tests (tests/plugins/local is being reworked, test_local_faults.py
# included, which is about faults, not packaging).
SMOKE = {"local": ["tests/plugins/local/test_local_executor.py"]}


def smoke_tests(folder: str) -> list[str]:
    return SMOKE.get(folder, [f"tests/plugins/{folder}", "-m", "alone"])


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "folder", [pytest.param(f, marks=[SERVICES[f]] if f in SERVICES else []) for f in PLUGINS]
)
def test_a_plugin_package_passes_its_smoke_tests_with_only_core_beside_it(
    folder: str, tmp_path: Path
) -> None:
    venv = make_venv(tmp_path / "venv", "./core", f"./plugins/{folder}", "pytest", "pytest-timeout")

    installed = json.loads(run([venv / "runyard", "plugins", "--json"]).stdout)
    assert {p["distribution"] for p in installed} == {"runyard", distribution(folder)}
    assert all(p["error"] is None for p in installed)

    done = run([venv / "python", "-m", "pytest", *smoke_tests(folder), "-q", "-p", "no:cacheprovider"])
    summary = done.stdout.splitlines()[-1]
    passed = re.match(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 3, summary  # the smoke tests ran, and all passed
