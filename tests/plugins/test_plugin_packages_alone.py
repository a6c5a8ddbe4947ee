"""Each plugin package of this repository installs and passes its own tests
(tests/plugins/<folder>/) in a fresh venv that holds only core, that plugin and pytest."""

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


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("folder", PLUGINS)
def test_a_plugin_package_passes_its_own_tests_with_only_core_beside_it(folder: str, tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv", "./core", f"./plugins/{folder}", "pytest", "pytest-timeout")

    installed = json.loads(run([venv / "runyard", "plugins", "--json"]).stdout)
    assert {p["distribution"] for p in installed} == {"runyard", distribution(folder)}
    assert all(p["error"] is None for p in installed)

    done = run(
        [venv / "python", "-m", "pytest", f"tests/plugins/{folder}", "-q", "-p", "no:cacheprovider"],
        timeout=1700,
    )
    assert " passed" in done.stdout.splitlines()[-1]
