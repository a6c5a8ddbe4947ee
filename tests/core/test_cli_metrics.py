"""`runyard metrics EXP [TASK] [--json]` (last, min, max and steps of each metric; a sweep's
tasks side by side with the best marked) and `runyard events EXP [--json] [--follow]` (every
state change, until the experiment ends with --follow), on experiments of real local tasks."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from pathlib import Path

import metrictasks
import pytest
import runyard as run
from helpers import until
from test_cli import assert_error, here, ok


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def sweep(in_tmp) -> run.Experiment:
    """Three learning rates (lr-0.5 fails its first attempt, then runs again) and a task that
    prints no metric."""
    exp = run.Experiment("cli-sweep", max_retries=1)
    for lr in (0.1, 0.5, 0.9):
        exp.add(run.Partial(metrictasks.train, steps=3, lr=lr, fail_first=lr == 0.5), name=f"lr-{lr}")
    exp.add(run.Script(inline="echo nothing to measure"), name="quiet")
    assert exp.run() == "SUCCEEDED"
    return exp


def is_iso_with_zone(text: str) -> bool:
    return dt.datetime.fromisoformat(text).utcoffset() is not None


# ------------------------------------------------------------------------------------ metrics
def test_metrics_shows_a_sweep_side_by_side_with_the_best_last_value_marked(sweep) -> None:
    lines = ok("metrics", sweep.id).splitlines()

    assert [line.split() for line in lines[:5]] == [
        ["TASK", "accuracy", "loss"],
        ["lr-0.1", "0.271", "(0.1..0.271,", "3)", "0.729", "(0.729..0.9,", "3)"],
        ["lr-0.5", "0.875", "(0.5..0.875,", "3)", "0.125", "(0.125..0.5,", "3)"],  # both attempts' values
        ["lr-0.9", "0.999*", "(0.9..0.999,", "3)", "0.001*", "(0.001..0.1,", "3)"],
        ["quiet", "-", "-"],
    ]
    assert lines[5] == (
        "each cell: last value (min..max, steps); * the best last value (lower is better for loss, higher for"
        " the others)"
    )
    assert len(lines) == 6


def test_metrics_of_one_task_lists_each_metric_with_its_last_step(sweep) -> None:
    rows = [line.split() for line in ok("metrics", sweep.id, "lr-0.5").splitlines()]

    assert rows[0] == ["METRIC", "LAST", "MIN", "MAX", "STEPS", "LAST", "STEP"]
    assert rows[1:] == [
        ["accuracy", "0.875", "0.5", "0.875", "3", "3"],
        ["loss", "0.125", "0.125", "0.5", "3", "3"],
    ]


def test_metrics_json_gives_summaries_the_best_and_for_one_task_every_point(sweep) -> None:
    every = json.loads(ok("metrics", sweep.id, "--json"))
    one = json.loads(ok("metrics", sweep.id, "lr-0.5", "--json"))

    assert every["experiment"] == sweep.id
    assert every["better"] == {"loss": "lower", "accuracy": "higher"}
    assert every["best"] == {"loss": "lr-0.9", "accuracy": "lr-0.9"}
    assert list(every["tasks"]) == ["lr-0.1", "lr-0.5", "lr-0.9", "quiet"] and every["tasks"]["quiet"] == {}
    loss = every["tasks"]["lr-0.5"]["loss"]
    assert {k: loss[k] for k in ("last", "min", "max", "steps", "points", "last_step")} == {
        "last": 0.125, "min": 0.125, "max": 0.5, "steps": 3, "points": 4, "last_step": 3,
    }  # fmt: skip
    assert is_iso_with_zone(loss["last_time"])
    assert "points" not in every
    assert [(p["name"], p["step"], p["attempt"]) for p in one["points"] if p["name"] == "loss"] == [
        ("loss", 1, 1), ("loss", 1, 2), ("loss", 2, 2), ("loss", 3, 2),
    ]  # fmt: skip
    assert all(is_iso_with_zone(p["timestamp"]) for p in one["points"])


def test_metrics_of_a_task_without_any_says_so(sweep) -> None:
    assert ok("metrics", sweep.id, "quiet") == (
        "no metrics: none logged with runyard.job.log_metrics, no output line matched metric_patterns\n"
    )


def test_metrics_and_events_of_what_does_not_exist_are_one_line_errors(sweep) -> None:
    assert_error(here("metrics", "no-such-experiment"), "'no-such-experiment'", "runyard list")
    assert_error(here("metrics", sweep.id, "nope"), "no task 'nope'", "lr-0.1, lr-0.5, lr-0.9, quiet")
    assert_error(here("events", "no-such-experiment"), "'no-such-experiment'", "runyard list")


# ------------------------------------------------------------------------------------- events
def test_events_lists_each_state_change_with_time_task_attempt_and_reason(sweep) -> None:
    lines = ok("events", sweep.id).splitlines()
    mine = [line.split(None, 2)[2] for line in lines if "lr-0.5" in line]

    assert lines[0].split(None, 2)[2] == "(experiment)  - -> CREATED"
    assert lines[-1].split(None, 2)[2] == "(experiment)  RUNNING -> SUCCEEDED"
    assert [" ".join(m.split()[:5]) for m in mine] == [
        "lr-0.5 #1 PENDING -> SUBMITTED",
        "lr-0.5 #1 SUBMITTED -> RUNNING",
        "lr-0.5 #1 RUNNING -> PENDING",
        "lr-0.5 #2 PENDING -> SUBMITTED",
        "lr-0.5 #2 SUBMITTED -> RUNNING",
        "lr-0.5 #2 RUNNING -> SUCCEEDED",
    ]
    assert "exit code 3" in mine[2]
    local = dt.datetime.strptime(" ".join(lines[0].split()[:2]), "%Y-%m-%d %H:%M:%S.%f").astimezone()
    created = sweep.events()[0].timestamp
    assert abs(local - created) < dt.timedelta(milliseconds=1)  # local time, to the millisecond


def test_events_json_is_every_event_with_iso_times_with_a_zone(sweep) -> None:
    out = json.loads(ok("events", sweep.id, "--json"))

    assert out == [e.to_json() for e in sweep.events()]
    assert all(is_iso_with_zone(e["timestamp"]) for e in out)
    assert {e["to_state"] for e in out} == {"CREATED", "RUNNING", "SUBMITTED", "PENDING", "SUCCEEDED"}


def follow(exp: run.Experiment, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runyard", "events", exp.id, "--follow", "--interval", "0.05", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def waiting(in_tmp: Path) -> run.Experiment:
    exp = run.Experiment("cli-events-follow")
    exp.add(run.Script(inline="while [ ! -e go ]; do sleep 0.05; done; echo went"), name="waits")
    exp.run(detach=True)
    until(lambda: exp.tasks[0].status == "RUNNING", "the task to run")
    return exp


def test_events_follow_prints_new_events_until_the_experiment_ends(in_tmp) -> None:
    exp = waiting(in_tmp)
    proc = follow(exp, "--json")
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # it runs, and has printed what was recorded
    (in_tmp / "go").touch()

    rest = proc.stdout.read()  # (not communicate(): it would miss what readline() buffered)
    assert proc.stderr is not None
    assert (proc.wait(timeout=60), proc.stderr.read()) == (0, "")
    events = [first] + [json.loads(line) for line in rest.splitlines()]  # one object a line
    assert events == [e.to_json() for e in exp.events()]  # every one, each once, the end included
    assert [(e["task_id"], e["to_state"]) for e in events[-2:]] == [
        ("waits", "SUCCEEDED"),
        (None, "SUCCEEDED"),
    ]


def test_events_follow_of_an_ended_experiment_prints_it_all_and_returns(sweep) -> None:
    assert ok("events", sweep.id, "--follow") == ok("events", sweep.id)


def test_events_follow_ends_quietly_on_ctrl_c_with_exit_code_130(in_tmp) -> None:
    exp = waiting(in_tmp)
    proc = follow(exp)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # it runs, and has printed what was recorded
    assert "(experiment)" in first and "CREATED" in first

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)

    assert (proc.returncode, err) == (130, "runyard: interrupted\n")
    (in_tmp / "go").touch()
    assert exp.wait(timeout=60) == "SUCCEEDED"
