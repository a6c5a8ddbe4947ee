"""Attempts are records: every run of a task is kept (``exp.attempts``), each one's output can
be read (``get_logs`` / ``stream_logs`` with ``attempt=``, ``runyard attempts``, ``runyard logs
--attempt``), and a task's own start, end, exit code and failure are its latest attempt's: a
task RUNNING again shows no end time, exit code or failure of the attempt that failed."""

from __future__ import annotations

import json
import os

import pytest
import runyard as run
from _core_helpers import task, wait_until
from runyard.errors import ConfigError
from test_cli import assert_error, here

# fails its first run (exit 3), then waits for the file "go" and succeeds
_FLAKY = """
if [ ! -e first-done ]; then echo "first run"; echo "first stderr" >&2; touch first-done; exit 3; fi
echo "second run"
while [ ! -e go ]; do sleep 0.05; done
echo "second done"
"""


def _flaky(folder):
    """An experiment made in ``folder`` (the tasks' working folder): one task, retried once."""
    assert os.getcwd() == str(folder)
    exp = run.Experiment("attempts", max_retries=1)
    return exp, exp.add(run.Script(inline=_FLAKY), name="flaky")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Tests work in their own folder: tasks run there, and the test gives them files there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_task_running_again_shows_its_new_attempt_not_the_failed_one(in_tmp) -> None:
    exp, t = _flaky(in_tmp)
    exp.run(detach=True)
    view = wait_until(
        lambda: (v := task(exp, t)).attempts == 2 and v.status == "RUNNING" and v,
        what="the second attempt runs",
    )
    assert (view.end_time, view.exit_code, view.failure) == (None, None, None)
    first, second = exp.attempts(t)
    assert (first.attempt, first.status, first.exit_code, first.failure) == (1, "FAILED", 3, "error")
    assert first.end_time is not None and first.end_time <= second.start_time
    assert (second.attempt, second.status, second.end_time, second.exit_code) == (2, "RUNNING", None, None)
    assert view.start_time == second.start_time and view.duration.total_seconds() >= 0
    (in_tmp / "go").touch()
    assert exp.wait(timeout=60) == "SUCCEEDED"
    first, second = exp.attempts(t)
    assert (second.status, second.exit_code, second.failure) == ("SUCCEEDED", 0, None)
    assert first.job_id and second.job_id and first.job_id != second.job_id
    view = task(exp, t)
    assert (view.exit_code, view.failure, view.end_time) == (0, None, second.end_time)


def test_each_attempt_keeps_its_own_output(in_tmp) -> None:
    (in_tmp / "go").touch()
    exp, t = _flaky(in_tmp)
    assert exp.run() == "SUCCEEDED"
    one, two = exp.get_logs(t, attempt=1), exp.get_logs(t, attempt=2)
    assert (one.attempt, one.exit_code, one.stdout, one.stderr) == (1, 3, "first run\n", "first stderr\n")
    assert (two.attempt, two.exit_code, two.stdout) == (2, 0, "second run\nsecond done\n")
    assert exp.get_logs(t).stdout == two.stdout  # None: the latest
    assert [e.message for e in exp.stream_logs(t, follow=False, attempt=1)] == ["first run", "first stderr"]
    assert [e.message for e in exp.stream_logs(t, follow=False)] == ["second run", "second done"]
    # followed from the first attempt: every attempt's lines in turn
    followed = [e.message for e in exp.stream_logs(t, follow=True, attempt=1)]
    assert followed == ["first run", "first stderr", "second run", "second done"]


def test_an_attempt_the_task_has_not_had_is_a_clear_error(in_tmp) -> None:
    (in_tmp / "go").touch()
    exp, t = _flaky(in_tmp)
    with pytest.raises(ConfigError, match="has no attempt yet: there is no attempt 1"):
        exp.get_logs(t, attempt=1)
    assert exp.attempts(t) == []
    exp.run()
    for wrong in (0, 3, "1", True):
        with pytest.raises(ConfigError, match=r"has attempts 1 to 2: there is no attempt"):
            exp.get_logs(t, attempt=wrong)
        with pytest.raises(ConfigError, match=r"has attempts 1 to 2"):
            exp.stream_logs(t, attempt=wrong)


def test_a_task_that_never_ran_has_no_attempt_and_says_why(in_tmp) -> None:
    exp = run.Experiment("never-ran")
    bad = exp.add(run.Script(inline="exit 1"), name="bad")
    child = exp.add(run.Script(inline="echo never"), name="child", dependencies=[bad])
    assert exp.run() == "FAILED"
    assert (task(exp, bad).failure, task(exp, child).failure) == ("error", "dependency")
    assert [a.failure for a in exp.attempts(bad)] == ["error"]
    assert exp.attempts(child) == []


def test_a_cancelled_task_is_failure_cancelled_on_it_and_on_its_attempt(in_tmp) -> None:
    exp = run.Experiment("cancelled")
    t = exp.add(run.Script(inline="sleep 60"), name="sleeper")
    exp.run(detach=True)
    wait_until(lambda: task(exp, t).status == "RUNNING", what="the task runs")
    exp.cancel(t)
    assert (task(exp, t).status, task(exp, t).failure) == ("CANCELLED", "cancelled")
    (attempt,) = exp.attempts(t)
    assert (attempt.status, attempt.failure) == ("CANCELLED", "cancelled")


def test_the_cli_lists_attempts_and_prints_the_output_of_the_one_asked_for(in_tmp) -> None:
    (in_tmp / "go").touch()
    exp, t = _flaky(in_tmp)
    exp.run()
    listed = here("attempts", exp.experiment_id, t)
    assert listed.returncode == 0, listed.stderr
    header, first, second = listed.stdout.splitlines()
    assert header.split()[:4] == ["ATTEMPT", "STATUS", "EXIT", "FAILURE"]
    assert first.split()[:4] == ["1", "FAILED", "3", "error"]
    assert second.split()[:3] == ["2", "SUCCEEDED", "0"]
    rows = json.loads(here("attempts", exp.experiment_id, t, "--json").stdout)
    assert [(r["attempt"], r["status"], r["exit_code"], r["failure"]) for r in rows] == [
        (1, "FAILED", 3, "error"), (2, "SUCCEEDED", 0, None),
    ]  # fmt: skip
    assert rows[0]["end_time"].endswith("+00:00")
    logs = here("logs", exp.experiment_id, t, "--attempt", "1")
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, "first run\n", "first stderr\n")
    assert here("logs", exp.experiment_id, t).stdout == "second run\nsecond done\n"
    status = here("status", exp.experiment_id)
    line = next(r for r in status.stdout.splitlines() if r.startswith(t))
    assert line.split()[1:4] == ["SUCCEEDED", "2", "0"]  # status, attempts, exit code
    assert json.loads(here("status", exp.experiment_id, "--json").stdout)["tasks"][0]["attempts"] == 2


def test_the_cli_says_which_attempts_there_are_when_asked_for_another(in_tmp) -> None:
    (in_tmp / "go").touch()
    exp, t = _flaky(in_tmp)
    exp.run()
    assert_error(here("logs", exp.experiment_id, t, "--attempt", "7"), "has attempts 1 to 2", "attempt 7")
    wrong = here("logs", exp.experiment_id, t, "--attempt", "x")  # argparse's usage error: exit 2
    assert wrong.returncode == 2 and "--attempt: must be a whole number of 1 or more, got 'x'" in wrong.stderr
    assert_error(here("attempts", exp.experiment_id, "nope"), "no task 'nope'", t)
