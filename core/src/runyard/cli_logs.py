"""``runyard logs``: a task's output (one attempt, or following it), filtered, or every task's
merged in time order (cli.py; docs/cli.md). Filtered output is read from the journals
(``journal.log``: each line with its time and stream)."""

from __future__ import annotations

import argparse
import queue
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from runyard.cli_util import find_experiment
from runyard.logs import LogEntry

INTERVAL = 0.2  # seconds between two looks at a followed task's journal


def regex(text: str) -> re.Pattern[str]:
    """A command-line regular expression (Python's syntax)."""
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {text!r}: {exc}") from None


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse the combinations that mean nothing (no option is silently ignored)."""
    if args.all and args.task:
        parser.error("give a TASK or --all, not both")
    if not args.all and not args.task:
        parser.error("name a TASK (see `runyard status EXPERIMENT`), or --all for every task")
    if args.all and args.attempt is not None:
        parser.error("--attempt names an attempt of one TASK: not with --all")


class _Printer:
    """Writes entries that pass the filters: stderr lines to stderr, the others to stdout."""

    def __init__(self, args: argparse.Namespace, width: int) -> None:
        self.streams = {"stdout", "stderr"} if args.stream == "both" else {args.stream}
        self.since = args.since
        self.grep = args.grep
        self.timestamps = args.timestamps
        self.width = width  # of the task prefix (--all); 0: none
        self.flush = args.follow

    def keep(self, entry: LogEntry) -> bool:
        return (
            entry.stream in self.streams
            and (self.since is None or entry.timestamp >= self.since)
            and (self.grep is None or self.grep.search(entry.message) is not None)
        )

    def write(self, entry: LogEntry, task: str = "") -> None:
        out = sys.stderr if entry.stream == "stderr" else sys.stdout
        stamp = f"{entry.timestamp.astimezone():%H:%M:%S} " if self.timestamps else ""
        prefix = f"{task:<{self.width}} | " if self.width else ""
        out.write(f"{stamp}{prefix}{entry.message}\n")
        if self.flush:
            out.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    exp = find_experiment(args.experiment, args.home)
    journal = args.follow or args.timestamps or args.all or args.tail or args.since or args.grep
    if not journal:  # the output as the task wrote it, byte for byte
        logs = exp.get_logs(args.task, attempt=args.attempt)
        if args.stream in ("stdout", "both"):
            sys.stdout.write(logs.stdout)
        if args.stream in ("stderr", "both"):
            sys.stderr.write(logs.stderr)
        return 0
    runs = {t.id: t.attempts for t in exp.tasks}  # (one read of the backends' news for all)
    if not args.all and args.task not in runs:
        exp.attempts(args.task)  # the error that names the tasks there are
    tasks = list(runs) if args.all else [args.task]
    printer = _Printer(args, max(map(len, tasks), default=0) if args.all else 0)
    # what is there now, each task from the attempt it starts at (a task not run yet: none)
    starts: dict[str, int | None] = {}
    backlog: list[tuple[LogEntry, str]] = []
    counts: dict[str, int] = {}
    for task in tasks:
        start = args.attempt if args.attempt is not None else (runs[task] or None)
        starts[task] = start
        entries = list(exp.stream_logs(task, follow=False, attempt=start)) if start else []
        counts[task] = len(entries)
        backlog += [(e, task) for e in entries if printer.keep(e)]
    if args.all:
        backlog.sort(key=lambda pair: pair[0].timestamp)  # (stable: a task's own lines keep their order)
    if args.tail:
        backlog = backlog[-args.tail :]
    for entry, task in backlog:
        printer.write(entry, task if args.all else "")
    if args.follow:
        for entry, task in _follow(exp, starts, counts):
            if printer.keep(entry):
                printer.write(entry, task if args.all else "")
    return 0


def _follow(exp: Any, starts: dict[str, int | None], skip: dict[str, int]) -> Iterator[tuple[LogEntry, str]]:
    """The new lines of every task, as they come, until every task has ended (across its
    later attempts). One thread follows each task; they bring the store up to date from the
    backends (when no driver does) once per interval between them all, not once each."""
    lock = threading.Lock()
    last = [0.0]

    def sync() -> None:
        with lock:
            if time.monotonic() - last[0] >= INTERVAL:
                exp.status()  # (a read that brings the store up to date when no driver does)
                last[0] = time.monotonic()

    if len(starts) == 1:
        ((task, start),) = starts.items()
        handle = exp._engine.task(task)  # the same stream as Experiment.stream_logs, with this sync
        for i, entry in enumerate(handle.stream(follow=True, interval=INTERVAL, attempt=start, sync=sync)):
            if i >= skip[task]:
                yield entry, task
        return
    lines: queue.Queue[tuple[str, LogEntry | BaseException | None]] = queue.Queue()

    def follow(task: str, start: int | None) -> None:
        try:
            handle = exp._engine.task(task)
            stream = handle.stream(follow=True, interval=INTERVAL, attempt=start, sync=sync)
            for i, entry in enumerate(stream):
                if i >= skip[task]:
                    lines.put((task, entry))
        except BaseException as exc:  # raised by the main thread
            lines.put((task, exc))
        finally:
            lines.put((task, None))

    for task, start in starts.items():
        threading.Thread(target=follow, args=(task, start), name=f"runyard-logs-{task}", daemon=True).start()
    running = len(starts)
    while running:
        task, item = lines.get()
        if item is None:
            running -= 1
        elif isinstance(item, BaseException):
            raise item
        else:
            yield item, task
