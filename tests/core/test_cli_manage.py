"""Managing experiments from the command line: `delete` and `gc`, `list --status/--tag`, the
state CREATED of an experiment never launched, and the commands that act on an experiment
named by a title whose newest experiment (a reproduce) was never launched."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import runyard as run
from helpers import until
from runyard.states import State
from runyard.store import DB_NAME, pid_alive
from runyard.views import CREATED, experiment_status
from test_cli import assert_error, cli, here, ok

TABLES = ("experiments", "tasks", "attempts", "events", "metadata", "artifacts", "config_versions")


def finished(title: str, *, tags: tuple[str, ...] = (), fail: bool = False) -> run.Experiment:
    exp = run.Experiment(title, tags=tags, metadata={"owner": "me"})
    exp.add(run.Script(inline="exit 1" if fail else "echo fine"), name="t")
    exp.track_config_version("cfg", {"lr": 0.1})
    assert exp.run() == ("FAILED" if fail else "SUCCEEDED")
    return exp


def sleeping(title: str) -> run.Experiment:
    exp = run.Experiment(title)
    exp.add(run.Script(inline="sleep 60"), name="prepare")
    exp.run(detach=True)
    until(lambda: exp.tasks[0].status == "RUNNING", "the task to run")
    return exp


def rows(exp: run.Experiment) -> dict[str, int]:
    """How many rows of the experiment each table holds."""
    with sqlite3.connect(os.path.join(exp.store.home, DB_NAME)) as db:
        out = {t: db.execute(f"SELECT COUNT(*) FROM {t} WHERE experiment_id = ?", (exp.id,)).fetchone()[0]
               for t in TABLES if t != "experiments"}  # fmt: skip
        out["experiments"] = db.execute(
            "SELECT COUNT(*) FROM experiments WHERE id = ?", (exp.id,)
        ).fetchone()[0]
    db.close()
    return out


def on_a_terminal(answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`runyard ARGS` with its stdin on a terminal, where ``answer`` is typed."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runyard", *args], stdin=follower, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        os.close(follower)
        follower = -1
        os.write(leader, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


# ------------------------------------------------------------------------------ delete
def test_delete_removes_every_row_of_the_experiment_and_its_folder() -> None:
    exp = finished("to-delete")
    other = finished("kept")
    exp.add_artifact("log", os.path.join(exp.directory, "tasks"))
    assert all(rows(exp).values()) and os.path.isdir(exp.directory)

    result = cli("delete", exp.id, "--yes")

    assert (result.returncode, result.stdout, result.stderr) == (0, f"deleted {exp.id}\n", "")
    assert set(rows(exp).values()) == {0}
    assert not os.path.exists(exp.directory)
    assert ok("list", "-q").split() == [other.id] and os.path.isdir(other.directory)
    assert_error(here("status", exp.id), f"no experiment with id or title {exp.id!r}")


def test_delete_without_a_terminal_needs_yes_and_deletes_nothing() -> None:
    exp = finished("asked")
    assert_error(cli("delete", exp.id), "needs a confirmation and stdin is not a terminal: add --yes")
    assert rows(exp)["experiments"] == 1 and os.path.isdir(exp.directory)


def test_delete_asks_on_a_terminal_and_deletes_only_on_yes() -> None:
    exp = finished("asked-on-a-terminal")

    refused = on_a_terminal("n", "delete", exp.id)
    assert refused.returncode == 1 and refused.stderr.endswith(
        "[y/N] runyard: error: not confirmed: nothing deleted\n"
    )
    assert rows(exp)["experiments"] == 1

    agreed = on_a_terminal("y", "delete", exp.id)
    assert agreed.returncode == 0, agreed.stderr
    assert agreed.stdout == f"deleted {exp.id}\n"
    assert f"delete experiment {exp.id} (SUCCEEDED, 1 task) and its folder" in agreed.stderr
    assert rows(exp)["experiments"] == 0


def test_delete_refuses_an_experiment_that_has_not_ended_and_force_cancels_it_first() -> None:
    exp = sleeping("live")
    pid = int(exp.tasks[0].job_id or 0)

    assert_error(here("delete", exp.id, "--yes"), f"experiment {exp.id} has not ended (RUNNING)", "--force")
    assert exp.tasks[0].status == "RUNNING"

    driver = exp.store.experiment(exp.id).driver_pid
    assert ok("delete", exp.id, "--force", "--yes") == f"deleted {exp.id}\n"
    assert rows(exp)["experiments"] == 0 and not os.path.exists(exp.directory)
    until(lambda: not pid_alive(pid), "the task's process to end")
    until(lambda: not (driver and pid_alive(driver)), "the supervisor to exit")


def test_delete_of_a_never_launched_experiment_by_id_needs_no_force() -> None:
    exp = run.Experiment("never")
    exp.add(run.Script(inline="true"), name="t")
    assert ok("delete", exp.id, "--yes") == f"deleted {exp.id}\n"
    assert rows(exp)["experiments"] == 0


# ------------------------------------------------------------------------------ gc
def _ended_days_ago(exp: run.Experiment, days: float) -> None:
    with exp.store.write() as db:
        db.execute("UPDATE experiments SET ended_at = ? WHERE id = ?", (time.time() - days * 86400, exp.id))


def test_gc_deletes_the_experiments_that_ended_longer_ago_than_asked() -> None:
    old_ok, old_failed, recent = finished("old-ok"), finished("old-failed", fail=True), finished("recent")
    _ended_days_ago(old_ok, 40)
    _ended_days_ago(old_failed, 31)
    _ended_days_ago(recent, 29)
    never = run.Experiment("never-launched")  # as old as can be, but never launched: kept
    with never.store.write() as db:
        db.execute("UPDATE experiments SET created_at = 0 WHERE id = ?", (never.id,))

    assert_error(cli("gc", "--older-than", "30d"), "stdin is not a terminal: add --yes")
    assert len(ok("list", "-q").split()) == 4

    out = ok("gc", "--older-than", "30d", "--yes")

    assert sorted(out.splitlines()) == sorted([f"deleted {old_ok.id}", f"deleted {old_failed.id}"])
    assert set(ok("list", "-q").split()) == {recent.id, never.id}
    assert not os.path.exists(old_ok.directory) and os.path.isdir(recent.directory)
    assert ok("gc", "--older-than", "4w2d", "--yes").startswith("nothing to delete: no experiment in")


def test_gc_keeps_an_experiment_that_has_not_ended() -> None:
    exp = sleeping("still-running")
    with exp.store.write() as db:
        db.execute("UPDATE experiments SET created_at = 0, launched_at = 1 WHERE id = ?", (exp.id,))
    assert ok("gc", "--older-than", "1h", "--yes").startswith("nothing to delete")
    assert exp.tasks[0].status == "RUNNING"


@pytest.mark.parametrize("value", ["30", "d", "1x", "30 days", "1d-2h"])
def test_gc_wants_a_duration_with_a_unit(value: str) -> None:
    result = here("gc", "--older-than", value)
    assert result.returncode == 2
    assert "argument --older-than: must be a duration: a number and a unit" in result.stderr.splitlines()[-1]


# ------------------------------------------------------------------------------ list filters
def test_list_filters_by_status_and_tag() -> None:
    a = finished("a", tags=("nightly", "gpu"))
    b = finished("b", tags=("nightly",), fail=True)
    c = run.Experiment("c", tags=("gpu",))
    ids = lambda *args: ok("list", "-q", *args).split()  # noqa: E731

    assert ids() == [c.id, b.id, a.id]
    assert ids("--status", "SUCCEEDED") == [a.id]
    assert ids("--status", "failed", "--status", "created") == [c.id, b.id]
    assert ids("--tag", "gpu") == [c.id, a.id]
    assert ids("--tag", "gpu", "--tag", "nightly") == [a.id]
    assert ids("--tag", "nightly", "--status", "FAILED") == [b.id]
    assert ids("--tag", "nightly", "--limit", "1") == [b.id]
    assert ids("--tag", "none") == []
    assert ok("list", "--tag", "none").startswith("no experiments in") and "match" in ok("list", "--tag", "x")
    assert [e["tags"] for e in json.loads(ok("list", "--json", "--tag", "gpu"))] == [
        ["gpu"],
        ["nightly", "gpu"],
    ]


# ------------------------------------------------------------------------------ CREATED
def test_an_experiment_never_launched_is_created_in_list_and_status() -> None:
    empty = run.Experiment("nothing-yet")
    waiting = run.Experiment("waiting")
    waiting.add(run.Script(inline="true"), name="t")
    ran_empty = run.Experiment("ran-empty")
    with pytest.warns(UserWarning, match="no tasks"):
        ran_empty.run()

    listed = {e["id"]: e["status"] for e in json.loads(ok("list", "--json"))}
    assert listed == {empty.id: "CREATED", waiting.id: "CREATED", ran_empty.id: "SUCCEEDED"}
    assert ok("status", waiting.id).splitlines()[0] == f"{waiting.id}: CREATED  (never launched)"
    status = json.loads(ok("status", waiting.id, "--json"))
    assert (status["status"], status["launched"], status["tasks"][0]["status"]) == (
        "CREATED",
        None,
        "PENDING",
    )
    assert json.loads(ok("status", ran_empty.id, "--json"))["status"] == "SUCCEEDED"


def test_the_experiment_status_is_created_only_while_never_launched() -> None:
    P, S, C = State.PENDING, State.SUCCEEDED, State.CANCELLED
    assert experiment_status(False, []) == CREATED
    assert experiment_status(False, [P, P]) == CREATED
    assert experiment_status(False, [C, P]) == CREATED
    assert experiment_status(False, [C, C]) == "FAILED"  # all cancelled before any launch: ended
    assert experiment_status(True, []) == "SUCCEEDED"
    assert experiment_status(True, [S, P]) == "RUNNING"


# ------------------------------------------------------------------------------ by title
@pytest.fixture
def reproduced(tmp_path: Path) -> tuple[run.Experiment, run.Experiment]:
    """`long`: launched, its task running; and a newer `long` that reproduce made, never launched."""
    launched = sleeping("long")
    copy = launched.create_snapshot().reproduce()
    return launched, copy


@pytest.mark.parametrize(
    "args",
    [["pause", "long", "prepare"], ["resume", "long", "prepare"], ["cancel", "long", "prepare"],
     ["cancel", "long", "--all"], ["retry", "long", "prepare"], ["takeover", "long"], ["wait", "long"],
     ["delete", "long", "--yes"]],
    ids=lambda a: " ".join(a),
)  # fmt: skip
def test_acting_by_a_title_whose_newest_was_never_launched_names_the_newest_launched_one(
    reproduced: tuple[run.Experiment, run.Experiment], args: list[str]
) -> None:
    launched, copy = reproduced
    assert_error(
        here(*args),
        f"experiment long: the newest with this title, {copy.id}, was never launched (a reproduce?);"
        f" the newest launched one is {launched.id}: give its id",
    )
    assert [t.status for t in copy.tasks] == ["PENDING"] and copy.store.experiment(copy.id).driver_pid is None
    assert launched.tasks[0].status == "RUNNING"
    assert ok("pause", launched.id, "prepare").strip() == "paused prepare"  # by id: as asked


def test_reading_by_title_shows_the_newest_and_delete_force_deletes_it(
    reproduced: tuple[run.Experiment, run.Experiment],
) -> None:
    launched, copy = reproduced
    assert ok("status", "long").startswith(f"{copy.id}: CREATED")
    assert ok("delete", "long", "--force", "--yes") == f"deleted {copy.id}\n"
    assert ok("status", "long").startswith(f"{launched.id}: RUNNING")


def test_acting_by_title_when_none_was_launched_names_the_id_to_use() -> None:
    exp = run.Experiment("only-created")
    exp.add(run.Script(inline="true"), name="t")
    assert_error(
        here("cancel", "only-created", "--all"),
        f"none with this title was launched: give the id {exp.id} to act on it anyway",
    )
    assert ok("cancel", exp.id, "--all").startswith("cancelled 1 task(s)")
