"""A damaged store: runyard.db, or a value in it, that runyard never wrote (a hand-edited row,
a broken file). Each damage is one line, "the store at PATH is damaged: ...", that names the
experiment, the task and the column; commands that do not need the damaged value still work.

The homes here are not the test's RUNYARD_HOME: its clean-up reads every experiment."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import runyard as run
from runyard.errors import DamagedStoreError
from runyard.store import DB_NAME, Store, close_store
from test_cli import assert_error, cli


@dataclass
class Home:
    path: str
    ids: dict[str, str]  # title -> experiment id: "good", "bad" (the one damaged), "third"

    @property
    def db(self) -> str:
        return os.path.join(self.path, DB_NAME)

    def damage(self, sql: str) -> None:
        with sqlite3.connect(self.db) as db:
            db.execute(sql, {"bad": self.ids["bad"]})
        db.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli("--home", self.path, *args)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """Three experiments of one task each, with metadata; copied for each test."""
    home = str(tmp_path_factory.mktemp("template") / "home")
    ids = {}
    for title in ("good", "bad", "third"):
        exp = run.Experiment(title, base_dir=home, metadata={"owner": "me"})
        exp.add(run.Script(inline="echo hi"), name="t")
        ids[title] = exp.id
    close_store(home)
    return Home(home, ids)


@pytest.fixture
def home(template: Home, tmp_path: Path) -> Home:
    path = str(tmp_path / "home")
    shutil.copytree(template.path, path)
    return Home(path, template.ids)


@dataclass
class Damage:
    id: str
    sql: str
    says: str  # what the message says after "experiment ID, "
    in_list: bool  # `runyard list` reads the value, so it marks the experiment DAMAGED


EXPERIMENT_ROW = "UPDATE experiments SET {} WHERE id = :bad"
TASK_ROW = "UPDATE tasks SET {} WHERE experiment_id = :bad"
DAMAGES = [
    Damage("unknown-task-state", TASK_ROW.format("status = 'WEIRD'"), "task t, column status: 'WEIRD'", True),
    Damage(
        "unknown-paused-from",
        TASK_ROW.format("paused_from = 'NAPPING'"),
        "task t, column paused_from: 'NAPPING' is not a task state",
        False,
    ),
    Damage(
        "settings-not-json", EXPERIMENT_ROW.format("settings = '{nope'"), "column settings: not JSON", True
    ),
    Damage(
        "settings-not-an-object",
        EXPERIMENT_ROW.format("settings = '[1]'"),
        "column settings: not a JSON object: '[1]'",
        True,
    ),
    Damage("tags-not-json", EXPERIMENT_ROW.format("tags = 'nope'"), "column tags: not JSON", True),
    Damage(
        "tags-not-strings",
        EXPERIMENT_ROW.format("tags = '[1, 2]'"),
        "column tags: not a JSON list of strings",
        True,
    ),
    Damage(
        "run-options-not-json",
        EXPERIMENT_ROW.format("run_options = 'nope'"),
        "column run_options: not JSON",
        True,
    ),
    Damage(
        "created-at-not-a-number",
        EXPERIMENT_ROW.format("created_at = 'yesterday'"),
        "column created_at: 'yesterday' is not a number",
        True,
    ),
    Damage("handle-not-json", TASK_ROW.format("handle = 'nope'"), "task t, column handle: not JSON", False),
    Damage(
        "dependencies-not-json",
        TASK_ROW.format("dependencies = 'nope'"),
        "task t, column dependencies: not JSON",
        False,
    ),
    Damage(
        "attempts-not-a-number",
        TASK_ROW.format("attempts = 'many'"),
        "task t, column attempts: 'many' is not a whole number",
        False,
    ),
    Damage(
        "start-time-not-a-number",
        TASK_ROW.format("start_time = 'noon'"),
        "task t, column start_time: 'noon' is not a number",
        False,
    ),
]


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.id for d in DAMAGES])
def test_a_damaged_value_is_named_in_one_line_and_the_other_experiments_still_work(
    home: Home, damage: Damage
) -> None:
    home.damage(damage.sql)

    assert_error(
        home.cli("status", "bad"),
        f"the store at {home.db} is damaged: experiment {home.ids['bad']}, {damage.says}",
        f"sqlite3 {home.db}",  # how to repair it
    )
    status = home.cli("status", "good")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{home.ids['good']}: CREATED")  # never launched


@pytest.mark.parametrize(
    "damage", [d for d in DAMAGES if d.in_list], ids=[d.id for d in DAMAGES if d.in_list]
)
def test_list_marks_the_damaged_experiment_and_lists_the_others(home: Home, damage: Damage) -> None:
    home.damage(damage.sql)

    result = home.cli("list")

    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:4] for line in result.stdout.splitlines()[1:]}
    assert rows == {
        home.ids["good"]: ["good", "CREATED", "1"],
        home.ids["bad"]: ["bad", "DAMAGED", "-"],
        home.ids["third"]: ["third", "CREATED", "1"],
    }
    (warning,) = result.stderr.splitlines()
    assert warning.startswith(
        f"runyard: warning: the store at {home.db} is damaged: experiment {home.ids['bad']}, {damage.says}"
    )


def test_list_json_gives_the_damaged_experiment_with_its_error(home: Home) -> None:
    home.damage(EXPERIMENT_ROW.format("settings = '{nope'"))

    entries = {e["id"]: e for e in json.loads(home.cli("list", "--json").stdout)}

    bad = entries[home.ids["bad"]]
    assert (bad["title"], bad["status"], bad["tasks"], bad["created"]) == ("bad", "DAMAGED", None, None)
    assert "column settings: not JSON" in bad["error"]
    assert entries[home.ids["good"]]["status"] == "CREATED" and "error" not in entries[home.ids["good"]]


def test_damaged_metadata_is_named_and_the_rest_of_the_experiment_still_works(home: Home) -> None:
    home.damage("UPDATE metadata SET value = '{nope' WHERE experiment_id = :bad AND key = 'owner'")

    assert_error(
        home.cli("metadata", "bad"),
        f"the store at {home.db} is damaged: experiment {home.ids['bad']}, metadata 'owner', column value: not JSON",
    )
    assert home.cli("status", "bad").returncode == 0
    assert home.cli("metadata", "good").stdout == 'owner: "me"\n'


def test_a_damaged_event_is_named_by_the_api(home: Home) -> None:
    home.damage("UPDATE events SET data = 'nope' WHERE experiment_id = :bad AND kind = 'added'")
    store = Store(home.path)
    try:
        with pytest.raises(DamagedStoreError, match=r"experiment \S+_bad, event \d+, column data: not JSON"):
            store.events(home.ids["bad"])
        assert store.events(home.ids["good"])  # another experiment's are read
    finally:
        store.close()


def _garbage(home: Home) -> None:
    with open(home.db, "wb") as f:
        f.write(os.urandom(8192))


def _truncated(home: Home) -> None:
    assert not os.path.exists(home.db + "-wal")  # all of it in the file: cut it in the middle
    os.truncate(home.db, 4096 + 1000)


WHOLE_STORE = [
    ("garbage", _garbage, "file is not a database"),
    ("truncated", _truncated, "database disk image is malformed"),
    (
        "schema-version-not-a-number",
        lambda home: home.damage("UPDATE schema_version SET version = 'two'"),
        "table schema_version holds 'two', not a schema version",
    ),
    (
        "schema-version-gone",
        lambda home: home.damage("DROP TABLE schema_version"),
        "it has runyard's tables but no schema version",
    ),
    ("tasks-table-gone", lambda home: home.damage("DROP TABLE tasks"), "no such table: tasks"),
]


@pytest.mark.parametrize(("how", "says"), [w[1:] for w in WHOLE_STORE], ids=[w[0] for w in WHOLE_STORE])
def test_a_damaged_database_is_one_line_for_every_command(
    home: Home, how: Callable[[Home], None], says: str
) -> None:
    how(home)
    for args in (["list"], ["status", "good"]):
        assert_error(home.cli(*args), f"the store at {home.db} is damaged: {says}")


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("executor", "nope", "column executor: not JSON"),
        ("executor", "[1]", "column executor: not a JSON object"),
        (
            "executor",
            '{"kind": "local", "no_such_field": 1}',
            "column executor: cannot rebuild a LocalExecutor",
        ),
        ("task", "nope", "column task: not JSON"),
    ],
)
def test_a_damaged_task_or_executor_column_is_named_by_the_commands_that_read_it(
    home: Home, tmp_path: Path, column: str, value: str, says: str
) -> None:
    home.damage(TASK_ROW.format(f"{column} = '{value}'"))
    where = f"the store at {home.db} is damaged: experiment {home.ids['bad']}, task t, {says}"
    with pytest.raises(DamagedStoreError) as caught:  # the job it would launch is built from both
        run.Experiment.from_id(home.ids["bad"], base_dir=home.path).dry_run()
    assert str(caught.value).startswith(where)
    if "not JSON" in says or "not a JSON object" in says:  # a snapshot copies the JSON as it is
        assert_error(home.cli("snapshot", "bad", "-o", str(tmp_path / "snap.json")), where)
    assert home.cli("status", "bad").returncode == 0  # the table needs neither column
    assert home.cli("snapshot", "good", "-o", str(tmp_path / "good.json")).returncode == 0
