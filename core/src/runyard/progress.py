"""What an attached run shows: a live view on a terminal, plain lines otherwise.

On a terminal (:class:`TerminalObserver`, drawn with rich): a header (the experiment, how many
tasks are in each state, the time since launch) and one row per task: its state, attempt,
elapsed time, and why it waits (a PENDING task's reason) or its last output line (the text
after the last ``\\r``, so a progress bar shows as it moves). Redrawn in place at most every
0.2 s, within the terminal's width and height (what does not fit is summed up in one line);
``NO_COLOR`` gives no colour at all. rich is imported only when such a view is built.
Elsewhere (a pipe, CI logs, ``RUNYARD_PLAIN=1``, ``TERM=dumb``): one line per state change.
With ``tail_logs``, task output is printed as it comes, each line prefixed by its task name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runyard.errors import RunyardError
from runyard.jobfiles import JOURNAL
from runyard.logs import parse_journal
from runyard.states import FINAL_STATES, LIVE_STATES, State
from runyard.store import TaskRecord

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from runyard.engine import Engine

REDRAW_EVERY = 0.2  # seconds between two redraws at most (state changes wait this long at most)
IDLE_REDRAW = 0.5  # seconds between two redraws when no state changed (clocks, last lines)
LINE_CAP = 4096  # bytes of an output line kept for the view (it shows one terminal line of it)
STYLES = {
    State.PENDING: "dim", State.SUBMITTED: "blue", State.RUNNING: "cyan", State.PAUSED: "magenta",
    State.SUCCEEDED: "green", State.FAILED: "red", State.CANCELLED: "yellow",
}  # fmt: skip
HEADER_ORDER = [State.RUNNING, State.SUBMITTED, State.PAUSED, State.PENDING, *sorted(FINAL_STATES)]
# which tasks get a row when not all fit: live ones first, then failures, next up, successes
# (each state's tasks in the order they reached it: True = the latest first)
ROW_PRIORITY = [
    (State.RUNNING, False), (State.SUBMITTED, False), (State.PAUSED, False), (State.FAILED, True),
    (State.CANCELLED, True), (State.PENDING, False), (State.SUCCEEDED, True),
]  # fmt: skip
# control characters a cell must not hold (a tab is a space); escapes: only whole colour codes
_CONTROLS: dict[int, str | None] = {
    c: None for c in [*range(0x1B), *range(0x1C, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
}
_CONTROLS[ord("\t")] = " "
_NO_ESCAPES = {**_CONTROLS, 0x1B: None}
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -~]?)")


class LogFollower:
    """Reads new journal lines of live tasks, by offset, through their task handles."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.offsets: dict[tuple[str, int], int] = {}

    def new_lines(self, task: TaskRecord) -> list[tuple[str, str]]:
        if task.attempts == 0:
            return []
        key = (task.id, task.attempts)
        offset = self.offsets.get(key, 0)
        data = self.engine.handle(task).read_log(JOURNAL, offset=offset)
        entries, used = parse_journal(data)
        self.offsets[key] = offset + used
        return [(e.stream, e.message) for e in entries]


def _elapsed(task: TaskRecord) -> str:
    if task.start_time is None:
        return "-"
    return _clock((task.end_time or time.time()) - task.start_time)


def _clock(seconds: float) -> str:
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class PlainObserver:
    """One line per state change; tailed output prefixed by task name."""

    def __init__(self, engine: Engine, tail_logs: bool, out: TextIO) -> None:
        self.engine, self.tail_logs, self.out = engine, tail_logs, out
        self.follower = LogFollower(engine) if tail_logs else None
        self.width = 0

    def wants_tick(self) -> float | None:
        return 0.2 if self.tail_logs else None

    def _tail(self, tasks: Sequence[TaskRecord], changed: Sequence[TaskRecord]) -> None:
        if self.follower is None:
            return
        changed_ids = {c.id for c in changed}
        for task in tasks:  # live tasks, and those that just ended (their last lines)
            if task.attempts and (task.status not in FINAL_STATES or task.id in changed_ids):
                for _stream, line in self.follower.new_lines(task):
                    self.emit_log(task.id, line)

    def emit_log(self, name: str, line: str) -> None:
        self.out.write(f"{name}: {line}\n")

    def update(self, tasks: Sequence[TaskRecord], changed: Sequence[TaskRecord]) -> None:
        # (the widest id of all, first; then of what changed: a turn costs what changed)
        self.width = max([self.width, *(len(t.id) for t in (changed if self.width else tasks))])
        self._tail(tasks, changed)
        for task in changed:
            self.out.write(self.describe(task) + "\n")
        self.out.flush()

    def describe(self, task: TaskRecord) -> str:
        line = f"{time.strftime('%H:%M:%S')} {task.id:<{self.width}} {task.status}"
        if task.attempts > 1:
            line += f" (attempt {task.attempts})"
        if task.status in FINAL_STATES:
            line += f" after {_elapsed(task)}" if task.start_time else ""
            if task.exit_code not in (None, 0):
                line += f", exit code {task.exit_code}"
        if task.reason and task.status is not State.SUCCEEDED:
            line += f": {task.reason}"
        return line

    def say(self, message: str) -> None:
        self.out.write(message + "\n")
        self.out.flush()

    def interrupted(self, tasks: Sequence[TaskRecord], message: str) -> None:
        """Ctrl+C was dealt with (``message`` says how); ``tasks`` are as it left them."""
        self.say(message)

    def finish(self, state: State) -> None:
        self.say(f"experiment {self.engine.experiment_id}: {state}")

    def close(self) -> None:
        """The run is over, however it ended (the terminal is given back)."""


class _Stream:
    """The line one output stream shows, from its raw log (read by offset): the line it has
    open (a progress bar redrawn with ``\\r``), else its last complete line."""

    __slots__ = ("done", "offset", "open", "stamp")

    def __init__(self) -> None:
        self.offset, self.stamp = 0, 0
        self.open = self.done = b""

    def feed(self, data: bytes, stamp: int) -> None:
        self.offset += len(data)
        self.stamp = stamp
        data = self.open + data
        if b"\n" in data:
            head, _, data = data.rpartition(b"\n")
            self.done = _latest(head[head.rfind(b"\n") + 1 :])
        self.open = _latest(data)

    def shown(self) -> str:
        return _segment(self.open) or _segment(self.done)


def _latest(line: bytes) -> bytes:
    """``line`` from its last ``\\r`` that some text follows (a progress bar's latest state;
    what follows it is kept: the next bytes may go on from there), at most LINE_CAP bytes."""
    end = len(line)
    while (cut := line.rfind(b"\r", 0, end)) >= 0 and not line[cut + 1 : end].strip():
        end = cut
    return line[max(cut, 0) :][:LINE_CAP]


def _segment(line: bytes) -> str:
    return _piece(line.decode("utf-8", "replace"))


def _piece(line: str) -> str:
    """What a terminal would show of ``line``: its last ``\\r``-separated piece with text."""
    for piece in reversed(line.split("\r")):
        if piece.strip():
            return piece.rstrip()
    return ""


def _colours(line: str) -> str:
    """``line`` with its colour codes (SGR, for rich to read) and no other escape or control
    character (a cursor movement, a code cut short, a lone ESC would reach the terminal)."""
    line = _ESCAPE.sub(lambda m: m.group() if m.group()[1:2] == "[" and m.group()[-1] == "m" else "", line)
    return line.translate(_CONTROLS)


@contextlib.contextmanager
def _whole() -> Iterator[None]:
    """Ctrl+C waits until what is being written to the terminal is written whole (it is raised
    right after, as usual): a redraw cut short would leave the screen in pieces."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _terminal_size(out: TextIO) -> tuple[int, int]:
    """The terminal's (columns, lines) now: asked of the terminal itself (COLUMNS and LINES in
    the environment are not updated when the window is resized), else of the environment."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (AttributeError, ValueError, OSError):
        size = shutil.get_terminal_size()
    return size.columns or 80, size.lines or 24


class TerminalObserver(PlainObserver):
    """The live view (rich's ``Live``), redrawn in place; tailed lines scroll above it.

    A turn costs what changed: the tasks are kept by state (each state's in the order they
    reached it) from what each turn changed; a redraw builds, and reads the output of, only
    the rows that fit."""

    def __init__(self, engine: Engine, tail_logs: bool, out: TextIO) -> None:
        super().__init__(engine, tail_logs, out)
        self.tasks: dict[str, TaskRecord] = {}
        self.by_state: dict[State, dict[str, None]] = {s: {} for s in State}
        self.streams: dict[tuple[str, int], tuple[_Stream, _Stream]] = {}  # (task, attempt): out, err
        self.final_lines: dict[tuple[str, int], str] = {}  # ended attempts: their last line, read once
        self.stamp = 0
        self.dirty = True
        self.last_draw = 0.0
        self.started = engine.record.launched_at or time.time()
        self.console: Console | None = None
        self.live: Live | None = None

    def wants_tick(self) -> float | None:
        return REDRAW_EVERY if self.tail_logs or self.dirty else IDLE_REDRAW

    # --- what changed ---------------------------------------------------------------------
    def update(self, tasks: Sequence[TaskRecord], changed: Sequence[TaskRecord]) -> None:
        self._track(tasks if len(tasks) != len(self.tasks) else changed)
        if self.tail_logs:
            self._tail_logs(changed)
        self.dirty = self.dirty or bool(changed)
        if time.monotonic() - self.last_draw >= (REDRAW_EVERY if self.dirty else IDLE_REDRAW):
            self._draw()

    def _track(self, tasks: Sequence[TaskRecord]) -> None:
        for task in tasks:
            old = self.tasks.get(task.id)
            if old is not None:
                self.by_state[old.status].pop(task.id, None)
            self.tasks[task.id] = task
            self.by_state[task.status][task.id] = None

    def _tail_logs(self, changed: Sequence[TaskRecord]) -> None:
        assert self.follower is not None
        lines: list[Text] = []
        live = [self.tasks[i] for s in LIVE_STATES for i in self.by_state[s]]
        for task in [*live, *(t for t in changed if t.status not in LIVE_STATES)]:
            if task.attempts:  # (the lines of one that just ended, or waits for its next attempt)
                for _stream, line in self.follower.new_lines(task):
                    lines.append(self._text(f"{task.id}: ", _piece(line), cut=False))
        if lines:
            from rich.text import Text

            self._print(Text("\n").join(lines))

    # --- the view -------------------------------------------------------------------------
    def _draw(self) -> None:
        console = self._console()
        console.size = _terminal_size(self.out)
        view = self._view(console.width, console.height)
        with _whole():
            if self.live is None:
                from rich.live import Live

                self.live = Live(
                    view, console=console, auto_refresh=False, vertical_overflow="crop",
                    redirect_stdout=self.out is sys.stdout, redirect_stderr=sys.stderr.isatty(),
                )  # fmt: skip
                self.live.start()
            self.live.update(view, refresh=True)
        self.dirty = False
        self.last_draw = time.monotonic()

    def _console(self) -> Console:
        if self.console is None:
            from rich.console import Console

            plain = os.environ.get("NO_COLOR", "") != ""  # (no-color.org: set and not empty)
            self.console = Console(
                file=self.out, force_terminal=True, force_interactive=True, color_system=None if plain else "auto",
                highlight=False, markup=False, emoji=False, soft_wrap=False,
            )  # fmt: skip
        return self.console

    def _view(self, width: int, height: int) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        room = max(1, height - 2)  # the header, and a line to spare (the cursor's)
        rows = self._rows(room if len(self.tasks) <= room else room - 1)
        grid = Table.grid(padding=(0, 2))
        id_width = min(max((len(t.id) for t in rows), default=1), max(8, width // 3))
        tries = max((len(f"#{t.attempts}") for t in rows), default=2)
        widths = [id_width, 9, tries, 7]
        for w in widths:
            grid.add_column(width=w, no_wrap=True, overflow="ellipsis")
        grid.columns[2].justify = grid.columns[3].justify = "right"
        grid.add_column(
            width=max(1, width - sum(widths) - 2 * len(widths)), no_wrap=True, overflow="ellipsis"
        )
        for task in rows:
            grid.add_row(
                task.id, Text(task.status.value, style=STYLES[task.status]),
                f"#{task.attempts}" if task.attempts else "", _elapsed(task) if task.start_time else "",
                self._info(task),
            )  # fmt: skip
        parts: list[Any] = [self._header(width), grid]
        if len(rows) < len(self.tasks):
            shown: dict[State, int] = {}
            for task in rows:
                shown[task.status] = shown.get(task.status, 0) + 1
            rest = [(s, len(self.by_state[s]) - shown.get(s, 0)) for s in HEADER_ORDER]
            parts.append(
                Text(
                    f"... and {len(self.tasks) - len(rows)} more: "
                    + ", ".join(f"{n} {s}" for s, n in rest if n),
                    style="dim",
                    no_wrap=True,
                    overflow="ellipsis",
                )
            )
        return Group(*parts)

    def _rows(self, room: int) -> list[TaskRecord]:
        """The tasks that get a row (``room`` at most, see ROW_PRIORITY), in the order they were added."""
        rows: list[TaskRecord] = []
        for state, latest_first in ROW_PRIORITY:
            ids = self.by_state[state]
            for task_id in reversed(ids) if latest_first else ids:
                if len(rows) == room:
                    break
                rows.append(self.tasks[task_id])
        return sorted(rows, key=lambda t: t.seq)

    def _header(self, width: int) -> Text:
        from rich.text import Text

        ended = sum(len(self.by_state[s]) for s in FINAL_STATES)
        summary = Text(f"  {ended}/{len(self.tasks)} ended")
        for state in HEADER_ORDER:
            if count := len(self.by_state[state]):
                summary.append(" · ")
                summary.append(f"{count} {state}", style=STYLES[state])
        summary.append(f" · {_clock(time.time() - self.started)}")
        title = Text(self.engine.experiment_id, style="bold", no_wrap=True, overflow="ellipsis")
        if title.cell_len + summary.cell_len > width:  # a long id gives way to the counts
            title.truncate(max(12, width - summary.cell_len), overflow="ellipsis")
        header = title + summary
        header.no_wrap, header.overflow = True, "ellipsis"
        return header

    def _info(self, task: TaskRecord) -> Text:
        """Why a PENDING task waits; else the task's last output line (after a failure's reason)."""
        if task.status is State.PENDING and task.reason:
            return self._text("", task.reason, "dim")
        line = self._last_line(task)
        if task.status in (State.FAILED, State.CANCELLED) and task.reason and task.reason not in line:
            return self._text(f"{task.reason}  ", line, "", STYLES[task.status])
        return self._text("", line)

    @staticmethod
    def _text(prefix: str, line: str, style: str = "", prefix_style: str = "", cut: bool = True) -> Text:
        """A cell (``cut`` to one line, by display width), or a tailed line (wrapped)."""
        from rich.text import Text

        text = Text(prefix.translate(_NO_ESCAPES), style=prefix_style) + Text.from_ansi(
            _colours(line), style=style
        )
        if cut:
            text.no_wrap, text.overflow = True, "ellipsis"
        return text

    def _last_line(self, task: TaskRecord) -> str:
        """The task's last output line: read (new bytes only) while its attempt runs, and once
        more when it has ended."""
        if task.attempts == 0:
            return ""
        key = (task.id, task.attempts)
        if key in self.final_lines:
            return self.final_lines[key]
        streams = self.streams.get(key)
        if streams is None:
            streams = self.streams[key] = (_Stream(), _Stream())
            for old in [k for k in self.streams if k[0] == task.id and k != key]:
                del self.streams[old]
        handle = self.engine.handle(task)
        for name, stream in zip(("stdout.log", "stderr.log"), streams, strict=True):
            try:
                data = handle.read_log(name, offset=stream.offset)
            except (OSError, RunyardError):  # (a backend out of reach: shown as last read)
                continue
            if data:
                self.stamp += 1
                stream.feed(data, self.stamp)
        line = max(streams, key=lambda s: (bool(s.shown()), s.stamp)).shown()
        if task.status in FINAL_STATES:
            self.final_lines[key] = line
            del self.streams[key]
        return line

    # --- messages and the end -------------------------------------------------------------
    def _print(self, text: Text) -> None:
        with _whole():
            self._console().print(text)

    def say(self, message: str) -> None:
        if self.live is None:
            return super().say(message)
        from rich.text import Text

        self._print(Text(message))

    def interrupted(self, tasks: Sequence[TaskRecord], message: str) -> None:
        self._track(tasks)  # as Ctrl+C left them (cancelled, or driven on by a supervisor)
        self._draw()
        self.close()
        self.say(message)

    def finish(self, state: State) -> None:
        self._draw()
        self.close()
        self.say(f"experiment {self.engine.experiment_id}: {state}")

    def close(self) -> None:
        if self.live is not None:
            with _whole():
                self.live.stop()
            self.live = None
        self.out.flush()


def make_observer(engine: Engine, *, tail_logs: bool, out: TextIO | None = None) -> PlainObserver:
    stream = out or sys.stdout
    tty = (
        stream.isatty()
        and os.environ.get("TERM") not in ("dumb", "unknown")
        and not os.environ.get("RUNYARD_PLAIN")
    )
    return TerminalObserver(engine, tail_logs, stream) if tty else PlainObserver(engine, tail_logs, stream)
