"""Events: ``exp.events()`` gives every state change, oldest first: each task's (time, attempt,
from and to state, reason, the transition) and the experiment's own (created -> launched ->
ended, reopened by a retry), from the store's events table. Tasks run as real local processes."""

from __future__ import annotations

import datetime as dt
import json

import metrictasks
import pytest
import runyard as run
from runyard.views import EventView


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def changes(events: list[EventView]) -> list[tuple[str | None, int | None, str | None, str | None]]:
    return [(e.task_id, e.attempt, e.from_state, e.to_state) for e in events]


def test_a_run_s_events_are_the_experiment_s_and_each_task_s_state_changes_oldest_first(in_tmp) -> None:
    exp = run.Experiment("events")
    t = exp.add(run.Partial(metrictasks.train, steps=1), name="train")
    assert exp.run() == "SUCCEEDED"

    events = exp.events()

    assert changes(events) == [
        (None, None, None, "CREATED"),
        (None, None, "CREATED", "RUNNING"),
        (t, 1, "PENDING", "SUBMITTED"),
        (t, 1, "SUBMITTED", "RUNNING"),
        (t, 1, "RUNNING", "SUCCEEDED"),
        (None, None, "RUNNING", "SUCCEEDED"),
    ]
    assert [e.event for e in events] == ["created", "launched", "launch", "launched", "end", "ended"]
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps) and all(s.tzinfo is not None for s in stamps)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert run.Experiment.from_id(exp.id).events() == events
    assert exp.events(since=events[3].seq) == events[4:]


def test_a_failed_attempt_and_its_rerun_carry_their_attempt_and_reason(in_tmp) -> None:
    exp = run.Experiment("events-retried", max_retries=1)
    t = exp.add(run.Partial(metrictasks.train, steps=2, fail_first=True), name="flaky")
    assert exp.run() == "SUCCEEDED"

    mine = [e for e in exp.events() if e.task_id == t]

    assert changes(mine) == [
        (t, 1, "PENDING", "SUBMITTED"),
        (t, 1, "SUBMITTED", "RUNNING"),
        (t, 1, "RUNNING", "PENDING"),
        (t, 2, "PENDING", "SUBMITTED"),
        (t, 2, "SUBMITTED", "RUNNING"),
        (t, 2, "RUNNING", "SUCCEEDED"),
    ]
    assert mine[2].event == "rerun" and "exit code 3" in (mine[2].reason or ""), mine[2]


def test_a_retry_of_an_ended_experiment_reopens_it_and_it_ends_again(in_tmp) -> None:
    exp = run.Experiment("events-reopened")
    t = exp.add(run.Script(inline="exit 4"), name="fails")
    assert exp.run() == "FAILED"
    exp.retry(t)
    assert exp.wait(timeout=60) == "FAILED"

    mine = [e for e in exp.events() if e.task_id is None]

    assert changes(mine) == [
        (None, None, None, "CREATED"),
        (None, None, "CREATED", "RUNNING"),
        (None, None, "RUNNING", "FAILED"),
        (None, None, "FAILED", "RUNNING"),
        (None, None, "RUNNING", "FAILED"),
    ]
    assert [e.event for e in mine] == ["created", "launched", "ended", "reopened", "ended"]


def test_events_as_json_have_iso_times_with_a_zone_and_plain_states(in_tmp) -> None:
    exp = run.Experiment("events-json")
    exp.add(run.Script(inline="true"), name="ok")
    exp.run(detach=True)
    assert exp.wait(timeout=60) == "SUCCEEDED"

    out = [e.to_json() for e in exp.events()]

    json.dumps(out)  # JSON values only
    launched = out[1]
    assert launched["reason"] == "detach" and launched["to_state"] == "RUNNING"
    assert all(dt.datetime.fromisoformat(e["timestamp"]).utcoffset() == dt.timedelta(0) for e in out)
    assert {type(e["from_state"]) for e in out} <= {str, type(None)}


def test_events_a_damaged_store_left_without_their_fields_are_left_out(in_tmp) -> None:
    rows = [
        (1, None, 1700000000.0, "created", {"title": "x"}),
        (2, None, 1700000001.0, "driver", {"pid": 1}),  # not a state change
        (3, "t", "not a time", "state", {"from": "PENDING", "to": "SUBMITTED"}),
        (4, "t", 1700000002.0, "state", ["not", "an", "object"]),
        (5, "t", 1700000003.0, "state", {"from": "PENDING", "to": "SUBMITTED", "attempt": "1"}),
    ]
    views = [EventView.of(r) for r in rows]
    assert views[1] is None and views[2] is None
    assert (views[3].from_state, views[3].to_state, views[3].attempt) == (None, None, None)
    assert (views[4].from_state, views[4].attempt, views[4].event) == ("PENDING", None, "")
