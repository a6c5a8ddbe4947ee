"""The live view of an attached run on a real pseudo-terminal of a fixed size, read as the
screen a VT100-style terminal shows (tests/e2e/_terminal.py): training output (progress bars,
wide characters, colour codes), long titles, NO_COLOR, a resize, many tasks, and Ctrl+C.

Each task holds on until the test opens its gate (a file), so the test looks at the view
while the task runs, over as many redraws as it wants, with no timing in the assertions."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from _terminal import SGR, Terminal, cut_escapes, terminal_env

HEAD = """\
import runyard as run
import livetasks
import taskdefs

GATE = {gate!r}
exp = run.Experiment({title!r})
"""


def _start(
    tmp_path: Path, body: str, *, columns: int = 80, lines: int = 24, title: str = "live", **env: str
) -> Terminal:
    script = tmp_path / "attached.py"
    script.write_text(HEAD.format(gate=str(tmp_path / "gate"), title=title) + body + "exp.run()\n")
    return Terminal(
        [sys.executable, str(script)], columns=columns, lines=lines, cwd=tmp_path, env=terminal_env(**env)
    )


def _open_gate(tmp_path: Path) -> None:
    (tmp_path / "gate").touch()


def _rows(screen: list[str], task_id: str) -> list[str]:
    return [row for row in screen if row.split(maxsplit=1)[:1] == [task_id]]


def _row(screen: list[str], task_id: str) -> str:
    rows = _rows(screen, task_id)
    assert len(rows) == 1, f"{task_id}: {len(rows)} rows on the screen:\n" + "\n".join(screen)
    return rows[0]


def _redraws(term: Terminal, marker: bytes, count: int = 5) -> None:
    """Wait until the view was drawn ``count`` times with ``marker`` in it."""
    term.wait_for(lambda _: term.output.count(marker) >= count, f"{count} redraws showing {marker!r}")


def test_a_progress_bar_shows_while_it_runs_and_never_overwrites_other_rows(tmp_path: Path) -> None:
    body = (
        'exp.add(run.Config(livetasks.progress_bar, GATE), name="bar")\n'
        'exp.add(run.Config(livetasks.print_then_wait, "steady output", GATE), name="steady")\n'
    )
    with _start(tmp_path, body) as term:
        running = term.wait_for(
            lambda s: "5/10" in "".join(_rows(s, "bar")) and "steady output" in "".join(_rows(s, "steady")),
            "the bar's latest state (5/10) while it runs",
        )
        assert "RUNNING" in _row(running, "bar") and " 50%|#####     | 5/10" in _row(running, "bar")
        _open_gate(tmp_path)
        assert term.wait() == 0
        screen = term.screen

    assert "SUCCEEDED" in _row(screen, "bar") and "100%|##########| 10/10" in _row(screen, "bar")
    assert "SUCCEEDED" in _row(screen, "steady") and "steady output" in _row(screen, "steady")
    assert all(row.split()[0] == "bar" for row in screen if "%|" in row), screen  # no row overwritten


def test_an_experiment_id_wider_than_the_terminal_leaves_no_ghost_header_lines(tmp_path: Path) -> None:
    title = "a-forty-seven-character-title-for-a-long-sweeps"
    assert len(title) == 47
    body = 'exp.add(run.Config(livetasks.print_then_wait, "working", GATE), name="job")\n'
    with _start(tmp_path, body, columns=80, title=title) as term:
        _redraws(term, b"working")  # each redraw of the old view left one line behind
        during = term.screen
        _open_gate(tmp_path)
        assert term.wait() == 0
        final = term.screen

    for screen in (during, final):
        headers = [row for row in screen if title[:20] in row and not row.startswith("experiment ")]
        assert len(headers) == 1, "\n".join(screen)
        assert "1 RUNNING" in headers[0] if screen is during else "1/1 ended" in headers[0]  # the counts stay
        _row(screen, "job")
    assert any(row.startswith("experiment ") and title[:20] in row for row in final)


def test_cjk_and_emoji_lines_are_cut_by_display_width(tmp_path: Path) -> None:
    body = (
        'exp.add(run.Config(livetasks.print_then_wait, "训练中 " + "数据集加载完成模型正在训练" * 8, GATE), name="cjk")\n'
        'exp.add(run.Config(livetasks.print_then_wait, "🚀 training " + "🔥" * 60, GATE), name="emoji")\n'
        'exp.add(run.Config(livetasks.print_then_wait, "plain", GATE), name="ascii")\n'
    )
    with _start(tmp_path, body, columns=60) as term:
        term.wait_for(
            lambda s: "训练中" in "".join(_rows(s, "cjk")) and "🚀" in "".join(_rows(s, "emoji")),
            "wide lines",
        )
        _redraws(term, b"plain")
        during = term.screen
        _open_gate(tmp_path)
        assert term.wait() == 0
        final = term.screen

    for screen in (during, final):
        assert len([row for row in screen if "_live" in row and not row.startswith("experiment ")]) == 1, (
            screen
        )
        for task_id in ("cjk", "emoji", "ascii"):
            _row(screen, task_id)  # one row each: none wrapped onto the next line
        assert _row(screen, "cjk").endswith("…") and _row(screen, "emoji").endswith("…")
    assert "plain" in _row(final, "ascii") and "SUCCEEDED" in _row(final, "ascii")


def test_task_colour_codes_are_never_cut_mid_sequence(tmp_path: Path) -> None:
    body = (
        'colours = "".join(f"\\x1b[3{i % 7 + 1}m#{i}\\x1b[0m" for i in range(200))\n'
        'exp.add(run.Config(livetasks.print_then_wait, colours, GATE), name="colourful")\n'
        'exp.add(run.Config(livetasks.print_then_wait, "plain text", GATE), name="after")\n'
    )
    with _start(tmp_path, body, columns=80) as term:
        during = term.wait_for(lambda s: "#0#1#2" in "".join(_rows(s, "colourful")), "the coloured line")
        _redraws(term, b"plain text")
        _open_gate(tmp_path)
        assert term.wait() == 0
        output, screen = term.output, term.screen
        row = screen.index(_row(screen, "colourful"))
        after = screen.index(_row(screen, "after"))
        colours, plain = term.colours(row), term.colours(after)

    assert cut_escapes(output) == []
    assert _row(screen, "colourful").endswith("…") and "#0#1#2" in _row(during, "colourful")
    text_at = _row(screen, "colourful").index("#0")
    assert {"red", "green", "brown", "blue"} <= set(colours[text_at:])  # the task's colours, shown
    assert set(plain[_row(screen, "after").index("plain text") :]) == {"default"}  # and not leaking


def test_no_color_gives_no_colour_escapes_at_all(tmp_path: Path) -> None:
    body = (
        'exp.add(run.Config(livetasks.print_then_wait, "\\x1b[31mred\\x1b[0m text", GATE), name="tinted")\n'
    )
    with _start(tmp_path, body, NO_COLOR="1") as term:
        term.wait_for(lambda s: "red text" in "".join(_rows(s, "tinted")), "the task's line")
        _open_gate(tmp_path)
        assert term.wait() == 0
        output, screen = term.output, term.screen

    assert SGR.search(output) is None, SGR.findall(output)[:5]
    assert "SUCCEEDED" in _row(screen, "tinted") and "red text" in _row(screen, "tinted")


def test_a_terminal_resize_is_honoured(tmp_path: Path) -> None:
    """COLUMNS and LINES, exported when the run started, are not what the window is after a resize."""
    body = 'exp.add(run.Config(livetasks.print_then_wait, "0123456789" * 20, GATE), name="wide")\n'
    with _start(tmp_path, body, columns=100, COLUMNS="100", LINES="24") as term:
        wide = term.wait_for(lambda s: "0123456789" in "".join(_rows(s, "wide")), "the task's line")
        assert len(_row(wide, "wide")) == 100 and _row(wide, "wide").endswith("…")
        term.resize(60, 24)
        narrow = term.wait_for(
            lambda s: [r for r in _rows(s, "wide") if len(r) <= 60 and r.endswith("…")],
            "a redraw 60 columns wide",
        )
        _open_gate(tmp_path)
        assert term.wait() == 0
        final = term.screen

    for screen in (narrow, final):
        header = [row for row in screen if "_live" in row and not row.startswith("experiment ")]
        assert len(header) == 1 and ("1 RUNNING" in header[0] or "1 SUCCEEDED" in header[0]), screen
        assert len(_row(screen, "wide")) <= 60 and _row(screen, "wide").endswith("…")


def test_many_tasks_stay_within_the_terminal_height_the_rest_summed_up(tmp_path: Path) -> None:
    body = (
        'first = exp.add(run.Config(livetasks.print_then_wait, "first at work", GATE), name="first")\n'
        'exp.add([run.Config(taskdefs.add, i) for i in range(20)], name="next", dependencies=[first])\n'
    )
    with _start(tmp_path, body, columns=80, lines=10) as term:
        term.wait_for(lambda s: any("more:" in row for row in s), "the summary line")
        _redraws(term, b"first at work")
        waiting = term.screen
        _open_gate(tmp_path)
        assert term.wait() == 0
        final = term.screen

    assert "RUNNING" in _row(waiting, "first")  # live tasks first, then the next up
    pending = [row for row in waiting if row.lstrip().startswith("next-")]
    assert len(pending) == 6 and all("PENDING" in r and "waiting for first" in r for r in pending), waiting
    assert "... and 14 more: 14 PENDING" in waiting
    assert len([row for row in waiting if row]) <= 9  # header, 7 rows, summary: within 10 lines
    assert "... and 14 more: 14 SUCCEEDED" in final
    assert sum("SUCCEEDED" in row for row in final if row.lstrip().startswith(("next-", "first "))) == 7


def test_after_ctrl_c_the_screen_shows_the_cancelled_tasks_and_no_traceback(tmp_path: Path) -> None:
    body = 'exp.add([run.Config(taskdefs.sleep_then_print, 60, "slept") for _ in range(2)], name="sleeper")\n'
    with _start(tmp_path, body) as term:
        term.wait_for(
            lambda s: sum("RUNNING" in row for row in s if row.lstrip().startswith("sleeper-")) == 2,
            "both to run",
        )
        term.proc.send_signal(signal.SIGINT)
        code = term.wait(timeout=60)
        output, screen = term.output, term.screen

    assert code != 0
    assert "CANCELLED" in _row(screen, "sleeper-0") and "CANCELLED" in _row(screen, "sleeper-1")
    assert "cancelled (interrupted)" in _row(screen, "sleeper-0")
    assert not [row for row in screen if "RUNNING" in row], screen
    assert any(row.startswith("interrupted: cancelled the tasks of ") for row in screen)
    assert b"Traceback" not in output and b"KeyboardInterrupt" not in output


def test_tail_logs_on_a_terminal_prints_task_lines_above_the_view(tmp_path: Path) -> None:
    script = tmp_path / "tail.py"
    script.write_text(
        "import runyard as run\n"
        'exp = run.Experiment("tail")\n'
        'exp.add(run.Script(inline="echo one; printf \'\\\\r 50%%\\\\r100%%\\\\n\'; echo two"), name="talker")\n'
        "exp.run(tail_logs=True)\n"
    )
    with Terminal([sys.executable, str(script)], columns=80, lines=24, cwd=tmp_path) as term:
        assert term.wait() == 0
        screen = term.screen

    lines = [row for row in screen if row.startswith("talker: ")]
    assert lines == ["talker: one", "talker: 100%", "talker: two"], screen
    assert screen.index(lines[-1]) < screen.index(_row(screen, "talker"))
