"""The packaging metadata of every package of this repository (core/ and plugins/*/), read
from their pyproject.toml files and from what the workspace installed: one version for all
(core's ``runyard.__version__``), plugins bound to that minor release of core, core's
extras naming every plugin, the Apache-2.0 LICENSE in every package, the index page's
metadata (authors, classifiers, URLs, keywords), READMEs fit for a package index (no
relative links, runnable examples), and no pytest plugin loaded by merely installing runyard.
tests/plugins/test_wheels.py proves the same on built wheels in a fresh venv."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import runyard

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "core"
PLUGINS = sorted(p.parent for p in (REPO / "plugins").glob("*/pyproject.toml"))
FOLDERS = [CORE, *PLUGINS]
VERSION_FILE = CORE / "src" / "runyard" / "__init__.py"
URL = "https://github.com/runyard/runyard"


def project(folder: Path) -> dict[str, Any]:
    return tomllib.loads((folder / "pyproject.toml").read_text())


def name(folder: Path) -> str:
    return str(project(folder)["project"]["name"])


def ids(folders: list[Path]) -> list[str]:
    return [str(f.relative_to(REPO)) for f in folders]


def minor_range(version: str) -> str:
    """`>=0.2,<0.3` for 0.2.x: the bound a plugin (and core's extras) put on the others."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return f">={major}.{minor},<{major}.{minor + 1}"


def test_the_version_is_written_once_in_core() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", runyard.__version__)
    assert re.findall(r'^__version__ = "([^"]+)"$', VERSION_FILE.read_text(), flags=re.M) == [
        runyard.__version__
    ]


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_every_package_takes_its_version_from_core(folder: Path) -> None:
    data = project(folder)
    assert "version" not in data["project"], "the version is dynamic: core/src/runyard/__init__.py"
    assert "version" in data["project"]["dynamic"]
    assert (folder / data["tool"]["hatch"]["version"]["path"]).resolve() == VERSION_FILE
    # and uv reinstalls the editable package when that file changes
    assert {"file": str(Path(data["tool"]["hatch"]["version"]["path"]))} in data["tool"]["uv"]["cache-keys"]
    # hatchling 1.27: license-files as globs; a wheel built from the sdist takes the version from PKG-INFO
    assert data["build-system"]["requires"] == ["hatchling>=1.27"]


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_every_installed_package_has_the_version_of_core(folder: Path) -> None:
    assert importlib.metadata.version(name(folder)) == runyard.__version__


@pytest.mark.parametrize("folder", PLUGINS, ids=ids(PLUGINS))
def test_every_plugin_depends_on_this_minor_release_of_core(folder: Path) -> None:
    deps = project(folder)["project"]["dependencies"]
    on_core = [d for d in deps if re.match(r"runyard\b(?!-)", d)]
    assert on_core == [f"runyard{minor_range(runyard.__version__)}"]


def test_core_has_an_extra_for_every_plugin_and_one_for_all() -> None:
    extras = project(CORE)["project"]["optional-dependencies"]
    bound = minor_range(runyard.__version__)
    every = sorted(f"{name(p)}{bound}" for p in PLUGINS)
    assert sorted(extras["all"]) == every
    for plugin in PLUGINS:
        extra = name(plugin).removeprefix("runyard-")
        assert extras[extra] == [f"{name(plugin)}{bound}"], extra
    assert {"local", "docker", "slurm", "ray", "mixed-precision", "all"} == set(extras)


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_every_package_ships_the_apache_license(folder: Path) -> None:
    meta = project(folder)["project"]
    assert meta["license"] == "Apache-2.0"
    assert meta["license-files"] == ["LICENSE"]
    text = (folder / "LICENSE").read_text()
    assert text == (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_every_package_has_its_index_metadata(folder: Path) -> None:
    meta = project(folder)["project"]
    assert meta["authors"] == [{"name": "The runyard developers"}]
    assert meta["keywords"] and meta["description"]
    assert meta["readme"] == "README.md"
    classifiers = meta["classifiers"]
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # `license` says it (PEP 639)
    urls = meta["urls"]
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}
    assert urls["Homepage"] == URL and urls["Issues"] == f"{URL}/issues"
    assert urls["Documentation"] == f"{URL}/tree/main/docs"
    assert urls["Source"] == f"{URL}/tree/main/{folder.relative_to(REPO)}"


def test_installing_runyard_adds_no_pytest_plugin() -> None:
    for folder in FOLDERS:
        assert "pytest11" not in project(folder)["project"].get("entry-points", {}), folder
    loaded = [
        ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value.startswith("runyard")
    ]
    assert loaded == []


# ------------------------------------------------------------------------------ the READMEs
LINK = re.compile(r"\]\(([^)\s]+)[^)]*\)|<(https?://[^>]+)>|\b(?:src|href)=\"([^\"]+)\"")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_every_readme_is_fit_for_a_package_index(folder: Path) -> None:
    text = (folder / "README.md").read_text()
    assert text.startswith(f"# {name(folder)}\n")
    links = [next(g for g in m.groups() if g) for m in LINK.finditer(text)]
    assert links, "a README names where the docs are"
    relative = [link for link in links if not link.startswith("https://")]
    assert relative == [], (
        "relative links break on the package index: use https://github.com/runyard/runyard/..."
    )
    assert any(link.startswith(f"{URL}/blob/main/docs/") for link in links)
    assert "pip install" in text and "## Install" in text
    assert len(python_blocks(text)) == 1, "one example"


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_every_readme_example_runs_up_to_its_main_block(folder: Path, tmp_path: Path) -> None:
    """The example is valid Python; what it does outside ``if __name__ == "__main__":``
    (defining tasks, building executors and plugins) runs with no service."""
    (example := tmp_path / "example.py").write_text(python_blocks((folder / "README.md").read_text())[0])
    code = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='readme_example')"
    done = subprocess.run(
        [sys.executable, "-c", code, example], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
