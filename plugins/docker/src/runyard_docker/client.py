"""The docker SDK client, created lazily, and engine failures turned into clear errors.

The engine is the one ``docker`` itself would use: ``$DOCKER_HOST`` (and
``$DOCKER_TLS_VERIFY``, ``$DOCKER_CERT_PATH``), else the local socket. It must see this
machine's files: runyard bind-mounts the task's folder into every container.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from runyard.errors import BackendError, UnreachableError

DEFAULT_HOST = "unix:///var/run/docker.sock"
START_HINT = (
    "start it with `sudo systemctl start docker` (or run `sudo dockerd &`), or point DOCKER_HOST"
    " at a running engine; runyard's own test bed starts one with `./dev.sh services`"
)


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def unreachable(exc: BaseException, since: float | None = None) -> UnreachableError:
    return UnreachableError(
        f"cannot reach the Docker daemon at {docker_host()} ({exc}): is it running? {START_HINT}",
        since=time.time() if since is None else since,
    )


def is_unreachable(exc: BaseException) -> bool:
    """Whether an error of the SDK means the daemon did not answer (stopped, restarting, or
    the socket gone), rather than that it refused the call."""
    import docker.errors
    import requests.exceptions

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    # the SDK's own wrapping of a failed connection (``from_env`` asking the API version)
    return type(exc) is docker.errors.DockerException and "Connection" in str(exc)


def connect(timeout: int = 120) -> Any:
    """A new ``docker.DockerClient`` for the engine of ``$DOCKER_HOST``.

    Raises BackendError saying how to start the daemon when it does not answer.
    """
    try:
        import docker
    except ImportError:
        raise BackendError("the docker SDK is not installed: pip install 'docker>=7'") from None
    try:
        return docker.from_env(timeout=timeout)
    except Exception as exc:  # DockerException, or a connection error from requests
        if is_unreachable(exc):
            raise unreachable(exc) from None
        raise BackendError(f"cannot use the Docker daemon at {docker_host()}: {exc}; {START_HINT}") from None


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn the SDK's errors inside the block into BackendErrors that start with ``what``,
    and "cannot reach the daemon" into UnreachableError.

    Catch ``docker.errors.NotFound`` inside the block where a missing object is fine.
    """
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.APIError as exc:
        said = exc.explanation or str(exc)
        raise BackendError(f"{what}: the Docker engine said: {said}") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise unreachable(exc) from None
    except docker.errors.DockerException as exc:
        if is_unreachable(exc):
            raise unreachable(exc) from None
        raise BackendError(f"{what}: {exc}") from None


class Reach:
    """When the daemon did not answer: the outages this process saw (from the first call it
    did not answer, or its event stream breaking, to the first it answered again). A daemon
    that stops stops every container, and closes its API around the same moment."""

    KEPT = 32  # outages remembered

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None  # the outage going on
        self._outages: list[tuple[float, float]] = []  # the ones that ended: (first seen, back)

    def ok(self) -> bool:
        """Note that the daemon answered; True if it was away until now."""
        with self._lock:
            if self._down_since is None:
                return False
            self._outages = [*self._outages[-self.KEPT + 1 :], (self._down_since, time.time())]
            self._down_since = None
            return True

    def lost(self) -> float:
        """Note that the daemon did not answer; returns since when it has not."""
        with self._lock:
            if self._down_since is None:
                self._down_since = time.time()
            return self._down_since

    def away_between(self, start: float, end: float) -> bool:
        """Whether the daemon was away at some time between the unix times ``start`` and ``end``."""
        with self._lock:
            if self._down_since is not None and self._down_since <= end:
                return True
            return any(down <= end and start <= back for down, back in self._outages)
