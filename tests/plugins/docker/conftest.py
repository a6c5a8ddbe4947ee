"""tests/plugins/docker: runyard-docker against the real Docker engine (docs/testing.md).

Needs core and runyard-docker only (these tests also run in a venv holding just those), so
every experiment names its executor. Tasks run in containers of the test image; their code
reaches the container as users' code does, shipped from the git work tree of this
repository (tests/ is on PYTHONPATH, so ``taskdefs`` imports there too).

Every test that uses the engine is checked afterwards: no container of its experiments may
be left, running or not (found by their ``runyard.experiment`` label).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import runyard as run
from _docker_helpers import containers_of, until
from runyard.states import FINAL_STATES
from runyard.store import open_store


@pytest.fixture
def client(docker_engine: Any) -> Iterator[Any]:
    """A docker SDK client for looking at the engine from the test's side."""
    import docker

    c = docker.DockerClient(base_url=docker_engine.docker_host)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def docker_executor(docker_engine: Any, client: Any, runyard_home: str) -> Iterator[Callable[..., Any]]:
    """``docker_executor(**fields)``: a DockerExecutor on the test image.

    After the test: cancel what the test left live, then check that no container of its
    experiments is left (removal happens in the background: wait for it), removing any
    that is, so that one failure does not spill into the next test.
    """

    def make(**fields: Any) -> Any:
        fields.setdefault("image", docker_engine.image)
        return run.DockerExecutor(**fields)

    yield make

    store = open_store()
    ids = [record.id for record in store.experiments()]
    for experiment_id in ids:
        exp = run.Experiment.from_id(experiment_id)
        if any(t.status not in FINAL_STATES for t in exp.tasks):
            exp.cancel_all()
            exp.wait(timeout=60)
    left: list[Any] = []

    def none_left() -> bool:
        left[:] = [c for i in ids for c in containers_of(client, i)]
        return not left

    try:
        until(none_left, "the test's containers to be removed", timeout=30)
    except AssertionError:
        names = [c.attrs.get("Names") for c in left]
        for c in left:
            c.remove(force=True)
        pytest.fail(f"containers left behind: {names}")


@pytest.fixture
def tasks_dir(tmp_path: Any) -> str:
    """A host folder the tests mount into containers."""
    path = tmp_path / "shared"
    path.mkdir()
    os.chmod(path, 0o777)
    return str(path)
