"""The one-file HTML report (``exp.report(path)``, ``runyard report EXP [-o FILE]``) of
experiments run for real on the local executor: its DOM hooks (a ``data-task`` row per task, a
``data-task`` + ``data-attempt`` mark per attempt in the timeline, an ``<svg data-metric>`` per
metric holding a ``data-task`` line per task that logged it), the DAG, failures, metadata,
artifacts and config versions; every piece of user text escaped; nothing loaded from anywhere;
under 1 MB for 100 tasks. tests/e2e/test_report_browser.py renders it in real Chromium."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys

import pytest
import reporttasks
import runyard as run
from _core_helpers import wait_until
from reportpage import Page, polyline_points
from runyard import report
from runyard.errors import ConfigError

# quotes of both kinds, a tag, a script, an event handler, an entity and a URL: in every piece of
# user text the report shows
HOSTILE = """"'><img src=x onerror=alert(1)><script>alert("pwned")</script>&amp; https://evil.example/x.js"""


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def attempt_marks(page: Page) -> set[tuple[str, int]]:
    return {
        (e.attrs["data-task"], int(e.attrs["data-attempt"]))
        for e in page.find(section="timeline", data_task=..., data_attempt=...)
    }


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """An ended sweep: prep -> train-0 (fails once, then succeeds), train-1 -> evaluate (fails
    twice) -> deploy (never runs: its dependency failed); metadata, an artifact, a config."""
    monkeypatch.chdir(tmp_path)
    exp = run.Experiment("report-sweep", description="a sweep", tags=["demo"], max_retries=1)
    prep = exp.add(run.Script(inline="echo prepared"), name="prep")
    train = exp.add(
        [
            run.Partial(reporttasks.train, steps=4, lr=0.5, fail_first=True),
            run.Partial(reporttasks.train, steps=4, lr=0.2),
        ],
        name="train",
        dependencies=[prep],
    )
    evaluate = exp.add(run.Script(inline="echo scoring; echo no model found >&2; exit 4"), name="evaluate",
                       dependencies=train)  # fmt: skip
    exp.add(run.Script(inline="echo never"), name="deploy", dependencies=[evaluate])
    assert exp.run() == "FAILED"
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    exp.add_artifact("model", str(model), description="the weights")
    exp.add_metadata({"dataset": "wikitext", "seed": 7})
    exp.track_config_version("trainer", {"lr": 0.5, "epochs": 4})
    return exp


# --------------------------------------------------------------------------------- the hooks
def test_a_row_per_task_a_mark_per_attempt_and_a_chart_per_metric_with_a_line_per_task(sweep) -> None:
    exp = sweep
    path = exp.report()

    assert path == os.path.join(exp.directory, "report.html")
    page = Page(read(path))
    tasks = exp.tasks
    rows = [e.attrs["data-task"] for e in page.find("tr", data_task=...)]
    assert rows == [t.id for t in tasks]  # each once, in the order added, all in the task table
    assert {e.section for e in page.find("tr", data_task=...)} == {"tasks"}

    expected = {(t.id, a.attempt) for t in tasks for a in exp.attempts(t.id)}
    assert ("train-0", 2) in expected and ("evaluate", 2) in expected  # retries are attempts of their own
    assert attempt_marks(page) == expected
    marks = page.find(section="timeline", data_task=..., data_attempt=...)
    assert len(marks) == len(expected)

    metrics = exp.get_all_metrics()
    names = {p.name for points in metrics.values() for p in points}
    assert names == {"loss", "accuracy"}
    charts = page.find("svg", data_metric=...)
    assert sorted(c.attrs["data-metric"] for c in charts) == sorted(names)
    for name in names:
        lines = [e for e in page.elements if e.metric == name and "data-task" in e.attrs]
        assert sorted(e.attrs["data-task"] for e in lines) == ["train-0", "train-1"]
        for line in lines:
            task_points = [p for p in metrics[line.attrs["data-task"]] if p.name == name]
            assert int(line.attrs["data-points"]) == len(task_points)
        polylines = [e for e in page.elements if e.metric == name and e.tag == "polyline"]
        # train-0: its failed first attempt (2 points, dashed) and the second (4 points); train-1: 4
        assert sorted(len(polyline_points(p.attrs["points"])) for p in polylines) == [2, 4, 4]
        assert [p.attrs.get("class") for p in polylines].count("earlier") == 1


def test_the_timeline_dag_and_failures_say_how_each_attempt_ended(sweep) -> None:
    page = Page(read(sweep.report()))
    bars = {(e.attrs["data-task"], e.attrs["data-attempt"]): e for e in page.find("rect", section="timeline",
                                                                                 data_task=...)}  # fmt: skip
    error, succeeded = report.OUTCOME_COLOURS["error"], report.OUTCOME_COLOURS["SUCCEEDED"]

    assert {k: bar.attrs["fill"] for k, bar in bars.items()} == {
        ("prep", "1"): succeeded, ("train-0", "1"): error, ("train-0", "2"): succeeded,
        ("train-1", "1"): succeeded, ("evaluate", "1"): error, ("evaluate", "2"): error,
    }  # fmt: skip
    timeline = page.section_text["timeline"]
    assert "train-0 · attempt 1 · error · " in timeline and "exit 3" in timeline  # the bar's tooltip
    assert "dependency failed" in timeline  # deploy's row: it never ran
    legend = page.find("span", section="timeline", class_="key")
    assert len(legend) == 2 and "error" in timeline and "succeeded" in timeline

    assert [e.attrs["data-node"] for e in page.find("g", section="dag", data_node=...)] == [
        "prep", "train-0", "train-1", "evaluate", "deploy",
    ]  # fmt: skip
    assert (
        len(page.find("path", section="dag", class_="edge")) == 5
    )  # prep->train x2, train->evaluate x2, ->deploy

    failures = page.section_text["failures"]
    assert "train-0 attempt 1: error (exit 3)" in failures
    assert "evaluate attempt 2: error (exit 4)" in failures and "no model found" in failures  # its output
    assert "deploy never ran: dependency failed" in failures
    assert "out of luck" in failures  # the output of the failed attempt, though the task succeeded later

    assert "wikitext" in page.section_text["metadata"]
    artifacts = page.section_text["artifacts"]
    assert (
        "the weights" in artifacts
        and hashlib.sha256(b"weights").hexdigest() in artifacts
        and "7 B" in artifacts
    )
    header = "".join(e for k, e in page.section_text.items() if k is None)
    assert "a sweep" in header and "demo" in header and "FAILED" in header


# ----------------------------------------------------------------------------------- escaping
def test_every_piece_of_user_text_is_shown_as_text_never_as_markup(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exp = run.Experiment("report-hostile", description=HOSTILE, tags=[HOSTILE], metadata={HOSTILE: HOSTILE})
    bad = exp.add(run.Partial(reporttasks.hostile, text=HOSTILE), name="bad")
    assert exp.run() == "FAILED"
    assert HOSTILE in (exp.tasks[0].reason or "")  # the exception's text is the task's reason
    artifact = tmp_path / "a.txt"
    artifact.write_text("x")
    exp.add_artifact("a", str(artifact), description=HOSTILE)
    exp.track_config_version("cfg", {HOSTILE: HOSTILE}, description=HOSTILE)
    exp.track_config_version("cfg", {HOSTILE: HOSTILE + "!"}, description=HOSTILE)

    html_text = read(exp.report(str(tmp_path / "r.html")))
    page = Page(html_text)

    assert page.scripts == [report.SCRIPT]  # the report's own script, and no other
    assert [e.tag for e in page.elements if e.tag in ("script", "img", "iframe", "object", "embed")] == [
        "script"
    ]
    assert not [(e.tag, k) for e in page.elements for k in e.attrs if k.startswith("on")]
    # shown as text where a user would look for it: description, tag, metadata key and value,
    # metric name, the task's reason and its output, the artifact's and the config's description
    assert page.text.count(HOSTILE) >= 10
    assert [c.attrs["data-metric"] for c in page.find("svg", data_metric=...)] == [HOSTILE]
    assert [
        e.attrs["data-task"] for e in page.elements if e.metric == HOSTILE and "data-task" in e.attrs
    ] == [bad]
    assert "<script>alert" not in html_text and "<img" not in html_text


def test_nothing_in_the_report_is_loaded_from_anywhere(sweep) -> None:
    html_text = read(sweep.report())
    page = Page(html_text)

    references = [(e.tag, k, v) for e in page.elements for k, v in e.attrs.items()
                  if k in ("src", "href", "xlink:href", "action", "data", "poster", "srcset")]  # fmt: skip
    assert references and all(v.startswith("#") for _, _, v in references)  # in-page links only
    assert [u for u in re.findall(r"url\(([^)]*)\)", html_text) if not u.startswith("#")] == []
    assert "@import" not in html_text and "@font-face" not in html_text
    assert not page.find("link") and not page.find("img") and not page.find("iframe")
    (csp,) = [e.attrs["content"] for e in page.find("meta", http_equiv="Content-Security-Policy")]
    assert "default-src 'none'" in csp  # the browser itself refuses any fetch
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp  # only that script may run


# ---------------------------------------------------------------------------------------- size
@pytest.mark.slow
def test_a_report_of_100_tasks_with_retries_and_metrics_is_under_1_MB(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exp = run.Experiment("report-100", max_retries=1)
    first = exp.add(run.Script(inline="echo ready"), name="prep")
    exp.add(
        [
            run.Partial(reporttasks.train, steps=200, lr=0.01 + i / 200, fail_first=i % 10 == 0)
            for i in range(99)
        ],
        name="train",
        dependencies=[first],
    )
    assert exp.run() == "SUCCEEDED"

    path = exp.report()

    size = os.path.getsize(path)
    assert size < 1_000_000, f"the report of 100 tasks is {size} bytes"
    page = Page(read(path))
    assert len(page.find("tr", data_task=...)) == 100
    assert len(attempt_marks(page)) == 110
    for chart in page.find("svg", data_metric=...):
        assert (
            len(
                [
                    e
                    for e in page.elements
                    if e.metric == chart.attrs["data-metric"] and "data-task" in e.attrs
                ]
            )
            == 99
        )


# ------------------------------------------------------------------------------ small and empty
def test_an_experiment_without_tasks_and_one_never_launched_have_reports_too(tmp_path) -> None:
    empty = run.Experiment("report-empty")
    page = Page(read(empty.report(str(tmp_path / "empty.html"))))
    assert "This experiment has no tasks." in page.text
    assert not page.find(data_task=...) and not page.find("svg", data_metric=...)
    assert "CREATED" in page.text and "No metrics" in page.text

    waiting = run.Experiment("report-waiting")
    ids = waiting.add([run.Script(inline="echo a"), run.Script(inline="echo b")], name="job")
    page = Page(read(waiting.report(str(tmp_path / "waiting.html"))))
    assert [e.attrs["data-task"] for e in page.find("tr", data_task=...)] == ids
    assert attempt_marks(page) == set()
    assert "No task has run yet." in page.text and "CREATED" in page.text


def test_a_running_attempt_is_a_live_bar_that_ends_at_the_time_of_the_report(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exp = run.Experiment("report-live")
    t = exp.add(run.Script(inline="echo started; sleep 60"), name="slow")
    exp.run(detach=True)
    wait_until(lambda: exp.tasks[0].status == "RUNNING", what="the task runs")

    page = Page(read(exp.report()))

    (bar,) = page.find("rect", section="timeline", data_task=t, data_attempt="1")
    assert bar.attrs["class"] == "bar live"
    assert float(bar.attrs["width"]) > 0
    exp.cancel(t)


# ------------------------------------------------------------------------------ config versions
def test_config_versions_show_what_changed_since_the_version_before(tmp_path) -> None:
    exp = run.Experiment("report-configs")
    exp.track_config_version("trainer", run.Config(reporttasks.train, lr=0.1, steps=5), "first")
    exp.track_config_version("trainer", run.Config(reporttasks.train, lr=0.01, fail_first=True), "smaller lr")
    exp.track_config_version("trainer", run.Config(reporttasks.train, lr=0.01, fail_first=True))

    page = Page(read(exp.report(str(tmp_path / "r.html"))))

    deleted = [e for e in page.elements if e.section == "configs" and e.tag == "del"]
    inserted = [e for e in page.elements if e.section == "configs" and e.tag == "ins"]
    assert len(deleted) == 2 and len(inserted) == 2  # lr changed, steps removed, fail_first added
    assert "first" in page.text and "smaller lr" in page.text and "no change" in page.text
    assert "reporttasks:train" in page.text  # the target of version 1


def test_config_changes_name_each_path_that_changed() -> None:
    old = {"__runyard__": "config", "target": "m:f", "args": [1], "kwargs": {"lr": 0.1, "opt": {"b": [1, 2]}}}
    new = {"__runyard__": "config", "target": "m:g", "args": [1], "kwargs": {"opt": {"b": [1, 3]}, "x": None}}
    assert report.config_changes(old, new) == [
        ("(target)", "m:f", "m:g"), ("lr", "0.1", None), ("opt.b[1]", "2", "3"), ("x", None, "null"),
    ]  # fmt: skip
    assert report.config_changes({"a": [1]}, {"a": [1]}) == []


# --------------------------------------------------------------------------------- where it goes
def test_the_report_path_a_folder_is_refused_and_a_file_is_replaced_whole(tmp_path) -> None:
    exp = run.Experiment("report-paths")
    with pytest.raises(ConfigError, match=r"^cannot write the report to '.*': it is not a regular file"):
        exp.report(str(tmp_path))
    target = tmp_path / "sub" / "r.html"
    target.parent.mkdir()
    target.write_text("old " * 100_000)
    assert exp.report(str(target)) == str(target)
    assert read(str(target)).startswith("<!DOCTYPE html>") and os.listdir(target.parent) == ["r.html"]


def runyard_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard", *args], capture_output=True, text=True, timeout=120
    )


def test_runyard_report_prints_the_path_written_and_says_what_was_wrong_in_one_line(tmp_path) -> None:
    exp = run.Experiment("report-cli")
    exp.add(run.Script(inline="echo hi"), name="hi")

    done = runyard_cli("report", exp.id)
    assert done.returncode == 0, done.stderr
    assert done.stdout == os.path.join(exp.directory, "report.html") + "\n"
    assert Page(read(done.stdout.strip())).find("tr", data_task="hi")

    out = tmp_path / "mine.html"
    done = runyard_cli("report", "report-cli", "-o", str(out))  # by title too
    assert (done.returncode, done.stdout) == (0, f"{out}\n")

    for args, message in [
        (
            ("report", exp.id, "-o", str(tmp_path)),
            f"cannot write the report to '{tmp_path}': it is not a regular file",
        ),
        (("report", exp.id, "-o", "/dev/null/r.html"), "cannot write the report to '/dev/null/r.html': "),
        (("report", "no-such-experiment"), "no experiment with id or title 'no-such-experiment'"),
    ]:
        done = runyard_cli(*args)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.startswith(f"runyard: error: {message}") and done.stderr.count("\n") == 1, (
            done.stderr
        )
