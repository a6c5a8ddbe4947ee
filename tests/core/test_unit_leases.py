"""Units of machine resources (GPUs) leased to task attempts in the store (schema 4): taken
with the launch, in one transaction; never held by two live attempts; given back when the
task leaves its attempt; a lease whose holder is no longer live is stale and taken over."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from runyard.states import Event, State
from runyard.store import DB_NAME, SCHEMA_VERSION, Settings, Store, UnitsBusy

POOL = {"gpu": ["0", "1", "2"]}


def _store(home: Path, *experiments: str, tasks: int = 3) -> Store:
    store = Store(str(home))
    for exp in experiments:
        store.create_experiment(exp, exp, None, [], Settings(), {}, None)
        store.add_task(exp, [(f"t{i}", "{}", '{"kind": "local"}', [], []) for i in range(tasks)])
    return store


def _launch(store: Store, exp: str, task: str, gpus: int) -> dict[str, list[str]] | None:
    attempts = store.task(exp, task).attempts + 1  # type: ignore[union-attr]
    return store.launch_leased(exp, task, {"gpu": gpus}, POOL, attempts=attempts, job_id=None)


def _held(store: Store) -> list[tuple[str, str, str]]:
    return [(unit, exp, task) for _, unit, exp, task, _, _ in store.unit_leases()]


def test_units_are_taken_with_the_launch_and_never_twice(tmp_path: Path) -> None:
    store = _store(tmp_path, "a", "b")
    assert _launch(store, "a", "t0", 2) == {"gpu": ["0", "1"]}
    assert store.task("a", "t0").status is State.SUBMITTED  # type: ignore[union-attr]
    with pytest.raises(UnitsBusy) as busy:
        _launch(store, "b", "t0", 2)
    assert (busy.value.resource, busy.value.wanted, busy.value.free, busy.value.holders) == (
        "gpu",
        2,
        1,
        ["a"],
    )
    assert store.task("b", "t0").status is State.PENDING  # type: ignore[union-attr]
    assert store.task("b", "t0").attempts == 0  # type: ignore[union-attr]
    assert _launch(store, "b", "t1", 1) == {"gpu": ["2"]}
    assert _held(store) == [("0", "a", "t0"), ("1", "a", "t0"), ("2", "b", "t1")]
    assert _launch(store, "b", "t1", 1) is None  # not PENDING any more: nothing changes
    assert len(_held(store)) == 3


@pytest.mark.parametrize(
    ("event", "to"),
    [(Event.END, State.SUCCEEDED), (Event.RERUN, State.PENDING), (Event.CANCEL, State.CANCELLED),
     (Event.RELAUNCH, State.PENDING), (Event.REQUEUE, State.RUNNING)],
)  # fmt: skip
def test_units_go_back_when_the_task_leaves_its_attempt(tmp_path: Path, event: Event, to: State) -> None:
    store = _store(tmp_path, "a")
    _launch(store, "a", "t0", 2)
    fields = {"attempts": 2} if event is Event.REQUEUE else {"attempts": 0} if event is Event.RELAUNCH else {}
    assert store.transition("a", "t0", event, to, **fields) is State.SUBMITTED
    assert _held(store) == []


def test_units_stay_held_while_the_attempt_lives(tmp_path: Path) -> None:
    store = _store(tmp_path, "a")
    _launch(store, "a", "t0", 1)
    store.transition("a", "t0", Event.LAUNCHED, State.RUNNING, job_id="1")
    store.transition("a", "t0", Event.PAUSE)
    assert _held(store) == [("0", "a", "t0")]


def test_a_lease_whose_holder_is_not_live_in_that_attempt_is_stale_and_taken_over(tmp_path: Path) -> None:
    """(A store changed behind runyard's back: a lease row left by a task that has ended.)"""
    store = _store(tmp_path, "a", "b")
    _launch(store, "a", "t0", 3)
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("UPDATE tasks SET status = 'FAILED' WHERE experiment_id = 'a' AND id = 't0'")
    assert _launch(store, "b", "t0", 3) == {"gpu": ["0", "1", "2"]}
    assert _held(store) == [("0", "b", "t0"), ("1", "b", "t0"), ("2", "b", "t0")]


def test_a_store_of_schema_3_gets_the_lease_table_and_keeps_its_tasks(tmp_path: Path) -> None:
    store = _store(tmp_path, "a")
    store.close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:  # as runyard wrote it before schema 4
        db.execute("DROP TABLE unit_leases")
        db.execute("UPDATE schema_version SET version = 3")
    store = Store(str(tmp_path))
    assert [t.id for t in store.tasks("a")] == ["t0", "t1", "t2"]
    assert _launch(store, "a", "t0", 1) == {"gpu": ["0"]}
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)] == [(4,)]


def test_reasons_of_many_tasks_are_one_write_and_no_event(tmp_path: Path) -> None:
    store = _store(tmp_path, "a")
    _launch(store, "a", "t2", 1)
    before = store.events("a")
    rev = {t.id: t.rev for t in store.tasks("a")}
    store.set_reasons("a", {"t0": "waiting for 2 free GPUs", "t1": "held", "t2": "not pending"})
    assert {t.id: t.reason for t in store.tasks("a")} == {
        "t0": "waiting for 2 free GPUs",
        "t1": "held",
        "t2": None,
    }
    assert store.events("a") == before
    assert {t.id: t.rev for t in store.tasks("a")} == rev
