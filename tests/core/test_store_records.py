"""The store defined once: the records are the tables (each field a column, checked when
read), and an experiment's settings are typed, keeping what a newer runyard wrote."""

from __future__ import annotations

import json
import re
import sqlite3

import attrs
import pytest
from runyard.errors import DamagedStoreError
from runyard.states import Event, State
from runyard.store import AttemptRecord, ExperimentRecord, Settings, Store, TaskRecord, open_store

EXP, TASK = "exp-1", "train"


@pytest.fixture
def store(runyard_home: str) -> Store:
    store = open_store(runyard_home)
    store.create_experiment(EXP, "records", None, ["a"], Settings(max_retries=2, timeout=60.0), {}, None)
    store.add_task(EXP, [(TASK, "{}", "{}", [], [])])
    return store


def sql(store: Store, statement: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(store.path) as db:
        rows = db.execute(statement, args).fetchall()
    db.close()
    return rows


@pytest.mark.parametrize(
    ("table", "record"),
    [("experiments", ExperimentRecord), ("tasks", TaskRecord), ("attempts", AttemptRecord)],
)
def test_a_new_store_has_exactly_the_columns_of_the_records(store: Store, table: str, record: type) -> None:
    assert [c[1] for c in sql(store, f"PRAGMA table_info({table})")] == list(attrs.fields_dict(record))


def test_settings_come_back_as_they_were_given(store: Store) -> None:
    settings = store.experiment(EXP).settings
    assert settings == Settings(max_retries=2, timeout=60.0)
    assert Settings.from_json(settings.to_json()) == settings


def test_settings_a_newer_runyard_wrote_are_kept_when_this_one_rewrites_them(store: Store) -> None:
    newer = {**Settings().to_dict(), "sweep_policy": ["grid"], "max_gpus": 4}
    sql(store, "UPDATE experiments SET settings = ? WHERE id = ?", json.dumps(newer), EXP)
    assert store.experiment(EXP).settings.extra == {"sweep_policy": ["grid"], "max_gpus": 4}

    store.set_paths(EXP, "/main.py", ["/src"])

    ((stored,),) = sql(store, "SELECT settings FROM experiments WHERE id = ?", EXP)
    assert json.loads(stored) == {**newer, "python_path": ["/src"]}


def test_a_setting_left_out_or_null_is_its_default() -> None:
    assert Settings.from_json('{"log_level": null, "timeout": 5}') == Settings(timeout=5)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ('{"max_retries": "many"}', "column settings: key max_retries: 'many' is not a whole number"),
        ('{"python_path": "/src"}', "column settings: key python_path: '/src' is not a list of strings"),
        ("[1]", "column settings: not a JSON object: '[1]'"),
    ],
)
def test_a_wrong_setting_in_the_store_is_named_as_damage(store: Store, settings: str, says: str) -> None:
    (good,) = sql(store, "SELECT settings FROM experiments WHERE id = ?", EXP)[0]
    sql(store, "UPDATE experiments SET settings = ? WHERE id = ?", settings, EXP)
    try:
        with pytest.raises(DamagedStoreError, match=re.escape(f"experiment {EXP}, {says}")):
            store.experiment(EXP)
    finally:  # repaired: the home's clean-up reads every experiment
        sql(store, "UPDATE experiments SET settings = ? WHERE id = ?", good, EXP)


def test_a_damaged_attempt_is_named_with_its_task_and_number(store: Store) -> None:
    store.transition(EXP, TASK, Event.LAUNCH, attempts=1)
    sql(store, "UPDATE attempts SET status = 'WEIRD'")
    with pytest.raises(
        DamagedStoreError, match=f"experiment {EXP}, task {TASK}, attempt 1, column status: 'WEIRD'"
    ):
        store.attempts(EXP, TASK)
    assert store.task(EXP, TASK).status is State.SUBMITTED  # type: ignore[union-attr]
