"""Fresh virtual environments holding chosen packages of this repository (imported by the
tests in tests/plugins as ``_fresh_venv``).

They prove that a package installs and works on its own: each venv is new, has no system
site-packages, and gets real (not editable) installs built from the repository, with the
workspace's ``tool.uv.sources`` ignored, so a package finds only what it declares and what
the test installs beside it. uv installs them (from its cache where it can).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Variables of this test process that must not leak into a venv's processes.
_DROP = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS", "PYTEST_PLUGINS",
         "RUNYARD_DISABLE_PLUGIN_AUTOLOAD", "RUNYARD_BLOCK_PLUGINS")  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would tie a venv's processes to it."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update(extra)
    return env


def _uv() -> str:
    # `uv run` sets UV to itself; ./dev.sh installs uv into .tools/ when none is on PATH
    found = (
        os.environ.get("UV") or shutil.which("uv") or shutil.which("uv", path=str(REPO / ".tools" / "bin"))
    )
    if not found:
        pytest.skip("uv is not installed (./dev.sh installs it)")
    return found


def run(
    argv: list[str | Path],
    *,
    cwd: Path = REPO,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end, in ``env`` (default: :func:`clean_env`); unless ``check``
    is false, fail the test with its output if it exits non-zero."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=clean_env() if env is None else env, capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0 or not check, (
        f"`{' '.join(map(str, argv))}` exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done


def make_venv(path: Path, *packages: str) -> Path:
    """A new venv at ``path`` with ``packages`` installed; returns its ``bin`` folder.

    ``packages`` are folders relative to the repository (``./core``) or requirements
    (``pytest``).
    """
    uv = _uv()
    run([uv, "venv", "--quiet", "--python", sys.executable, path])
    run([uv, "pip", "install", "--quiet", "--no-sources", "--python", path / "bin" / "python", *packages])
    return path / "bin"


def build(folder: str, out: Path) -> tuple[Path, Path]:
    """Build the sdist of the package in ``folder`` (relative to the repository), then its
    wheel from that sdist, unpacked elsewhere (as an index's user would): ``(sdist, wheel)``
    in ``out``. With ``--no-sources``: what the package declares is all the build sees."""
    before = set(out.glob("*")) if out.exists() else set()
    run([_uv(), "build", "--quiet", "--no-sources", "--python", sys.executable, "--out-dir", out, folder])
    made = set(out.glob("*")) - before
    sdists, wheels = [p for p in made if p.name.endswith(".tar.gz")], [p for p in made if p.suffix == ".whl"]
    assert len(sdists) == 1 and len(wheels) == 1, f"uv build {folder} made {sorted(p.name for p in made)}"
    return sdists[0], wheels[0]


def site_packages(python: Path) -> Path:
    """The site-packages folder of the venv whose interpreter is ``python``."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(run([python, "-c", code]).stdout.strip())


def pip_list(python: Path) -> dict[str, str]:
    """``pip list`` of the venv whose interpreter is ``python``: {normalized name: version}."""
    out = run([python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"]).stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}


def disk_bytes(path: Path, *, bytecode: bool = True) -> int:
    """Bytes of the file ``path``, or of the files under the folder ``path`` (their sizes;
    without those in ``__pycache__`` folders unless ``bytecode``)."""
    if not path.is_dir():
        return os.lstat(path).st_size
    total = 0
    for root, dirs, files in os.walk(path):
        if not bytecode and "__pycache__" in dirs:
            dirs.remove("__pycache__")
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total
