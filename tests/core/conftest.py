"""tests/core: every test ends with no task process and no supervisor left behind."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from runyard.states import FINAL_STATES
from runyard.store import open_store, pid_alive


@pytest.fixture(autouse=True)
def _nothing_left_running(runyard_home: str) -> Iterator[None]:
    """Safety net: cancel whatever a test left live and wait for its drivers to exit."""
    yield
    import runyard as run

    store = open_store(runyard_home)
    for record in store.experiments():
        pid = record.driver_pid
        if any(s not in FINAL_STATES for s in store.task_states(record.id)) and record.launched_at:
            run.Experiment.from_id(record.id).cancel_all()
        deadline = time.monotonic() + 30
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
