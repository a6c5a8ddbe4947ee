"""A child process on a real pseudo-terminal of a fixed size, and the screen a VT100-style
terminal shows of what it writes (pyte: its own display widths, independent of rich's).

    with Terminal([sys.executable, script], columns=80, lines=24, cwd=tmp_path) as term:
        term.wait_for(lambda screen: "RUNNING" in screen, "the task to run")
        term.resize(60, 24)
        assert term.wait() == 0
        term.screen  # the final screen, one string per row (trailing blanks cut)
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import pyte

SGR = re.compile(rb"\x1b\[[0-9;:]*m")  # a colour (or other graphic rendition) code
# an escape sequence written whole: CSI (parameters, final byte), OSC (ended by BEL or ST), or two bytes
WHOLE_ESCAPE = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -Z\\-~])")


def _set_size(fd: int, columns: int, lines: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))


def terminal_env(**extra: str) -> dict[str, str]:
    """This environment as a user's terminal session has it: no RUNYARD_PLAIN (the suite sets
    it), no NO_COLOR, COLUMNS or LINES unless given, TERM=xterm."""
    drop = {"RUNYARD_PLAIN", "NO_COLOR", "COLUMNS", "LINES", "FORCE_COLOR", "TERM"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "TERM": "xterm", **extra}


class Terminal:
    """``argv`` with a pseudo-terminal of ``columns`` x ``lines`` as its stdout and stderr."""

    def __init__(
        self, argv: Sequence[str], *, columns: int, lines: int, cwd: Path, env: dict[str, str] | None = None
    ) -> None:
        self.master, slave = pty.openpty()
        _set_size(slave, columns, lines)
        self._screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self._screen)
        self.raw = bytearray()
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd,
            env=env if env is not None else terminal_env(),
        )  # fmt: skip
        os.close(slave)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            with self.lock:
                self.raw += data
                self._stream.feed(data)

    @property
    def screen(self) -> list[str]:
        """The rows the terminal shows now, trailing blanks cut."""
        with self.lock:
            return [row.rstrip() for row in self._screen.display]

    def colours(self, row: int) -> list[str]:
        """The foreground colour of each cell of a row ("default" where none)."""
        with self.lock:
            line = self._screen.buffer[row]
            return [line[x].fg for x in range(self._screen.columns)]

    @property
    def output(self) -> bytes:
        with self.lock:
            return bytes(self.raw)

    def wait_for(
        self, predicate: Callable[[list[str]], object], what: str, timeout: float = 60.0
    ) -> list[str]:
        """The screen once ``predicate(screen)`` holds (an AssertionError showing it after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen
            if predicate(screen):
                return screen
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self.reader.is_alive()):
                raise AssertionError(f"waited for {what}; the screen:\n" + "\n".join(screen))
            time.sleep(0.05)

    def resize(self, columns: int, lines: int) -> None:
        """The window is resized (as a terminal emulator does: the pty's size, and its screen)."""
        with self.lock:
            _set_size(self.master, columns, lines)
            self._screen.resize(lines, columns)

    def wait(self, timeout: float = 120.0) -> int:
        """The child's exit code, once it and its output have ended."""
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return code

    def __enter__(self) -> Terminal:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=30)
        os.close(self.master)


def cut_escapes(output: bytes) -> list[bytes]:
    """Every escape sequence in ``output`` that is not written whole (a code cut short)."""
    cut = []
    for m in re.finditer(rb"\x1b", output):
        if not WHOLE_ESCAPE.match(output, m.start()):
            cut.append(output[m.start() : m.start() + 12])
    return cut
