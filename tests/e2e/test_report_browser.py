"""The HTML report in a real browser: Debian's chromium, headless (fixture ``chromium``; a fresh
profile per run). The DOM after the page's script ran (``--dump-dom``) holds every hook with
its points; the page logs nothing to the console (chromium's ``--enable-logging=stderr`` prints
each console message as a ``CONSOLE`` line, and the report's own error trap would write a
``data-js-error`` attribute); a screenshot shows the report, not a blank page."""

from __future__ import annotations

import collections
import os

import pytest
import reporttasks
import runyard as run
from reportpage import Page, png_pixels, polyline_points
from runyard import report

LOGGING = ("--enable-logging=stderr", "--v=0")


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture
def ended_sweep(tmp_path, monkeypatch):
    """A sweep run for real: two training tasks (one fails its first attempt), a failing one."""
    monkeypatch.chdir(tmp_path)
    exp = run.Experiment("browser-sweep", description="rendered by chromium", max_retries=1)
    ids = exp.add(
        [
            run.Partial(reporttasks.train, steps=6, lr=0.4, fail_first=True),
            run.Partial(reporttasks.train, steps=6, lr=0.2),
        ],
        name="train",
    )
    exp.add(run.Script(inline="echo bad >&2; exit 2"), name="evaluate", dependencies=ids)
    assert exp.run() == "FAILED"
    return exp


def test_the_rendered_dom_has_every_hook_with_points_and_the_console_stays_silent(
    chromium, ended_sweep, tmp_path
) -> None:
    exp = ended_sweep
    path = exp.report()

    done = chromium.run(str(tmp_path / "profile"), *LOGGING, "--dump-dom", f"file://{path}")

    assert done.returncode == 0, done.stderr[-2000:]
    assert console_lines(done.stderr) == []
    page = Page(done.stdout)
    (root,) = page.find("html")
    assert "data-js-error" not in root.attrs  # the page's own script ran without an error
    assert [e.attrs["data-task"] for e in page.find("tr", data_task=...)] == [t.id for t in exp.tasks]
    marks = {(e.attrs["data-task"], int(e.attrs["data-attempt"])) for e in page.find(data_attempt=...)}
    assert marks == {(t.id, a.attempt) for t in exp.tasks for a in exp.attempts(t.id)}
    assert len(marks) == 5
    charts = {c.attrs["data-metric"] for c in page.find("svg", data_metric=...)}
    assert charts == {"loss", "accuracy"}
    for name in charts:
        lines = collections.Counter(e.attrs["data-task"] for e in page.elements
                                    if e.metric == name and "data-task" in e.attrs)  # fmt: skip
        assert lines == {"train-0": 1, "train-1": 1}
        points = [
            len(polyline_points(e.attrs["points"]))
            for e in page.elements
            if e.metric == name and e.tag == "polyline"
        ]
        assert sorted(points) == [2, 6, 6]  # train-0's two attempts, train-1's one
        assert len([e for e in page.elements if e.metric == name and e.tag == "circle"]) == 14


def test_the_console_check_sees_what_the_report_would_do_wrong(chromium, ended_sweep, tmp_path) -> None:
    """The control for the test above: a request to the network (an image a user's text might
    smuggle in, were it not escaped) is refused by the report's Content-Security-Policy, and the
    browser says so on the console; a script error lands in the page's data-js-error."""
    with open(ended_sweep.report(), encoding="utf-8") as f:
        text = f.read()
    broken = tmp_path / "broken.html"
    broken.write_text(
        text.replace("<main", '<img src="https://example.invalid/x.png"><main').replace(
            report.SCRIPT, report.SCRIPT + "\nnoSuchFunction();"
        ),
        encoding="utf-8",
    )

    done = chromium.run(str(tmp_path / "profile"), *LOGGING, "--dump-dom", f"file://{broken}")

    assert done.returncode == 0, done.stderr[-2000:]
    said = "\n".join(console_lines(done.stderr))
    assert "Content Security Policy" in said and "example.invalid" in said
    # the changed script no longer has the hash the policy allows: it does not run at all
    assert "Executing inline script violates" in said or "Refused to execute inline script" in said


def test_a_screenshot_shows_the_report_in_its_colours(chromium, ended_sweep, tmp_path) -> None:
    shot = tmp_path / "report.png"

    done = chromium.run(
        str(tmp_path / "profile"),
        "--window-size=1000,1400",
        f"--screenshot={shot}",
        f"file://{ended_sweep.report()}",
    )

    assert done.returncode == 0, done.stderr[-2000:]
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 1400)
    colours = collections.Counter(pixels)
    most = colours.most_common(1)[0][1]
    assert most < 0.9 * len(pixels)  # not one colour all over
    assert len(colours) > 200  # text, lines, badges: many colours, anti-aliased
    for hex_colour in (report.OUTCOME_COLOURS["SUCCEEDED"], report.OUTCOME_COLOURS["error"]):
        rgb = bytes.fromhex(hex_colour[1:])
        assert colours[rgb] > 50, f"no {hex_colour} timeline bar on the screenshot"


def test_an_experiment_with_nothing_in_it_renders_without_a_word_on_the_console(chromium, tmp_path) -> None:
    path = run.Experiment("browser-empty").report(os.fspath(tmp_path / "empty.html"))

    done = chromium.run(str(tmp_path / "profile"), *LOGGING, "--dump-dom", f"file://{path}")

    assert done.returncode == 0 and console_lines(done.stderr) == []
    page = Page(done.stdout)
    assert "This experiment has no tasks." in page.text and "data-js-error" not in page.find("html")[0].attrs
