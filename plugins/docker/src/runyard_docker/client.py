"""The docker SDK client, created lazily, and engine failures turned into clear errors.

The engine is the one ``docker`` itself would use: ``$DOCKER_HOST`` (and
``$DOCKER_TLS_VERIFY``, ``$DOCKER_CERT_PATH``), else the local socket. It must see this
machine's files: runyard bind-mounts the task's folder into every container.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from runyard.errors import BackendError

DEFAULT_HOST = "unix:///var/run/docker.sock"
START_HINT = (
    "start it with `sudo systemctl start docker` (or run `sudo dockerd &`), or point DOCKER_HOST"
    " at a running engine; runyard's own test bed starts one with `./dev.sh services`"
)


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def unreachable(exc: BaseException) -> BackendError:
    return BackendError(
        f"cannot reach the Docker daemon at {docker_host()} ({exc}): is it running? {START_HINT}"
    )


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
        raise unreachable(exc) from None


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn the SDK's errors inside the block into BackendErrors that start with ``what``.

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
        raise BackendError(f"{what}: {exc}") from None
