"""Task logs: get_logs, stream_logs, get_all_logs."""

from __future__ import annotations

import datetime as dt
import types

import runyard as run
import taskdefs
from _core_helpers import task


def test_get_logs_returns_stdout_stderr_and_exit_code() -> None:
    exp = run.Experiment("logs")
    t = exp.add(run.Script(inline="echo out; echo err >&2; exit 4"), name="both")
    exp.run()
    logs = exp.get_logs(t)
    assert (logs.stdout, logs.stderr, logs.exit_code) == ("out\n", "err\n", 4)


def test_get_logs_shows_the_latest_attempt() -> None:
    exp = run.Experiment("logs-retry", max_retries=2)
    script = run.Script(inline='echo "attempt $RUNYARD_ATTEMPT"; [ "$RUNYARD_ATTEMPT" -ge 2 ]')
    t = exp.add(script, name="flaky")
    assert exp.run() == "SUCCEEDED"
    logs = exp.get_logs(t)
    assert (logs.stdout, logs.exit_code) == ("attempt 2\n", 0)


def test_get_logs_of_a_task_that_has_not_run_is_empty() -> None:
    exp = run.Experiment("logs-empty")
    t = exp.add(run.Config(taskdefs.hello))
    logs = exp.get_logs(t)
    assert (logs.stdout, logs.stderr, logs.exit_code) == ("", "", None)


def test_a_failing_python_task_has_its_traceback_in_stderr() -> None:
    exp = run.Experiment("traceback")
    t = exp.add(run.Config(taskdefs.fail, message="exploded"), name="bad")
    exp.run()
    logs = exp.get_logs(t)
    assert logs.exit_code == 1
    assert logs.stdout == "about to fail\n"
    assert "Traceback (most recent call last)" in logs.stderr
    assert "in fail" in logs.stderr
    assert logs.stderr.rstrip().endswith("RuntimeError: exploded")


def test_get_all_logs_is_keyed_by_task_name() -> None:
    exp = run.Experiment("all-logs")
    exp.add(run.Config(taskdefs.hello, name="a"), name="greet")
    exp.add(run.Config(taskdefs.exit_with, 5), name="quits")
    exp.run()
    logs = exp.get_all_logs()
    assert sorted(logs) == ["greet", "quits"]
    assert (logs["greet"].stdout, logs["greet"].exit_code) == ("hello a\n", 0)
    assert logs["quits"].exit_code == 5


def test_stream_logs_follows_a_running_task_until_it_ends() -> None:
    exp = run.Experiment("stream")
    script = run.Script(inline="for i in 1 2 3 4; do echo out$i; echo err$i >&2; sleep 0.3; done")
    t = exp.add(script, name="talker")
    exp.run(detach=True)

    entries, status_at_first = [], None
    for entry in exp.stream_logs(t):
        if status_at_first is None:
            status_at_first = task(exp, t).status
        entries.append(entry)
    # it followed the task: the first line came while the task ran, the stream ended with it
    assert status_at_first == "RUNNING"
    assert task(exp, t).status == "SUCCEEDED"

    assert [e.message for e in entries if e.stream == "stdout"] == ["out1", "out2", "out3", "out4"]
    assert [e.message for e in entries if e.stream == "stderr"] == ["err1", "err2", "err3", "err4"]
    assert {e.stream for e in entries} == {"stdout", "stderr"}
    for e in entries:
        assert isinstance(e.timestamp, dt.datetime)
        assert e.timestamp.tzinfo is not None and e.timestamp.utcoffset() is not None
    for stream in ("stdout", "stderr"):
        stamps = [e.timestamp for e in entries if e.stream == stream]
        assert stamps == sorted(stamps)
    # the lines of one loop turn come before those of the next
    turns = [int(e.message[-1]) for e in entries]
    assert turns == sorted(turns)


def test_stream_logs_without_follow_returns_what_there_is() -> None:
    exp = run.Experiment("stream-done")
    t = exp.add(run.Script(inline="echo one; echo two"), name="done")
    exp.run()
    assert [(e.message, e.stream) for e in exp.stream_logs(t, follow=False)] == [
        ("one", "stdout"),
        ("two", "stdout"),
    ]


def test_a_lazy_log_source_hook_makes_its_source_once_and_answers_only_for_its_kind() -> None:
    from runyard.logs import LocalFileLogSource, log_source_of

    made: list[LocalFileLogSource] = []

    def make() -> LocalFileLogSource:
        made.append(LocalFileLogSource())
        return made[-1]

    hook = log_source_of("local", make)
    assert made == []  # nothing made until asked
    assert hook(types.SimpleNamespace(kind="docker")) is None  # (another plugin's executor)
    first, second = hook(run.LocalExecutor()), hook(run.LocalExecutor())
    assert first is second is made[0] and len(made) == 1
