"""The Ray head's Jobs API over HTTP, with the standard library.

The same server and endpoints as Ray's own ``ray.job_submission.JobSubmissionClient`` (its
documented REST API: ``/api/jobs/``, and ``/api/packages/`` for the working dir), without
installing Ray (61 packages, ~400 MB, seconds to import) where runyard runs: the cluster has
Ray, the machine that drives it needs none.

Every failure is a clear error: a head that does not answer is ``UnreachableError`` (core
never fails a task for it), one that refuses a call is ``BackendError`` with its message.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from typing import Any

from runyard.errors import BackendError, UnreachableError

TIMEOUT = 30.0  # seconds for one call (an upload of a large working dir takes longer: UPLOAD_TIMEOUT)
UPLOAD_TIMEOUT = 300.0
HINT = (
    "is the Ray head running? (`ray start --head` starts one; `ray status` on the head tells);"
    " point RayExecutor(address=...) or RUNYARD_RAY_ADDRESS at its dashboard, http://head:8265"
)


class NotFound(BackendError):
    """The head has no such job (or package)."""


class JobsClient:
    """One head's Jobs API. Thread-safe: one keep-alive connection per thread."""

    def __init__(self, address: str, timeout: float = TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"not a Ray dashboard address: {address!r} (want http://head:8265)")
        self.address = address
        self._secure = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._secure else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._local = threading.local()

    # --- the calls ------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        return self._json("GET", "/api/version")

    def submit(self, request: dict[str, Any]) -> str:
        """Submit a job (``entrypoint``, ``submission_id``, ``runtime_env``...); its submission id."""
        answer = self._json("POST", "/api/jobs/", request)
        return str(answer.get("submission_id") or answer.get("job_id") or request.get("submission_id"))

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the head knows (one call: the batched status of an experiment's jobs)."""
        answer = self._json("GET", "/api/jobs/")
        if isinstance(answer, dict):  # (Ray before 2.2: a dict by job id)
            return [{"submission_id": k, **v} for k, v in answer.items() if isinstance(v, dict)]
        return [job for job in answer if isinstance(job, dict)]

    def job(self, submission_id: str) -> dict[str, Any]:
        """One job's details; NotFound if the head has none of that id."""
        return self._json("GET", f"/api/jobs/{_quote(submission_id)}")

    def logs(self, submission_id: str) -> str:
        """Everything the job's entrypoint printed so far (stdout and stderr, merged)."""
        return str(self._json("GET", f"/api/jobs/{_quote(submission_id)}/logs").get("logs") or "")

    def stop(self, submission_id: str) -> bool:
        """Ask the job to stop (SIGTERM to its entrypoint, SIGKILL a few seconds later)."""
        return bool(self._json("POST", f"/api/jobs/{_quote(submission_id)}/stop").get("stopped"))

    def delete(self, submission_id: str) -> None:
        """Forget an ended job: the head frees what it kept of it."""
        self._json("DELETE", f"/api/jobs/{_quote(submission_id)}")

    def has_package(self, uri: str) -> bool:
        try:
            self._call("GET", _package_path(uri))
        except NotFound:
            return False
        return True

    def upload_package(self, uri: str, data: bytes) -> None:
        self._call("PUT", _package_path(uri), data, timeout=UPLOAD_TIMEOUT)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- HTTP -----------------------------------------------------------------------------
    def _json(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        raw = self._call(method, path, data, content_type="application/json")
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise BackendError(
                f"the Ray head at {self.address} answered {method} {path} with what is not JSON:"
                f" {raw[:200]!r} (is that address a Ray dashboard?)"
            ) from None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _call(
        self, method: str, path: str, data: bytes | None = None, *, content_type: str | None = None,
        timeout: float | None = None,
    ) -> bytes:  # fmt: skip
        headers = {"Content-Type": content_type} if content_type and data is not None else {}
        for tries_left in (1, 0):  # a kept-alive connection the head closed meanwhile: once more
            conn = self._connection(timeout or self._timeout)
            try:
                conn.request(method, self._prefix + path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if not tries_left:
                    raise self._unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(exc) from None
        if response.status == 404:
            raise NotFound(f"the Ray head at {self.address} has no {path}: {_message(raw)}")
        if response.status >= 500:  # (a head that is starting: "No available agent ..., try again later")
            raise UnreachableError(
                f"the Ray head at {self.address} cannot take {method} {path} now (HTTP {response.status}:"
                f" {_message(raw)[:300]}); trying again",
                since=time.time(),
            )
        if response.status >= 400:
            raise BackendError(
                f"the Ray head at {self.address} refused {method} {path} (HTTP {response.status}): {_message(raw)}"
            )
        return raw

    def _unreachable(self, exc: BaseException) -> UnreachableError:
        what = (
            "timed out" if isinstance(exc, (socket.timeout, TimeoutError)) else str(exc) or type(exc).__name__
        )
        return UnreachableError(
            f"cannot reach the Ray head at {self.address} ({what}): {HINT}", since=time.time()
        )


def _quote(submission_id: str) -> str:
    return urllib.parse.quote(submission_id, safe="")


def _package_path(uri: str) -> str:
    protocol, _, name = uri.partition("://")
    return f"/api/packages/{_quote(protocol)}/{_quote(name)}"


def _message(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500] or "no message"
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or data.get("msg") or data)[:500]
    return text[:500]
