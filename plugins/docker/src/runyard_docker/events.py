"""Wake the driver when a runyard container ends, instead of polling the engine often.

One thread per process follows the engine's event stream (``die`` events of containers
labelled ``runyard.task``) on its own client, and for each waits until the engine says
the container has exited (the ``die`` event comes some 50 ms before: the container is
still being torn down, and the listing still says "running"), then writes a byte into a
pipe; the driver sleeps on the pipe's read end (``Backend.wakeup_fds``). When the stream
cannot be opened or breaks, the backend falls back to polling every few hundred
milliseconds and tries again a little later. A stream that breaks while it is followed
means the daemon went away (it closes its API before it stops the containers):
``on_break`` is told at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from runyard_docker.spec import LABEL_TASK

RETRY_AFTER = 5.0  # seconds before opening a broken stream again
EXIT_WAIT = 5.0  # seconds to wait for a container that died to be reported exited


class ExitWatcher:
    def __init__(self, connect: Callable[[], Any], on_break: Callable[[], object] = lambda: None) -> None:
        self._connect = connect
        self._on_break = on_break
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._failed_at = 0.0
        self._closed = False

    def watching(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> bool:
        """Follow the event stream (subscribed before this returns); False if it cannot be opened."""
        with self._lock:
            if self._closed:
                return False
            if self.watching():
                return True
            if time.monotonic() - self._failed_at < RETRY_AFTER:
                return False
            try:
                client = self._connect()
                stream = client.api.events(
                    decode=True, filters={"type": "container", "event": "die", "label": LABEL_TASK}
                )
            except Exception:  # no engine now: poll, and try again later
                self._failed_at = time.monotonic()
                return False
            self._stream = stream
            self._thread = threading.Thread(
                target=self._follow, args=(client, stream), daemon=True, name="runyard-docker-events"
            )
            self._thread.start()
            return True

    def fd(self) -> int | None:
        """The pipe to sleep on, or None when no stream is followed (poll instead)."""
        return self._read if self.start() else None

    def drain(self) -> None:
        """Forget the wakeups seen so far (call before looking at the containers)."""
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _follow(self, client: Any, stream: Any) -> None:
        try:
            for event in stream:
                try:
                    client.api.wait(event["id"], timeout=EXIT_WAIT)
                except Exception:  # noqa: S110  removed already, or slow to exit: look anyway
                    pass
                self._wake()
        except Exception:  # noqa: S110  the stream broke (engine restarted, closed): poll instead
            pass
        finally:
            self._failed_at = time.monotonic()
            if not self._closed:
                self._on_break()
            self._wake()  # let the driver look again now that nobody watches

    def _wake(self) -> None:
        try:
            os.write(self._write, b"x")
        except OSError:  # full (the driver will look anyway) or closed
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: S110  closing a broken stream
                pass
        thread = self._thread
        if thread is not None:
            thread.join(timeout=2)
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
