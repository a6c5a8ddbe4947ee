"""runyard as a user gets it from a package index. The sdists of core and runyard-local are
built from this checkout, and their wheels from those sdists (unpacked elsewhere, as an
index's user would build them); a fresh `python -m venv` then gets
`pip install --no-index --find-links WHEELS "runyard[local]"`, where WHEELS holds those two
wheels and the wheels of their runtime dependencies (fetched first with `pip download`), so
that nothing of the repository but the built wheels is installed. In that venv:

- an experiment (the core README's example) runs on `run.LocalExecutor()` to SUCCEEDED, and
  `runyard list` / `runyard logs` show it;
- the distributions have the one version of the repository, carry the LICENSE, and have
  their package's README as their description;
- pytest does not load runyard's fixtures unless a project asks (`-p runyard.testing`,
  `pytest_plugins = ["runyard.testing"]`);
- the install's footprint, packages and bytes over the bare venv's, is measured (printed,
  and bounded).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import runyard
from _fresh_venv import REPO, build, clean_env, disk_bytes, pip_list, run, site_packages

pytestmark = pytest.mark.slow

VERSION = runyard.__version__
PACKAGES = {"runyard": REPO / "core", "runyard-local": REPO / "plugins" / "local"}
# What `runyard[local]` must never bring: the other executors' dependencies.
NOT_FOR_LOCAL = {
    "paramiko",
    "docker",
    "requests",
    "cryptography",
    "runyard-slurm",
    "runyard-docker",
    "runyard-ray",
}


@dataclasses.dataclass(frozen=True)
class Footprint:
    packages: dict[str, str]  # what the install added over the bare venv's: name -> version
    bytes: int  # what the install added to site-packages, as pip installs it (bytecode compiled)
    bytes_without_bytecode: int

    def describe(self) -> str:
        return (
            f"runyard[local] footprint: {len(self.packages)} packages, {self.bytes / 1e6:.1f} MB on disk"
            f" ({self.bytes_without_bytecode / 1e6:.1f} MB without __pycache__): "
            + ", ".join(f"{n} {v}" for n, v in sorted(self.packages.items()))
        )


@dataclasses.dataclass(frozen=True)
class Venv:
    bin: Path
    python: Path
    dists: dict[str, tuple[Path, Path]]  # distribution -> (sdist, wheel)
    footprint: Footprint


def no_pip_config() -> dict[str, str]:
    """The environment for a pip that sees only the folders it is given: no configuration
    file, no PIP_* variable (this machine's pip configuration adds find-links and indexes),
    and bytecode written beside the sources, as pip does by default."""
    # pip compiles bytecode into site-packages, as for a user (conftest.py may set a prefix)
    drop = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    env = {k: v for k, v in clean_env().items() if not k.startswith("PIP_") and k not in drop}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip then reads no configuration file at all
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("wheels")
    dist, wheels, deps = root / "dist", root / "wheels", root / "deps"
    dists = {name: build(str(folder.relative_to(REPO)), dist) for name, folder in PACKAGES.items()}
    wheels.mkdir()
    for _, wheel in dists.values():
        shutil.copy2(wheel, wheels)

    path = root / "venv"
    run([sys.executable, "-m", "venv", path])
    python = path / "bin" / "python"
    bare_packages, site = pip_list(python), site_packages(python)
    bare_entries = set(os.listdir(site))  # pip and setuptools (pip writes their bytecode as it runs)

    # runyard's runtime dependencies, from the index (the wheel files name the runyard packages)
    run(
        [python, "-m", "pip", "download", "--quiet", "--dest", deps, *sorted(wheels.glob("*.whl"))],
        timeout=900,
    )
    for name in os.listdir(deps):  # pip download copies the local wheels too: keep them in wheels/ only
        if name.startswith(("runyard-", "runyard_")):
            os.remove(deps / name)
    run(
        [python, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--find-links", deps, "runyard[local]"],
        env=no_pip_config(), timeout=900,
    )  # fmt: skip
    packages = pip_list(python)
    added = [site / e for e in os.listdir(site) if e not in bare_entries]
    footprint = Footprint(
        packages={n: v for n, v in packages.items() if n not in bare_packages},
        bytes=sum(disk_bytes(p) for p in added),
        bytes_without_bytecode=sum(disk_bytes(p, bytecode=False) for p in added),
    )
    print(footprint.describe())
    return Venv(bin=path / "bin", python=python, dists=dists, footprint=footprint)


def readme_example() -> str:
    """The first Python block of core/README.md: a complete script."""
    blocks = re.findall(
        r"^```python\n(.*?)^```", (REPO / "core" / "README.md").read_text(), flags=re.S | re.M
    )
    assert blocks, "core/README.md has no python example"
    return blocks[0]


def test_runyard_and_the_local_executor_come_from_the_built_wheels(venv: Venv) -> None:
    assert {name: wheel.name for name, (_, wheel) in venv.dists.items()} == {
        "runyard": f"runyard-{VERSION}-py3-none-any.whl",
        "runyard-local": f"runyard_local-{VERSION}-py3-none-any.whl",
    }
    assert venv.footprint.packages["runyard"] == venv.footprint.packages["runyard-local"] == VERSION

    code = "import importlib.metadata as m, runyard; print(runyard.__version__, m.version('runyard'), m.version('runyard-local'), runyard.__file__)"
    version, core, local, where = run([venv.python, "-c", code]).stdout.split()
    assert version == core == local == VERSION
    assert Path(where).is_relative_to(venv.bin.parent)  # the venv's copy, not this checkout

    plugins = {p["name"]: p for p in json.loads(run([venv.bin / "runyard", "plugins", "--json"]).stdout)}
    assert sorted(plugins) == ["local", "runyard.builtin"]
    assert (plugins["local"]["distribution"], plugins["local"]["version"], plugins["local"]["error"]) == (
        "runyard-local", VERSION, None,
    )  # fmt: skip


def test_an_experiment_runs_on_the_local_executor_and_shows_in_runyard_list(
    venv: Venv, tmp_path: Path
) -> None:
    (tmp_path / "hello.py").write_text(readme_example())
    env = clean_env(RUNYARD_HOME=str(tmp_path / "home"))

    out = run([venv.python, "hello.py"], cwd=tmp_path, env=env, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "SUCCEEDED", out

    listed = json.loads(run([venv.bin / "runyard", "list", "--json"], cwd=tmp_path, env=env).stdout)
    assert [(e["title"], e["status"], e["tasks"]) for e in listed] == [("hello", "SUCCEEDED", 2)]
    table = run([venv.bin / "runyard", "list"], cwd=tmp_path, env=env).stdout
    assert re.search(r"^\S+_hello\s+hello\s+SUCCEEDED\s+2\s", table, flags=re.M), table
    logs = run([venv.bin / "runyard", "logs", "hello", "greet"], cwd=tmp_path, env=env).stdout
    assert logs.strip() == "hello, world"


METADATA = """
import importlib.metadata as m, json, sys
out = {}
for name in sys.argv[1:]:
    dist = m.distribution(name)
    meta = dist.metadata
    licenses = [f for f in dist.files or () if f.parts[-2:-1] == ("licenses",) or f.name == "LICENSE"]
    out[name] = {
        "license": meta["License-Expression"],
        "license_files": meta.get_all("License-File") or [],
        "license_texts": {str(f): f.read_text() for f in licenses},
        "description": meta.get_payload(),
        "content_type": meta["Description-Content-Type"],
        "author": meta["Author"] or meta["Author-email"],
        "urls": meta.get_all("Project-URL") or [],
        "classifiers": meta.get_all("Classifier") or [],
        "requires": meta.get_all("Requires-Dist") or [],
        "extras": meta.get_all("Provides-Extra") or [],
    }
print(json.dumps(out))
"""


def test_the_installed_distributions_carry_the_license_and_their_readme(venv: Venv) -> None:
    found = json.loads(run([venv.python, "-c", METADATA, *PACKAGES]).stdout)
    license_text = (REPO / "LICENSE").read_text()
    for name, folder in PACKAGES.items():
        meta = found[name]
        assert meta["license"] == "Apache-2.0", name
        assert meta["license_files"] == ["LICENSE"], name
        assert list(meta["license_texts"].values()) == [license_text], (name, list(meta["license_texts"]))
        assert meta["content_type"] == "text/markdown", name
        assert meta["description"].strip() == (folder / "README.md").read_text().strip(), name
        assert "The runyard developers" in meta["author"], name
        urls = dict(u.split(", ", 1) for u in meta["urls"])
        assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls), name
        assert all(u.startswith("https://github.com/runyard/runyard") for u in urls.values()), urls
        # License-Expression says it (PEP 639)
        assert "License :: OSI Approved :: Apache Software License" not in meta["classifiers"]
        assert any(c.startswith("Programming Language :: Python :: 3.") for c in meta["classifiers"]), name

    minor = ".".join(VERSION.split(".")[:2])
    upper = f"{VERSION.split('.')[0]}.{int(VERSION.split('.')[1]) + 1}"
    assert any(
        re.fullmatch(rf"runyard(<{upper},>={minor}|>={minor},<{upper})", r)
        for r in found["runyard-local"]["requires"]
    )
    assert {"local", "docker", "slurm", "ray", "mixed-precision", "all"} <= set(found["runyard"]["extras"])


def test_the_sdists_carry_the_license_the_readme_and_the_version(venv: Venv) -> None:
    for name, (sdist, _) in venv.dists.items():
        stem = f"{name.replace('-', '_')}-{VERSION}"
        assert sdist.name == f"{stem}.tar.gz"
        with tarfile.open(sdist) as tar:
            names = set(tar.getnames())
            assert {
                f"{stem}/LICENSE",
                f"{stem}/README.md",
                f"{stem}/PKG-INFO",
                f"{stem}/pyproject.toml",
            } <= names
            pkg_info = tar.extractfile(f"{stem}/PKG-INFO").read().decode()  # type: ignore[union-attr]
        assert re.search(rf"^Version: {re.escape(VERSION)}$", pkg_info, flags=re.M), name
        assert re.search(r"^License-File: LICENSE$", pkg_info, flags=re.M), name
    for _, wheel in venv.dists.values():
        with zipfile.ZipFile(wheel) as whl:
            assert any(n.endswith(".dist-info/licenses/LICENSE") for n in whl.namelist()), wheel.name


TEST_KIT = """
import os


def test_the_kit_gives_a_fresh_home(runyard_home):
    assert os.environ["RUNYARD_HOME"] == runyard_home
"""


def test_pytest_in_the_venv_loads_runyard_fixtures_only_when_asked(venv: Venv, tmp_path: Path) -> None:
    run([venv.python, "-m", "pip", "install", "--quiet", "pytest"], timeout=900)  # after the footprint
    code = "import importlib.metadata as m; print([e.value for e in m.entry_points(group='pytest11')])"
    assert "runyard" not in run([venv.python, "-c", code]).stdout

    (tmp_path / "test_kit.py").write_text(TEST_KIT)
    pytest_argv = [venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_kit.py"]
    plain = run(pytest_argv, cwd=tmp_path, check=False)
    assert plain.returncode == 1 and "fixture 'runyard_home' not found" in plain.stdout, plain.stdout

    assert "1 passed" in run([*pytest_argv, "-p", "runyard.testing"], cwd=tmp_path).stdout
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["runyard.testing"]\n')
    assert "1 passed" in run(pytest_argv, cwd=tmp_path).stdout


def test_the_footprint_of_runyard_local(venv: Venv, record_property: Callable[[str, object], None]) -> None:
    footprint = venv.footprint
    record_property("footprint", footprint.describe())
    assert not NOT_FOR_LOCAL & set(footprint.packages), footprint.describe()
    # runyard, runyard-local, pluggy, attrs, cattrs, rich and what they need: bounds that
    # catch a heavy dependency, not a release of one of these
    assert len(footprint.packages) <= 12, footprint.describe()
    assert footprint.bytes < 30e6, footprint.describe()
