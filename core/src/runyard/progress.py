"""What an attached run shows: live progress on a terminal, plain lines otherwise.

On a terminal: a table redrawn in place (task, state, elapsed, attempts, last log line).
Elsewhere (a pipe, CI logs): one line per state change. With ``tail_logs``, task output is
printed as it comes, each line prefixed by its task name.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from runyard.jobfiles import JOURNAL
from runyard.logs import parse_journal
from runyard.states import FINAL_STATES, State
from runyard.store import TaskRecord

if TYPE_CHECKING:
    from runyard.engine import Engine

MAX_ROWS = 20
_COLORS = {
    State.SUCCEEDED: "\x1b[32m", State.FAILED: "\x1b[31m", State.CANCELLED: "\x1b[33m",
    State.RUNNING: "\x1b[36m", State.PAUSED: "\x1b[35m",
}  # fmt: skip


class LogFollower:
    """Reads new journal lines of live tasks, by offset, through their task handles."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.offsets: dict[tuple[str, int], int] = {}
        self.last_line: dict[str, str] = {}

    def new_lines(self, task: TaskRecord) -> list[tuple[str, str]]:
        if task.attempts == 0:
            return []
        key = (task.id, task.attempts)
        offset = self.offsets.get(key, 0)
        data = self.engine.handle(task).read_log(JOURNAL, offset=offset)
        entries, used = parse_journal(data)
        self.offsets[key] = offset + used
        if entries:
            self.last_line[task.id] = entries[-1].message
        return [(e.stream, e.message) for e in entries]


def _elapsed(task: TaskRecord) -> str:
    if task.start_time is None:
        return "-"
    seconds = int((task.end_time or time.time()) - task.start_time)
    h, rest = divmod(seconds, 3600)
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

    def finish(self, state: State) -> None:
        self.say(f"experiment {self.engine.experiment_id}: {state}")


class TerminalObserver(PlainObserver):
    """A live table, redrawn in place; log lines (tail_logs) scroll above it."""

    def __init__(self, engine: Engine, tail_logs: bool, out: TextIO) -> None:
        super().__init__(engine, tail_logs, out)
        self.follower = LogFollower(engine)
        self.drawn = 0
        self.last_draw = 0.0

    def wants_tick(self) -> float | None:
        return 0.2 if self.tail_logs else 0.5

    def emit_log(self, name: str, line: str) -> None:
        self._buffer.append(f"{name}: {line}")

    def update(self, tasks: Sequence[TaskRecord], changed: Sequence[TaskRecord]) -> None:
        self.width = max([self.width, *(len(t.id) for t in tasks)])
        self._buffer: list[str] = []
        assert self.follower is not None
        changed_ids = {c.id for c in changed}
        for task in tasks:  # also read when not tailing: the table shows the last line
            if task.attempts and (task.status not in FINAL_STATES or task.id in changed_ids):
                for _stream, line in self.follower.new_lines(task):
                    if self.tail_logs:
                        self.emit_log(task.id, line)
        if not changed and not self._buffer and time.monotonic() - self.last_draw < 0.5:
            return
        self._draw(tasks)

    def _draw(self, tasks: Sequence[TaskRecord]) -> None:
        cols = shutil.get_terminal_size((100, 24)).columns
        rows = sorted(tasks, key=lambda t: (t.status in FINAL_STATES, t.seq))
        shown = rows[:MAX_ROWS]
        lines = []
        for task in sorted(shown, key=lambda t: t.seq):
            color = _COLORS.get(task.status, "")
            state = f"{color}{task.status.value:<9}\x1b[0m" if color else f"{task.status.value:<9}"
            tries = f"x{task.attempts}" if task.attempts > 1 else "  "
            last = (self.follower.last_line.get(task.id, "") if self.follower else "").replace("\t", " ")
            prefix = f"  {task.id:<{self.width}}  "
            body = f"{_elapsed(task):>7}  {tries:>3}  "
            room = max(0, cols - len(prefix) - 9 - len(body) - 2)
            lines.append(prefix + state + "  " + body + last[:room])
        if len(rows) > len(shown):
            counts: dict[str, int] = {}
            for t in rows[len(shown) :]:
                counts[t.status.value] = counts.get(t.status.value, 0) + 1
            lines.append(
                f"  ... {len(rows) - len(shown)} more: " + ", ".join(f"{n} {s}" for s, n in counts.items())
            )
        done = sum(t.status in FINAL_STATES for t in tasks)
        lines.insert(0, f"{self.engine.experiment_id}: {done}/{len(tasks)} ended")
        out = []
        if self.drawn:
            out.append(f"\x1b[{self.drawn}F\x1b[J")
        out.extend(line + "\n" for line in self._buffer)
        out.extend(line + "\n" for line in lines)
        self.out.write("".join(out))
        self.out.flush()
        self.drawn = len(lines)
        self.last_draw = time.monotonic()

    def say(self, message: str) -> None:
        self.drawn = 0
        super().say(message)

    def finish(self, state: State) -> None:
        self.drawn = 0
        self.say(f"experiment {self.engine.experiment_id}: {state}")


def make_observer(engine: Engine, *, tail_logs: bool, out: TextIO | None = None) -> PlainObserver:
    stream = out or sys.stdout
    tty = stream.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("RUNYARD_PLAIN")
    return TerminalObserver(engine, tail_logs, stream) if tty else PlainObserver(engine, tail_logs, stream)
