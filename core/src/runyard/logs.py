"""Task output: log sources (where a backend keeps it) and the journal format.

The runner writes ``journal.log`` with one line per output line: ``<unix time> <o|e> <text>``.
A :class:`LogSource` reads the runner's files of one attempt (a ``JobRef``) wherever they are (this machine,
a cluster over SFTP, ...); plugins provide one through the ``runyard_log_source`` hook.
"""

from __future__ import annotations

import abc
import datetime as dt
import os
from collections.abc import Callable
from typing import Any

import attrs

from runyard.executor import JobRef


@attrs.frozen
class TaskLogs:
    """A task's output (latest attempt) and exit code (None while it runs)."""

    exit_code: int | None
    stdout: str
    stderr: str
    attempt: int = 0


@attrs.frozen
class LogEntry:
    """One line of a task's output."""

    timestamp: dt.datetime
    message: str
    stream: str  # "stdout" or "stderr"

    def __str__(self) -> str:
        return f"{self.timestamp.isoformat()} [{self.stream}] {self.message}"


class LogSource(abc.ABC):
    """Reads the runner's files of a task attempt, from an offset."""

    @abc.abstractmethod
    def read(self, ref: JobRef, name: str, offset: int = 0) -> bytes:
        """Bytes of file ``name`` (``stdout.log``, ``stderr.log``, ``journal.log``) from ``offset``.

        Returns ``b""`` when the file does not exist (yet).
        """


def log_source_of(kind: str, make: Callable[[], LogSource]) -> Callable[[Any], LogSource | None]:
    """A ``runyard_log_source`` hook (wrap it with ``hookimpl``) for the executors of ``kind``:
    the log source ``make()`` returns, made the first time one is asked for (so that a plugin
    module that imports its log source only there stays light to import); None for others."""
    made: list[LogSource] = []

    def runyard_log_source(executor: Any) -> LogSource | None:
        if getattr(executor, "kind", None) != kind:
            return None
        if not made:
            made.append(make())
        return made[0]

    return runyard_log_source


class LocalFileLogSource(LogSource):
    """The runner's files in the task directory on this machine."""

    def read(self, ref: JobRef, name: str, offset: int = 0) -> bytes:
        try:
            with open(os.path.join(ref.attempt_dir, name), "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""


_STREAMS = {b"o": "stdout", b"e": "stderr"}


def parse_journal(data: bytes) -> tuple[list[LogEntry], int]:
    """Entries of the complete lines in ``data`` and how many bytes they used."""
    entries = []
    end = data.rfind(b"\n") + 1
    for line in data[:end].split(b"\n")[:-1]:
        ts, _, rest = line.partition(b" ")
        code, _, text = rest.partition(b" ")
        try:
            when = dt.datetime.fromtimestamp(float(ts), tz=dt.timezone.utc)
        except ValueError:
            continue
        entries.append(LogEntry(when, text.decode("utf-8", "replace"), _STREAMS.get(code, "stdout")))
    return entries, end
