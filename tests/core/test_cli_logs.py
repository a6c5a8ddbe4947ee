"""`runyard logs` with --tail, --since, --grep, -t and --stream (with and without --follow),
`logs EXP --all` (every task merged in time order), the combinations that mean nothing (an
error, never an option silently ignored); and `metadata --set`, `artifacts --fetch`, `dry-run`."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import runyard as run
from helpers import until
from test_cli import assert_error, here, ok

STAMP = re.compile(r"^\d{2}:\d{2}:\d{2} ")


@pytest.fixture
def talkers() -> run.Experiment:
    """ping and pong take turns writing (ping first, 0.15 s apart), stdout and stderr."""
    exp = run.Experiment("talkers")
    exp.add(
        run.Script(inline="for i in 1 2 3; do echo ping $i; echo ping-err $i >&2; sleep 0.3; done"),
        name="ping",
    )
    exp.add(run.Script(inline="sleep 0.15; for i in 1 2 3; do echo pong $i; sleep 0.3; done"), name="pong")
    assert exp.run() == "SUCCEEDED"
    return exp


def test_logs_tail_grep_and_stream_select_lines(talkers: run.Experiment) -> None:
    assert ok("logs", talkers.id, "ping", "--tail", "2") == "ping 3\n"  # stdout; ping-err 3 on stderr
    result = here("logs", talkers.id, "ping", "--tail", "2")
    assert (result.stdout, result.stderr) == ("ping 3\n", "ping-err 3\n")
    assert ok("logs", talkers.id, "ping", "--grep", r"ping [23]$") == "ping 2\nping 3\n"
    assert here("logs", talkers.id, "ping", "--grep", "2", "--stream", "stderr").stderr == "ping-err 2\n"
    only_out = here("logs", talkers.id, "ping", "--stream", "stdout", "--tail", "1")
    assert (only_out.stdout, only_out.stderr) == ("ping 3\n", "")


def test_logs_timestamps_without_follow_stamp_each_line(talkers: run.Experiment) -> None:
    lines = ok("logs", talkers.id, "pong", "-t").splitlines()
    assert [line[9:] for line in lines] == ["pong 1", "pong 2", "pong 3"]
    assert all(STAMP.match(line) for line in lines)


def test_logs_since_a_duration_or_a_time(talkers: run.Experiment) -> None:
    assert ok("logs", talkers.id, "pong", "--since", "1h").splitlines() == ["pong 1", "pong 2", "pong 3"]
    time.sleep(1.1)
    assert ok("logs", talkers.id, "pong", "--since", "1s") == ""
    ended = talkers.tasks[1].end_time
    assert ended is not None
    later = (ended + dt.timedelta(seconds=1)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert ok("logs", talkers.id, "pong", "--since", later) == ""
    first = talkers.stream_logs("pong", follow=False)
    second = list(first)[1].timestamp.astimezone().isoformat()  # with its zone
    assert ok("logs", talkers.id, "pong", "--since", second).splitlines() == ["pong 2", "pong 3"]


def test_logs_all_merges_every_task_in_time_order_each_line_after_its_task(talkers: run.Experiment) -> None:
    result = here("logs", talkers.id, "--all")
    assert result.stdout.splitlines() == [
        "ping | ping 1", "pong | pong 1", "ping | ping 2", "pong | pong 2", "ping | ping 3", "pong | pong 3",
    ]  # fmt: skip
    assert result.stderr.splitlines() == ["ping | ping-err 1", "ping | ping-err 2", "ping | ping-err 3"]
    assert (
        ok("logs", talkers.id, "--all", "--tail", "2", "--stream", "stdout")
        == "ping | ping 3\npong | pong 3\n"
    )
    stamped = ok("logs", talkers.id, "--all", "-t", "--grep", "1$", "--stream", "stdout").splitlines()
    assert [line[9:] for line in stamped] == ["ping | ping 1", "pong | pong 1"]


def test_logs_follow_honours_stream_timestamps_and_tail() -> None:
    exp = run.Experiment("cli-follow-options")
    exp.add(
        run.Script(inline="for i in 1 2 3 4; do echo out $i; echo err $i >&2; sleep 0.3; done"), name="talk"
    )
    exp.run(detach=True)
    until(lambda: "out 1" in exp.get_logs("talk").stdout, "the task to write")

    errors = here("logs", exp.id, "talk", "-f", "--stream", "stderr", "-t")
    assert errors.stdout == ""
    assert [line[9:] for line in errors.stderr.splitlines()] == ["err 1", "err 2", "err 3", "err 4"]
    assert all(STAMP.match(line) for line in errors.stderr.splitlines())
    assert here("logs", exp.id, "talk", "-f", "--tail", "1", "--stream", "stdout").stdout == "out 4\n"


def test_logs_all_follow_prints_every_task_until_all_have_ended() -> None:
    exp = run.Experiment("cli-follow-all")
    exp.add(run.Script(inline="echo a-1; sleep 1; echo a-2"), name="a")
    exp.add(run.Script(inline="sleep 0.5; echo b-1; sleep 1; echo b-2"), name="b")
    exp.run(detach=True)
    until(lambda: all(t.status == "RUNNING" for t in exp.tasks), "the tasks to run")

    proc = subprocess.run(
        [sys.executable, "-m", "runyard", "logs", exp.id, "--all", "-f"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["a | a-1", "b | b-1", "a | a-2", "b | b-2"]
    assert all(t.status == "SUCCEEDED" for t in exp.tasks)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--all", "ping"], "give a TASK or --all, not both"),
        ([], "name a TASK"),
        (["--all", "--attempt", "1"], "--attempt names an attempt of one TASK: not with --all"),
        (["ping", "--grep", "("], "argument --grep: not a regular expression: '('"),
        (["ping", "--since", "yesterday"], "argument --since: must be a duration ago (10m, 2h, 1d)"),
        (["ping", "--tail", "0"], "argument --tail: must be a whole number of 1 or more"),
    ],
)
def test_logs_options_that_mean_nothing_together_are_a_wrong_command_line(args: list[str], says: str) -> None:
    result = here("logs", "no-such-experiment", *args)  # refused before any experiment is looked for
    assert (result.returncode, result.stdout) == (2, "")
    assert says in result.stderr.splitlines()[-1]


def test_logs_of_an_unknown_task_names_the_tasks(talkers: run.Experiment) -> None:
    assert_error(here("logs", talkers.id, "nope", "--tail", "1"), "nope")


# ------------------------------------------------------------------------------ metadata --set
def test_metadata_set_adds_json_values_and_shows_the_result(talkers: run.Experiment) -> None:
    out = ok(
        "metadata", talkers.id, "--set", "lr=0.1", "--set", 'owner="me"', "--set", 'cfg={"seed": [1, 2]}'
    )
    assert out.splitlines() == ["lr: 0.1", 'owner: "me"', 'cfg: {"seed": [1, 2]}']
    assert talkers.get_metadata() == {"lr": 0.1, "owner": "me", "cfg": {"seed": [1, 2]}}
    assert json.loads(ok("metadata", talkers.id, "--set", "lr=0.2", "--json")) == {
        "lr": 0.2, "owner": "me", "cfg": {"seed": [1, 2]},
    }  # fmt: skip


@pytest.mark.parametrize(("value", "says"), [("owner=me", "a string needs its quotes"), ("=1", "KEY=JSON")])
def test_metadata_set_refuses_what_is_not_key_equals_json(
    talkers: run.Experiment, value: str, says: str
) -> None:
    result = here("metadata", talkers.id, "--set", value)
    assert result.returncode == 2 and says in result.stderr.splitlines()[-1]
    assert talkers.get_metadata() == {}


# ------------------------------------------------------------------------------ artifacts --fetch
def test_artifacts_fetch_prints_a_local_path_or_copies_it(talkers: run.Experiment, tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"0123456789")
    talkers.add_artifact("weights", str(weights))

    assert ok("artifacts", talkers.id, "--fetch", "weights").strip() == str(weights)
    copy = tmp_path / "copy.bin"
    assert ok("artifacts", talkers.id, "--fetch", "weights", "-o", copy).strip() == str(copy)
    assert copy.read_bytes() == b"0123456789"
    assert_error(here("artifacts", talkers.id, "--fetch", "nope"), "has no artifact 'nope'", "weights")
    for args, says in [
        (["-o", copy], "give --fetch NAME too"),
        (["--fetch", "weights", "--json"], "not with --json"),
    ]:
        result = here("artifacts", talkers.id, *args)
        assert result.returncode == 2 and says in result.stderr.splitlines()[-1]


# ------------------------------------------------------------------------------ dry-run
def test_dry_run_shows_what_each_task_would_launch_and_launches_nothing() -> None:
    exp = run.Experiment("cli-dry-run")
    exp.add(run.Script(inline="echo hi", env={"API_TOKEN": "s3cret"}), name="hi")
    exp.add(run.Script(inline="echo there"), name="there")

    out = ok("dry-run", exp.id)

    assert out.startswith("--- hi\nlocal: would start this command for task hi")
    assert "\n--- there\n" in out and "s3cret" not in out
    assert [(t.status, t.attempts) for t in exp.tasks] == [("PENDING", 0), ("PENDING", 0)]
    assert exp.store.experiment(exp.id).launched_at is None
    empty = run.Experiment("cli-dry-run-empty")
    assert ok("dry-run", empty.id) == f"experiment {empty.id} has no tasks: nothing would be launched\n"


def test_an_optional_task_may_come_after_the_options(talkers: run.Experiment) -> None:
    assert ok("logs", talkers.id, "--tail", "1", "--stream", "stdout", "pong") == "pong 3\n"
    assert ok("logs", talkers.id, "-t", "pong").count("pong") == 3
    assert json.loads(ok("metrics", talkers.id, "--json", "ping"))["tasks"] == {"ping": {}}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["list", "-q", "--json"], "give one of them"),
        (["events", "EXP", "--interval", "1"], "give -f/--follow too"),
        (["cancel", "EXP", "ping", "--all"], "give a TASK or --all, not both"),
        (["cancel", "EXP"], "name a TASK to cancel, or --all"),
    ],
)
def test_an_option_that_means_nothing_with_the_others_is_never_silently_ignored(
    args: list[str], says: str
) -> None:
    result = here(*args)  # refused before any experiment is looked for
    assert (result.returncode, result.stdout) == (2, "")
    assert says in result.stderr.splitlines()[-1]
