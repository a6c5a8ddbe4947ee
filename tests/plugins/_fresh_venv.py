"""Fresh virtual environments holding chosen packages of this repository (imported by the
tests in tests/plugins as ``_fresh_venv``).

They prove that a package installs and works on its own: each venv is new, has no system
site-packages, and gets real (not editable) installs built from the repository, with the
workspace's ``tool.uv.sources`` ignored, so a package finds only what it declares and what
the test installs beside it. uv installs them (from its cache where it can).
"""

from __future__ import annotations

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
    found = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV to itself
    if not found:
        pytest.skip("uv is not installed (./dev.sh installs it)")
    return found


def run(
    argv: list[str | Path], *, cwd: Path = REPO, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; fail the test with its output if it exits non-zero."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=clean_env(), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (
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
