"""A stand-in for the ``runyard`` package in a job, so that ``import runyard.job`` works where
runyard is not installed.

Every job carries this folder beside the runner (``RUNNER_DIR/_shim/runyard/``, with
``RUNNER_DIR/job.py``), and the runner appends ``RUNNER_DIR/_shim`` to the task's
``PYTHONPATH``. Imported, it hands over to a real runyard found anywhere else on
``sys.path`` (the real package then replaces it in ``sys.modules``: ``runyard.Config`` and
the rest are there); without one it offers ``runyard.job`` and nothing else.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_SHIM = os.path.dirname(_HERE)  # RUNNER_DIR/_shim, the folder on PYTHONPATH
_JOB = os.path.join(os.path.dirname(_SHIM), "job.py")  # RUNNER_DIR/job.py


def _real_runyard() -> importlib.machinery.ModuleSpec | None:
    """The spec of a real runyard package on sys.path (a stand-in like this one is not)."""
    for entry in sys.path:
        where = os.path.abspath(entry or os.getcwd())
        if os.path.basename(where) == os.path.basename(_SHIM):
            continue
        spec = importlib.machinery.PathFinder.find_spec("runyard", [where])
        if spec is not None and spec.loader is not None:
            return spec
    return None


def _hand_over() -> bool:
    """Runs the real runyard in this one's place (``import runyard`` gives what is in
    ``sys.modules`` when this module has run); False when there is none."""
    spec = _real_runyard()
    if spec is None or spec.loader is None:
        return False
    real = importlib.util.module_from_spec(spec)
    sys.modules["runyard"] = real
    try:
        spec.loader.exec_module(real)
    except BaseException:
        del sys.modules["runyard"]
        raise
    return True


def _job_helper() -> object:
    spec = importlib.util.spec_from_file_location("runyard.job", _JOB)
    if spec is None or spec.loader is None:
        raise ImportError(f"runyard's job helper is missing: {_JOB}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["runyard.job"] = module
    spec.loader.exec_module(module)
    return module


if not _hand_over():
    __path__ = []  # no submodule but this one:
    job = _job_helper()
