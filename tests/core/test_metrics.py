"""Metrics: ``exp.get_metrics(task_id, attempt=None)`` gives what a task logged with
``runyard.job.log_metrics`` and what its output says (``loss: 0.5`` lines, read with the
experiment's ``metric_patterns``), merged by time, every attempt oldest first;
``get_all_metrics`` gives every task's. Tasks run as real local processes; the parser's
corner cases are checked on journal text as the runner writes it."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re

import metrictasks
import pytest
import runyard as run
from runyard.errors import ConfigError, UnknownTaskError
from runyard.metrics import DEFAULT_PATTERNS, MetricParser, MetricPoint, lower_is_better
from runyard.store import open_store


def values(points: list[MetricPoint], name: str) -> list[tuple[int | None, float, str, int]]:
    return [(p.step, p.value, p.source, p.attempt) for p in points if p.name == name]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------- through real tasks
def test_printed_loss_lines_and_logged_metrics_come_back_merged_by_time(in_tmp) -> None:
    exp = run.Experiment("metrics")
    t = exp.add(run.Partial(metrictasks.train, steps=3, lr=0.5), name="train")
    assert exp.run() == "SUCCEEDED"

    points = exp.get_metrics(t)

    assert values(points, "loss") == [(1, 0.5, "parsed", 1), (2, 0.25, "parsed", 1), (3, 0.125, "parsed", 1)]
    assert values(points, "accuracy") == [
        (1, 0.5, "logged", 1),
        (2, 0.75, "logged", 1),
        (3, 0.875, "logged", 1),
    ]
    stamps = [p.timestamp for p in points]
    assert stamps == sorted(stamps)
    assert all(s.tzinfo is not None and s.utcoffset() == dt.timedelta(0) for s in stamps)
    assert exp.get_metrics(t, attempt=1) == points
    assert run.Experiment.from_id(exp.id).get_metrics(t) == points  # all of it is in the store and files


def test_every_attempt_oldest_first_and_one_attempt_alone(in_tmp) -> None:
    exp = run.Experiment("metrics-retried", max_retries=1)
    t = exp.add(run.Partial(metrictasks.train, steps=2, lr=0.5, fail_first=True), name="flaky")
    assert exp.run() == "SUCCEEDED"

    assert values(exp.get_metrics(t), "loss") == [(1, 0.5, "parsed", 1), (1, 0.5, "parsed", 2),
                                                  (2, 0.25, "parsed", 2)]  # fmt: skip
    assert [p.attempt for p in exp.get_metrics(t, attempt=2)] == [2, 2, 2, 2]
    assert values(exp.get_metrics(t, attempt=1), "accuracy") == [(1, 0.5, "logged", 1)]
    with pytest.raises(ConfigError, match=r"^task 'flaky' has attempts 1 to 2: there is no attempt 3$"):
        exp.get_metrics(t, attempt=3)
    with pytest.raises(UnknownTaskError, match=r"has no task 'nope' \(its tasks: flaky\)"):
        exp.get_metrics("nope")


def test_get_all_metrics_gives_every_task_in_add_order_one_with_none_too(in_tmp) -> None:
    exp = run.Experiment("metrics-all")
    fast = exp.add(run.Partial(metrictasks.train, steps=1, lr=0.9), name="fast")
    quiet = exp.add(run.Script(inline="echo nothing to see"), name="quiet")
    slow = exp.add(run.Partial(metrictasks.train, steps=1, lr=0.1), name="slow")
    assert exp.run() == "SUCCEEDED"

    every = exp.get_all_metrics()

    assert list(every) == [fast, quiet, slow]
    assert every[quiet] == []
    assert values(every[slow], "loss") == [(1, 0.9, "parsed", 1)]
    assert every[fast] == exp.get_metrics(fast)


def test_metric_patterns_replace_the_defaults_and_reproduce_keeps_them(in_tmp) -> None:
    patterns = {"lr": r"lr=(\d+(?:\.\d+)?)"}
    exp = run.Experiment("metrics-patterns", metric_patterns=patterns)
    t = exp.add(run.Partial(metrictasks.train, steps=2, lr=0.5), name="train")
    assert exp.run() == "SUCCEEDED"

    points = exp.get_metrics(t)

    assert values(points, "loss") == []  # the defaults are replaced
    assert values(points, "lr") == [(1, 0.5, "parsed", 1), (2, 0.5, "parsed", 1)]  # each \r update
    assert values(points, "accuracy") == [(1, 0.5, "logged", 1), (2, 0.75, "logged", 1)]
    assert exp.settings["metric_patterns"] == patterns
    assert exp.create_snapshot().reproduce().settings["metric_patterns"] == patterns


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ("loss: (.*)", r"^metric_patterns must be a dict of metric name -> regex, got 'loss: \(\.\*\)'"),
        (
            {"loss": r"loss: \d+"},
            r"^metric_patterns\['loss'\] must have exactly one group \(the number\), it has 0",
        ),
        ({"loss": r"(a)(b)"}, r"it has 2: '\(a\)\(b\)'; make other groups non-capturing: \(\?:\.\.\.\)$"),
        (
            {"loss": r"loss: (\d+"},
            r"^metric_patterns\['loss'\] is not a valid regex \(missing \), unterminated",
        ),
        ({"loss": 3}, r"^metric_patterns\['loss'\] must be a regex string, got 3$"),
        ({"": r"(\d)"}, r"^metric_patterns: a metric name must be a non-empty string, got ''$"),
    ],
)
def test_wrong_metric_patterns_are_one_clear_error_and_nothing_is_created(
    runyard_home, patterns, message
) -> None:
    before = open_store(runyard_home).experiment_titles()
    with pytest.raises(ConfigError, match=message):
        run.Experiment("bad-patterns", metric_patterns=patterns)
    assert open_store(runyard_home).experiment_titles() == before


# ------------------------------------------------------------------------- the parser itself
def journal(*lines: str) -> bytes:
    return "".join(f"{1700000000 + i}.5 {'e' if 'e|' in line else 'o'} {line}\n" for i, line in
                   enumerate(lines)).encode()  # fmt: skip


def parsed(
    data: bytes, patterns: dict[str, str] | None = None, **kw: bool
) -> list[tuple[str, float, int | None]]:
    return [(p.name, p.value, p.step) for p in MetricParser(patterns).parse(data, 1, **kw)]


def test_the_defaults_read_loss_and_accuracy_as_colon_or_equals_with_the_line_s_step() -> None:
    data = journal(
        "step 6/12 loss: 0.226 accuracy=0.91",
        "Epoch 3 | iter 40 | loss=1.5e-3",  # the step before the epoch
        "val_loss: 9 train.loss: 9 xloss=9 lossy: 9",  # other metrics, not `loss`
        "final loss: 0.4",  # no step
        "epoch 2 loss = -0.5",
    )
    assert parsed(data) == [
        ("loss", 0.226, 6), ("accuracy", 0.91, 6), ("loss", 0.0015, 40), ("loss", 0.4, None), ("loss", -0.5, 2),
    ]  # fmt: skip


def test_each_carriage_return_update_of_a_progress_bar_is_parsed_with_its_own_step() -> None:
    bar = "\r".join(f"{s * 25}%|##  | {s}/4 [00:0{s}<00:01, 3.2it/s, loss={1 / s:.2f}]" for s in range(1, 5))
    assert parsed(journal(bar)) == [("loss", 1.0, 1), ("loss", 0.5, 2), ("loss", 0.33, 3), ("loss", 0.25, 4)]


def test_the_step_is_found_in_any_case_and_beside_text_that_lowering_makes_longer() -> None:
    # "İ" lowers to two characters: the step is still read where it is
    data = journal("İstanbul STEP 7: loss: 0.5", "Iteration #3 loss=2", "prestep 5 epochs: 4 loss: 1")
    assert parsed(data) == [("loss", 0.5, 7), ("loss", 2.0, 3), ("loss", 1.0, 4)]
    bar = "\r".join(f"İ Epoch {s}: {s}/2 loss={s}" for s in (1, 2))
    assert parsed(journal(bar)) == [("loss", 1.0, 1), ("loss", 2.0, 2)]


def test_a_point_s_time_is_its_line_s_stamp_and_stamps_never_match() -> None:
    points = MetricParser({"n": r"(\d+\.\d+)"}).parse(journal("no numbers", "took 2.5 s"), 7)
    assert [(p.value, p.timestamp, p.attempt, p.source) for p in points] == [
        (2.5, dt.datetime(2023, 11, 14, 22, 13, 21, 500000, tzinfo=dt.timezone.utc), 7, "parsed")
    ]


def test_a_pattern_never_reads_across_lines_or_updates() -> None:
    data = journal("loss:", "42 loss: 7", "loss:\r 5")
    assert parsed(data, {"loss": r"loss:\s*(\d+)"}) == [("loss", 7.0, None)]


def test_a_running_attempt_s_unfinished_last_line_waits_until_it_is_whole() -> None:
    data = journal("loss: 0.5") + b"1700000009.0 o loss: 0.2"  # `0.25` may follow
    assert parsed(data, complete=False) == [("loss", 0.5, None)]
    assert parsed(data) == [("loss", 0.5, None), ("loss", 0.2, None)]


def test_a_group_that_is_not_a_number_and_damaged_lines_are_left_out() -> None:
    data = journal("loss: 0.5", "loss: x") + b"garbage without a stamp loss: 3\n\n"
    assert parsed(data, {"loss": r"loss: (\S+)"}) == [("loss", 0.5, None)]


def test_logged_points_keep_nan_and_leave_out_lines_that_are_not_records() -> None:
    from runyard.metrics import logged_points

    data = (
        b'{"time": 1700000000.0, "step": 1, "values": {"loss": 0.5, "bad": null}}\n'
        b"not json\n"
        b'{"time": 1700000001.0, "step": "2", "values": {"loss": 0.4}}\n'  # a step that is not an int
        b'{"time": 1700000002.0, "step": null, "values": {"loss": true, "ok": 3}}\n'
        b'{"time": 1700000003.0, "values": {"loss": 0.1'  # being written
    )
    points = logged_points(data, 2)
    assert [(p.name, p.step, p.attempt) for p in points] == [("loss", 1, 2), ("bad", 1, 2), ("ok", None, 2)]
    assert math.isnan(points[1].value) and points[1].to_json()["value"] is None
    assert points[0].to_json() == {
        "name": "loss", "value": 0.5, "step": 1, "timestamp": "2023-11-14T22:13:20+00:00", "source": "logged",
        "attempt": 2,
    }  # fmt: skip


def test_logged_records_read_alike_whole_or_beside_lines_that_are_not_records() -> None:
    """Each line is a record of its own: lines that are not (a hand-edited file) change
    nothing of what the others give, even lines that make a record together."""
    from runyard.metrics import logged_points

    records = [
        json.dumps(
            {"time": 1700000000.0 + i, "step": i, "values": {"loss": 1 / (i + 1), "acc": i / 10}}
        ).encode()
        for i in range(50)
    ]
    whole = logged_points(b"\n".join(records) + b"\n\n", 1)
    assert len(whole) == 100
    assert [(p.name, p.step) for p in whole[:3]] == [("loss", 0), ("acc", 0), ("loss", 1)]
    odd_lines = [
        [b"not json"], [b"[1"], [b"2]"], [b"\xff"],
        # lines that make records only together, as a JSON array: records they are not
        [b'{"time": 1700000099.0, "values": {"x": [1', b'2], "y": 3}}', b'{"a": 1}, {"b": 2}'],
    ]  # fmt: skip
    for odd in odd_lines:
        lines = [*records[:20], *odd, *records[20:]]
        assert logged_points(b"\n".join(lines), 1) == whole


@pytest.mark.parametrize(
    ("name", "lower"),
    [("loss", True), ("val_loss", True), ("Error_rate", True), ("perplexity", True), ("mse", True),
     ("accuracy", False), ("f1", False), ("reward", False)],
)  # fmt: skip
def test_lower_is_better_for_losses_errors_perplexity_and_mse_only(name, lower) -> None:
    assert lower_is_better(name) is lower


def test_user_patterns_that_start_with_a_look_behind_a_word_boundary_or_a_group_match_as_written() -> None:
    """(Such patterns are searched another way, for speed: the values found are the same.)"""
    patterns = {
        "loss": r"(?<![\w.])loss[:=] ?(\d+\.\d+)",
        "lr": r"\blr=(\d+(?:\.\d+)?)",
        "speed": r"(\d+) tokens/s",
    }
    data = journal(
        "val_loss=9.0 a.loss=9.0 loss=0.5 xlr=9 lr=0.1",
        "step 3 1834 tokens/s, lr=2",
        "no speed here: tokens / s 5",
        "10% | 1/10 [00:01, loss: 0.25]\r20% | 2/10 [00:02, loss: 0.125 12 tokens/s]",
    )
    assert parsed(data, patterns) == [  # (of one line or update, metric by metric: the patterns' order)
        ("loss", 0.5, None), ("lr", 0.1, None), ("lr", 2.0, 3), ("speed", 1834.0, 3), ("loss", 0.25, 1),
        ("loss", 0.125, 2), ("speed", 12.0, 2),
    ]  # fmt: skip


def test_each_line_and_each_update_is_searched_as_a_string_of_its_own() -> None:
    """``^`` and ``$`` are where a line's text (past its stamp) or an update starts and ends."""
    patterns = {"n": r"^(\d+)$", "loss": r"^loss: (\d+)"}
    data = journal("42", "loss: 7 then 8", "a 43", "loss: 1\r44\rloss: 2 x\r45 b")
    assert parsed(data, patterns) == [("n", 42.0, None), ("loss", 7.0, None), ("loss", 1.0, None),
                                      ("n", 44.0, None), ("loss", 2.0, None)]  # fmt: skip


def test_patterns_without_a_literal_or_that_ignore_case_are_searched_everywhere() -> None:
    """(Other patterns are searched only in the lines that hold their literal, for speed.)"""
    patterns = {"any": r"(?i)LOSS=(\d+)", "num": r"(\d+\.\d+)s\b"}
    data = journal("Loss=3 took 2.5s", "nothing", "x loss=4 \r 1.25s \r lOsS=5")
    assert parsed(data, patterns) == [("any", 3.0, None), ("num", 2.5, None), ("any", 4.0, None),
                                      ("num", 1.25, None), ("any", 5.0, None)]  # fmt: skip


def test_several_metrics_of_a_progress_bar_come_update_by_update() -> None:
    bar = "\r".join(f"{s * 33}%|##  | {s}/3 [00:0{s}, acc=0.{s}, loss={s}]" for s in (1, 2, 3))
    patterns = {"loss": r"loss=(\d+)", "acc": r"acc=([\d.]+)"}
    assert parsed(journal(bar), patterns) == [
        ("loss", 1.0, 1), ("acc", 0.1, 1), ("loss", 2.0, 2), ("acc", 0.2, 2), ("loss", 3.0, 3), ("acc", 0.3, 3),
    ]  # fmt: skip


# --------------------------------------------------------- the parser against a plain reading
STEP_WORDS = ("step", "iter", "batch", "epoch")


def plain_step(piece: str) -> int | None:
    """The step rule of the user guide, written plainly."""
    low = piece.lower()
    for word in STEP_WORDS:
        m = re.search(rf"(?<![\w-]){word}(?:ation)?s?[ \t]*[:=#]?[ \t]*(\d+)", low)
        if m:
            return int(m[1])
    m = re.search(r"\|[ \t]*(\d+)/\d+[ \t]*\[", low)
    return int(m[1]) if m else None


def plain_reading(data: bytes, patterns: dict[str, str]) -> list[tuple[str, str, int | None, dt.datetime]]:
    """What the parser must find, read the slow and obvious way: line by line, update by update,
    pattern by pattern, every match whose group is a number."""
    out = []
    for line in data.decode("utf-8", "replace").split("\n"):
        stamp, _, rest = line.partition(" ")
        try:
            when = dt.datetime.fromtimestamp(float(stamp), tz=dt.timezone.utc)
        except ValueError:
            continue
        for piece in rest[2:].split("\r"):
            for name, regex in patterns.items():
                for m in re.finditer(regex, piece):
                    try:
                        out.append((name, repr(float(m[1])), plain_step(piece), when))
                    except ValueError:
                        pass
    return out


def messy_journal(seed: int, lines: int = 500) -> bytes:
    """Training output of every kind: step lines, progress bars (values in every update, in
    some, two in one), metrics that are not `loss`, case and lowering that changes length,
    numbers that are not numbers, CRLF, lines without a stamp, empty lines."""
    rng = random.Random(seed)

    def number() -> str:
        return rng.choice(
            [f"{rng.random():.4f}", f"{rng.randint(0, 9)}", f"{rng.random():.2e}", "-.5", "x", "1.2.3"]
        )

    def update(s: int) -> str:
        return rng.choice([
            f"{s * 10}%|###  | {s}/9 [00:0{s}<00:01, 3.2it/s, loss={number()}]",
            f"Epoch {s}: {s}/9 loss={number()} acc={number()}",
            f"iter {s} loss: {number()} loss: {number()}",
            f"no value {s}", "", f"loss: {number()} tokens/s 12", f"^loss: {number()}", f"{s} ",
        ])  # fmt: skip

    kinds = [
        lambda i: f"step {i}/100 loss: {number()} accuracy={number()}",
        lambda i: f"Epoch 3 | iter {i} | loss={number()} lr={number()}",
        lambda i: "\r".join(update(s) for s in range(1, rng.randint(2, 12))),
        lambda i: "\r".join(  # updates that begin alike, or nearly
            f"{rng.choice(['Epoch', 'epoch'])} {rng.choice(['3', '3', '35'])}: {s}/9 loss={number()}"
            f"{rng.choice(['', '', ' step 7'])}"
            for s in range(1, rng.randint(2, 9))
        ),
        lambda i: f"val_loss: {number()} train.loss: {number()} xloss={number()} reducing loss scale",
        lambda i: f"İstanbul STEP {i}: loss: {number()} grad_norm={number()}",
        lambda i: f"{number()} tokens/s, lr={number()} batch #{i}",
        lambda i: f"loss: {number()}\r",
        lambda i: f"LOSS={number()} Accuracy: {number()}",
        lambda i: f"{i}",
    ]
    parts = []
    for i in range(lines):
        roll = rng.random()
        if roll < 0.05:
            parts.append(f"no stamp here loss: {number()}\n")
        elif roll < 0.08:
            parts.append("\n")
        else:
            parts.append(
                f"{1700000000 + i}.{rng.randint(0, 999999):06d} {rng.choice('oe')} {rng.choice(kinds)(i)}\n"
            )
    return "".join(parts).encode()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "patterns",
    [
        None,
        {"loss": r"(?<![\w.])loss[:=] ?([-+]?\d*\.?\d+(?:e[-+]?\d+)?)", "lr": r"\blr[:=] ?([\d.e-]+)",
         "grad_norm": r"grad_norm[:=] ?(\d*\.?\d+)", "tokens_per_s": r"(\S+) tokens/s"},
        {"start": r"^\^?loss: (\S+)$", "any": r"(?i)loss=(\S+)", "spaced": r"loss:\s*(\d+)", "acc": r"acc=(\S*)",
         "bare": r"^(\d+)\s*$"},
    ],
    ids=["defaults", "user", "anchored-caseless-spaced"],
)  # fmt: skip
def test_the_parser_finds_what_a_plain_reading_finds(seed: int, patterns: dict[str, str] | None) -> None:
    data = messy_journal(seed)
    given = DEFAULT_PATTERNS if patterns is None else patterns
    points = MetricParser(patterns).parse(data, 1)
    assert [(p.name, repr(p.value), p.step, p.timestamp) for p in points] == plain_reading(data, given)
    whole = data[: data.rfind(b"\n", 0, len(data) // 2) + 1]
    cut = whole + b"1700009999.0 o loss: 0.2"  # a line being written
    points = MetricParser(patterns).parse(cut, 1, complete=False)
    assert [(p.name, repr(p.value), p.step, p.timestamp) for p in points] == plain_reading(whole, given)


def test_summaries_give_last_min_max_and_distinct_steps_and_the_best_task_per_metric() -> None:
    from runyard.metrics import best_tasks, summarize

    def points(name: str, *values: tuple[int | None, float]) -> list[MetricPoint]:
        when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        return [
            MetricPoint(name, v, s, when + dt.timedelta(seconds=i), "logged", 1)
            for i, (s, v) in enumerate(values)
        ]

    a = summarize(points("loss", (1, 0.9), (1, 0.9), (2, 0.4), (None, 0.5)) + points("f1", (1, 0.2)))
    b = summarize(
        points("loss", (1, 0.3), (2, math.nan)) + points("f1", (1, 0.7)) + points("perplexity", (1, 9.0))
    )
    c = summarize(points("loss", (1, 0.6)) + points("f1", (1, 0.7)) + points("perplexity", (1, 7.0)))

    assert (a["loss"].last, a["loss"].min, a["loss"].max, a["loss"].steps, a["loss"].points) == (
        0.5,
        0.4,
        0.9,
        3,
        4,
    )
    assert (a["loss"].last_step, b["loss"].min, b["loss"].max) == (None, 0.3, 0.3)  # NaN left out
    assert math.isnan(b["loss"].last) and b["loss"].to_json()["last"] is None
    # b's last loss is NaN: not the best; f1 is higher-better, the first task of a tie wins
    assert best_tasks({"a": a, "b": b, "c": c}) == {"loss": "a", "f1": "b", "perplexity": "c"}


def test_a_metric_pattern_broken_in_the_store_by_hand_is_a_clear_error(in_tmp) -> None:
    exp = run.Experiment("metrics-edited")
    t = exp.add(run.Script(inline="echo loss: 1"), name="t")
    assert exp.run() == "SUCCEEDED"
    with exp.store.write() as db:  # as someone editing runyard.db would
        db.execute("UPDATE experiments SET settings = json_set(settings, '$.metric_patterns', json(?))"
                   " WHERE id = ?", ('{"loss": "loss: \\\\d+"}', exp.id))  # fmt: skip

    with pytest.raises(ConfigError, match=r"^metric_patterns\['loss'\] must have exactly one group"):
        exp.get_metrics(t)
