"""tests/plugins/ray: runyard-ray against the test bed's real Ray head (docs/testing.md).

Needs core and runyard-ray only (these tests also run in a venv holding just those), so every
experiment names its executor. Task code reaches the cluster as users' code does, shipped
from the git work tree of this repository in the job's working dir (tests/ is on PYTHONPATH,
so ``taskdefs`` imports there too).

Every test that uses the head is checked afterwards: no job of its experiments may be left on
the head (runyard deletes each job once its output is home).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import runyard as run
from _ray_helpers import jobs_of
from runyard.states import FINAL_STATES
from runyard.store import open_store


@pytest.fixture
def ray_executor(ray_address: str, runyard_home: str) -> Iterator[Callable[..., Any]]:
    """``ray_executor(**fields)``: a RayExecutor on the test bed's head. After the test: cancel
    what it left live, then check that the head holds no job of its experiments."""

    def make(**fields: Any) -> Any:
        fields.setdefault("address", ray_address)
        return run.RayExecutor(**fields)

    yield make

    ids = [record.id for record in open_store().experiments()]
    for experiment_id in ids:
        exp = run.Experiment.from_id(experiment_id)
        if any(t.status not in FINAL_STATES for t in exp.tasks):
            exp.cancel_all()
            exp.wait(timeout=60)
    left = [j["submission_id"] for i in ids for j in jobs_of(ray_address, i)]
    if left:
        pytest.fail(f"jobs left on the Ray head: {left}")
