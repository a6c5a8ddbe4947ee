"""Hand-edited snapshots: ``load()`` and ``reproduce()`` check the whole file first, so one
that is not whole is refused with one clear error, and nothing is created in the store or on
disk. Stores written before those checks (a task whose dependency does not exist) still run
and still read, and the store never makes a folder for an id that would leave its parent."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from runyard.serialization import TAG
from runyard.store import open_store
from test_cli import assert_error, cli, ok


def _saved() -> dict[str, Any]:
    """The snapshot, as JSON, of a two-task experiment: ``prep``, then ``train`` after it."""
    exp = run.Experiment("handmade")
    prep = exp.add(run.Config(taskdefs.hello, "prep"), name="prep")
    exp.add(run.Script(inline="echo train"), name="train", dependencies=[prep])
    return json.loads(json.dumps(exp.create_snapshot().to_dict()))


def _set(data: dict[str, Any], index: int, key: str, value: Any) -> dict[str, Any]:
    data["tasks"][index][key] = value
    return data


@dataclass
class Case:
    id: str
    edit: Callable[[dict[str, Any], Path], dict[str, Any]]  # the snapshot, the test's tmp_path
    names: Callable[[Path], tuple[str, ...]]  # what the message must contain (field and value)


CASES = [
    Case(
        "task-id-climbs-out",
        lambda d, _: _set(d, 1, "id", "../../x"),
        lambda _: ("$.tasks[1].id", "'../../x'"),
    ),
    Case(
        "task-id-absolute",
        lambda d, tmp: _set(d, 1, "id", str(tmp / "abs" / "path")),
        lambda tmp: ("$.tasks[1].id", repr(str(tmp / "abs" / "path"))),
    ),
    Case(
        "unknown-dependency",
        lambda d, _: _set(d, 1, "dependencies", ["ghost"]),
        lambda _: ("$.tasks[1].dependencies", "'ghost'"),
    ),
    Case(
        "dependency-cycle",
        lambda d, _: _set(d, 0, "dependencies", ["train"]),
        lambda _: ("cycle", "prep -> train -> prep"),
    ),
    Case(
        "dependency-listed-after-its-dependent",
        lambda d, _: {**d, "tasks": d["tasks"][::-1]},
        lambda _: ("$.tasks[0].dependencies", "'prep'", "after"),
    ),
    Case("tasks-a-string", lambda d, _: {**d, "tasks": "abc"}, lambda _: ("$.tasks", "'abc'")),
    Case(
        "tasks-a-mapping",
        lambda d, _: {**d, "tasks": {"prep": d["tasks"][0]}},
        lambda _: ("$.tasks", "expected a list"),
    ),
    Case(
        "dependencies-a-string",
        lambda d, _: _set(d, 1, "dependencies", "prep"),
        lambda _: ("$.tasks[1].dependencies", "'prep'"),
    ),
    Case(
        "duplicate-task-id",
        lambda d, _: _set(d, 1, "id", "prep"),
        lambda _: ("$.tasks[1].id", "'prep'", "twice"),
    ),
    Case(
        "task-config-without-target",
        lambda d, _: _set(d, 0, "task", {TAG: "config", "args": [], "kwargs": {}}),
        lambda _: ("$.tasks[0].task.target", "missing"),
    ),
]


def _write(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return str(path)


def _everything(tmp_path: Path, home: str) -> Any:
    """The store's experiments and every file and folder under the test's tmp_path."""
    paths = sorted(
        os.path.join(root, name) for root, dirs, files in os.walk(tmp_path) for name in dirs + files
    )
    return [r.id for r in open_store(home).experiments()], paths


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_damaged_snapshot_is_refused_naming_the_field_and_creates_nothing(
    case: Case, tmp_path: Path, runyard_home: str
) -> None:
    path = _write(tmp_path, case.edit(_saved(), tmp_path))
    before = _everything(tmp_path, runyard_home)

    with pytest.raises(run.ConfigError) as info:
        run.ExperimentSnapshot.load(path).reproduce()

    message = str(info.value)
    assert "\n" not in message
    for name in (path, *case.names(tmp_path)):
        assert name in message, f"{name!r} not in the message: {message}"
    assert _everything(tmp_path, runyard_home) == before, "a refused snapshot created something"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_runyard_reproduce_refuses_a_damaged_snapshot_in_one_line(
    case: Case, tmp_path: Path, runyard_home: str
) -> None:
    path = _write(tmp_path, case.edit(_saved(), tmp_path))
    before = _everything(tmp_path, runyard_home)

    assert_error(cli("reproduce", path), path, *case.names(tmp_path))

    assert _everything(tmp_path, runyard_home) == before, "a refused snapshot created something"


def test_a_snapshot_edited_in_python_is_checked_by_reproduce(runyard_home: str) -> None:
    exp = run.Experiment("edited-in-python")
    exp.add(run.Config(taskdefs.hello), name="only")
    snap = exp.create_snapshot()
    snap.tasks[0]["id"] = "../escaped"
    with pytest.raises(run.ConfigError, match=re.escape("'../escaped'")):
        snap.reproduce()
    assert [r.id for r in open_store(runyard_home).experiments()] == [exp.id]


def test_an_unedited_snapshot_still_reproduces_and_runs(tmp_path: Path) -> None:
    again = run.ExperimentSnapshot.load(_write(tmp_path, _saved())).reproduce()
    assert again.run() == "SUCCEEDED"
    assert again.get_logs("train").stdout == "train\n"


# ------------------------------------------------------------------------------ damaged stores
def _with_missing_dependency() -> run.Experiment:
    """``orphan`` depends on ``ghost``, which the experiment has not got (as ``reproduce()``
    stored a hand-edited snapshot before snapshots were checked); ``fine`` has no dependency."""
    exp = run.Experiment("damaged")
    exp.add(run.Config(taskdefs.hello, "fine"), name="fine")
    exp.add(run.Config(taskdefs.hello, "orphan"), name="orphan")
    with exp.store.write() as db:
        db.execute(
            "UPDATE tasks SET dependencies = ? WHERE experiment_id = ? AND id = ?",
            (json.dumps(["ghost"]), exp.id, "orphan"),
        )
    return exp


def test_a_stored_task_whose_dependency_does_not_exist_ends_cancelled_naming_it() -> None:
    exp = _with_missing_dependency()
    exp.run()
    tasks = {t.id: t for t in exp.tasks}
    assert tasks["fine"].status == "SUCCEEDED"
    assert tasks["orphan"].status == "CANCELLED"
    assert tasks["orphan"].attempts == 0
    assert "'ghost'" in (tasks["orphan"].reason or "")


def test_stored_tasks_whose_dependencies_form_a_cycle_are_cancelled_naming_it_not_waited_for() -> None:
    exp = run.Experiment("cyclic-store")
    exp.add(run.Config(taskdefs.hello, "fine"), name="fine")
    exp.add(run.Config(taskdefs.hello, "a"), name="a")
    exp.add(run.Config(taskdefs.hello, "b"), name="b", dependencies=["a"])
    with exp.store.write() as db:  # as a store written before snapshots were checked can hold
        db.execute(
            "UPDATE tasks SET dependencies = ? WHERE experiment_id = ? AND id = ?",
            (json.dumps(["b"]), exp.id, "a"),
        )
    assert exp.run() == "FAILED"  # it returns: nothing waits forever
    tasks = {t.id: t for t in exp.tasks}
    assert tasks["fine"].status == "SUCCEEDED"
    assert (tasks["a"].status, tasks["b"].status) == ("CANCELLED", "CANCELLED")
    assert "dependency cycle: " in (tasks["a"].reason or "") and "a -> b -> a" in (tasks["b"].reason or "")


def test_a_direct_run_cancels_a_stored_task_whose_dependency_does_not_exist() -> None:
    exp = _with_missing_dependency()
    exp.run(direct=True)
    tasks = {t.id: t for t in exp.tasks}
    assert (tasks["fine"].status, tasks["orphan"].status) == ("SUCCEEDED", "CANCELLED")
    assert "'ghost'" in (tasks["orphan"].reason or "")


def test_save_refuses_to_replace_a_pipe_and_writes_through_a_link(tmp_path) -> None:
    exp = run.Experiment("saved")
    exp.add(run.Config(taskdefs.hello))
    snap = exp.create_snapshot()
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(run.ConfigError, match="not a regular file"):
        snap.save(str(pipe))
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)  # still the pipe
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("{}")
    link.symlink_to(target)
    assert snap.save(str(link)) == str(target)
    assert link.is_symlink() and json.loads(target.read_text())["format"]


def test_status_reads_a_launched_experiment_whose_task_has_a_missing_dependency() -> None:
    exp = _with_missing_dependency()
    exp.store.mark_launched(exp.id, {})  # launched, and its driver gone (it died of the KeyError)
    for name in (exp.id, exp.title):
        out = ok("status", name)
        assert re.search(r"^orphan\s+CANCELLED\b.*'ghost'", out, re.MULTILINE), out


@pytest.mark.parametrize("bad", ["../../x", "/abs/path", "..", ".", "", "a/b", "a\0b"])
def test_the_store_makes_no_folder_for_an_id_that_is_not_one_path_component(
    bad: str, runyard_home: str
) -> None:
    store = open_store(runyard_home)
    with pytest.raises(run.ConfigError, match=re.escape(repr(bad))):
        store.task_dir("20260101-000000-000000_x", bad)
    with pytest.raises(run.ConfigError, match=re.escape(repr(bad))):
        store.experiment_dir(bad)
