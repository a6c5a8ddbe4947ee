"""``DockerBackend``: every attempt of a task is one container.

The container runs runyard's in-job runner on the task's folder, bind-mounted, so the
runner's files (logs, journal, heartbeat, ``result.json``) land on this machine as the
task runs. Every container carries the labels ``runyard.experiment``, ``runyard.task`` and
``runyard.attempt``; the job id is the container's short id and the handle keeps its full
id, so any process finds it.

- status: one container listing per experiment and poll, cross-checked with the runner's
  ``result.json``: the runner's exit code decides, so a failing command is FAILED with its
  code; a container that ended without a result, or vanished, is FAILED (lost) with what
  the engine knows (exit code, out of memory, its last output line).
- a finished container is removed once its result is read and its own output (the
  runner's errors, normally empty) is saved as ``runner.log`` in the attempt folder.
- a daemon that cannot be reached (stopped, restarting) fails no call with a raw error:
  every call raises UnreachableError (other refusals BackendError), so the driver waits
  for it; clean-ups are done when it answers again. A daemon that stops stops every
  container (SIGTERM, then SIGKILL): one it stopped so is FAILED ``node_failure`` (see
  ``_killed``).
- cancel: ``stop`` (SIGTERM, then SIGKILL after ``cancel_grace``), then removal; pause and
  resume: ``pause`` / ``unpause`` (the cgroup freezer).
- the driver sleeps on the engine's event stream (see ``events.py``) and wakes when a
  container ends.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runyard.errors import BackendError, UnreachableError
from runyard.executor import Backend, JobRef, JobSpec, JobStatus, Launched
from runyard.jobfiles import (
    claimed_by_other,
    read_local_claim,
    read_local_result,
    status_of_ended_job,
    superseded_status,
)
from runyard.states import State

from runyard_docker import spec as specs
from runyard_docker.client import Reach, connect, docker_host, engine_errors, is_unreachable, unreachable
from runyard_docker.events import ExitWatcher
from runyard_docker.executor import IMAGE_ENV, DockerExecutor
from runyard_docker.staging import (
    CodeStager,
    container_pythonpath,
    container_task_json,
    stage_attempt,
    task_json_path,
)

RUNNER_LOG = "runner.log"
LAUNCH_THREADS = 8  # containers created and started at once by launch_many
_ENDED = ("exited", "dead", "removing")
STOP_MARGIN = 5.0  # seconds the engine waits beyond the runner's own cancel grace before it kills
EXIT_WAIT = 5.0  # seconds a container may take to exit once its runner has written the result
KILLED = (signal.SIGTERM, signal.SIGKILL)  # what a daemon's shutdown stops a container with
KILLED_CODES = tuple(128 + s for s in KILLED)  # a container's exit code then
SHUTDOWN_WAIT = 3.0  # seconds between a daemon's shutdown stopping a container and its API going away


def _short(container_id: str) -> str:
    return container_id[:12]


def _engine_time(text: str | None) -> float | None:
    """The unix time of one of the engine's timestamps (``2026-12-01T16:11:01.888123456Z``)."""
    if not text or not text.endswith("Z") or text.startswith("0001-"):
        return None
    whole, _, fraction = text[:-1].partition(".")
    try:
        when = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    return when.timestamp() + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)


class Reaper:
    """Runs clean-up jobs (save a container's output, remove it) one after the other in a
    thread of their own, so the driver launches the next task without waiting for them.

    The thread is not a daemon: a process that exits waits for its clean-ups first. It ends
    when there is nothing left to do and a new one starts with the next job. A job that
    found the daemon away is tried again every second for ``HOLD_FOR`` seconds (so a process
    that exits then waits that long at most), then kept for ``again`` (the daemon answers).
    """

    HOLD_FOR = 30.0

    def __init__(self) -> None:
        self._jobs: collections.deque[Callable[[], object]] = collections.deque()
        self._later: list[Callable[[], object]] = []  # found the daemon away
        self._until = 0.0  # when the thread stops trying those again
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job: Callable[[], object]) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="runyard-docker-reaper", daemon=False)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs and not (self._later and time.monotonic() < self._until):
                    self._thread = None
                    return
                job = self._jobs.popleft() if self._jobs else None
            if job is None:  # only held ones left: wait a moment, try them again
                time.sleep(1.0)
                with self._lock:
                    self._jobs.extend(self._later)
                    self._later.clear()
                continue
            try:
                job()
            except UnreachableError:
                with self._lock:
                    if self._until <= time.monotonic():  # the first in a row: try for HOLD_FOR
                        self._until = time.monotonic() + self.HOLD_FOR
                    self._later.append(job)
            except Exception:  # noqa: S110  a clean-up that failed leaves a container for the next poll
                pass

    def again(self) -> None:
        """Queue again the clean-ups that found the daemon away."""
        with self._lock:
            later, self._later = self._later, []
        for job in later:
            self.add(job)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the clean-ups queued so far."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


class DockerBackend(Backend):
    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()
        self._image_lock = threading.Lock()
        self._images: set[str] = set()  # images known to be on the engine
        self._code = CodeStager()
        self._reach = Reach()
        self._watcher = ExitWatcher(connect, on_break=self._reach.lost)
        self._reaper = Reaper()
        self._exiting: dict[str, float] = {}  # container id -> when its result was seen while it ran
        self._judging: set[str] = set()  # killed containers: was it the daemon's shutdown? (see _killed)

    def client(self) -> Any:
        """The docker SDK client, created on first use (BackendError if the daemon is down)."""
        with self._lock:
            if self._client is None:
                self._client = connect()
            return self._client

    @contextlib.contextmanager
    def _engine(self, what: str) -> Iterator[None]:
        """``engine_errors(what)``, noting whether the daemon answered (``Reach``)."""
        try:
            with engine_errors(what):
                yield
        except UnreachableError as exc:
            exc.since = self._reach.lost()
            raise
        except BackendError:
            self._answered()
            raise
        self._answered()

    def _answered(self) -> None:
        if self._reach.ok():  # back after an outage: do the clean-ups it held up
            self._reaper.again()

    def _lost(self, exc: BaseException) -> UnreachableError:
        return unreachable(exc, since=self._reach.lost())

    # --- the container ---------------------------------------------------------------------
    def prepare(self, job: JobSpec) -> specs.Container:
        """The container ``launch`` creates for ``job``, and what it stages for it (packaged
        here, unpacked and written only by ``launch``)."""
        executor = job.executor
        assert isinstance(executor, DockerExecutor)
        code = self._code.code(job, executor)
        task = container_task_json(job, code)
        pythonpath = container_pythonpath(code, os.environ.get("PYTHONPATH"), job.cwd)
        create = specs.container_spec(
            job, executor, code=code, task_spec=task, task_json=task_json_path(job), pythonpath=pythonpath
        )
        return specs.Container(create, code, task)

    # --- launch ---------------------------------------------------------------------------
    def launch_many(self, jobs: Sequence[JobSpec]) -> list[Launched | Exception]:
        if len(jobs) < 2:
            return super().launch_many(jobs)
        # creating and starting a container is mostly waiting for the engine: overlap them
        with ThreadPoolExecutor(max_workers=min(LAUNCH_THREADS, len(jobs))) as pool:
            futures = [pool.submit(self.launch, job) for job in jobs]
        out: list[Launched | Exception] = []
        for future in futures:
            exc = future.exception()
            out.append(future.result() if exc is None else exc)  # type: ignore[arg-type]
        return out

    def _launch(self, job: JobSpec) -> Launched:
        executor = job.executor
        assert isinstance(executor, DockerExecutor)
        missing = specs.missing_volume_sources(job, executor)
        if missing:
            raise BackendError(
                f"volume source {missing[0]} does not exist on this machine (DockerExecutor.volumes"
                f" {executor.volumes!r}); create it, or fix the path"
            )
        client = self.client()
        self._ensure_image(client, executor.image)
        container = self.prepare(job)
        if container.code is not None:
            self._code.unpack(container.code)
        stage_attempt(job, executor, container.task)
        spec = container.create
        self._watcher.start()  # subscribed before the container can end
        container_id = self._create(client, job, spec)

        try:
            with self._engine(f"the container of task {job.task_id} did not start"):
                client.api.start(container_id)
        except UnreachableError:
            # it may have started (the answer lost): remove it later only if it did not
            self._reaper.add(lambda: self._remove_unstarted(client, container_id))
            raise
        except BackendError as exc:
            try:
                client.api.remove_container(container_id, force=True)
            except Exception:  # noqa: S110  left for `docker container prune`; the error says more
                pass
            hint, program, said = "", spec["command"][0], str(exc)
            if program in said and ("executable file not found" in said or "no such file" in said):
                hint = f"; does image {executor.image!r} have {program!r}? (DockerExecutor.python)"
            raise BackendError(f"{exc}{hint}") from None
        return Launched(
            job_id=_short(container_id),
            handle={
                "container": container_id,
                "name": spec.get("name"),
            },
            state=State.RUNNING,
        )

    def _ensure_image(self, client: Any, image: str) -> None:
        """The image is on the engine, pulled if it was not; else a BackendError naming it."""
        import docker.errors

        with self._image_lock:
            if image in self._images:
                return
            with self._engine(f"cannot look up image {image!r}"):
                try:
                    client.images.get(image)
                    self._images.add(image)
                    return
                except docker.errors.ImageNotFound:
                    pass
            try:
                client.images.pull(image)
            except Exception as exc:
                if is_unreachable(exc):
                    raise self._lost(exc) from None
                if not isinstance(exc, docker.errors.DockerException):
                    raise
                said = getattr(exc, "explanation", None) or str(exc)
                raise BackendError(
                    f"image {image!r} is not on the Docker engine at {docker_host()} and cannot be pulled"
                    f" ({said}); build or load it there (docker build, docker load, docker import), or"
                    f" choose another image: DockerExecutor(image=...), or ${IMAGE_ENV} for the default"
                ) from None
            self._images.add(image)

    def _create(self, client: Any, job: JobSpec, spec: dict[str, Any]) -> str:
        import docker.errors

        with self._engine(f"cannot create the container of task {job.task_id}"):
            try:
                return str(client.containers.create(**spec).id)
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "name" not in spec:
                    raise
            # a container of that name exists (left by a crash of an earlier run): keep it
            # for inspection and let the engine name this one
            return str(client.containers.create(**{k: v for k, v in spec.items() if k != "name"}).id)

    def _remove_unstarted(self, client: Any, container_id: str) -> None:
        """Remove a container whose start was not answered, if it never started."""
        import docker.errors

        with self._engine(f"cannot remove container {_short(container_id)}"):
            try:
                if client.api.inspect_container(container_id)["State"]["Status"] == "created":
                    client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass

    def adopt(self, job: JobSpec) -> Launched | None:
        """The container whose runner claimed this attempt (found by its labels; the claim's
        host name is the container's short id when the container is gone already)."""
        claim = read_local_claim(job.attempt_dir)
        if not claim or not claim.get("launch"):
            return None
        client = self.client()
        wanted = [
            f"{specs.LABEL_EXPERIMENT}={job.experiment_id}",
            f"{specs.LABEL_TASK}={job.task_id}",
            f"{specs.LABEL_ATTEMPT}={job.attempt}",
            f"{specs.LABEL_LAUNCH}={claim['launch']}",
        ]
        with self._engine("cannot list runyard's containers"):
            rows = client.api.containers(all=True, filters={"label": wanted})
        container_id = str(rows[0]["Id"]) if rows else str(claim.get("host") or "")
        if not container_id:
            return None
        handle = {
            "container": container_id,
            "name": (rows[0].get("Names") or [None])[0] if rows else None,
            "launch": claim["launch"],
        }
        return Launched(job_id=_short(container_id), handle=handle, state=State.RUNNING)

    def _superseded(self, job: JobRef) -> JobStatus | None:
        """Another launch's runner claimed this attempt: this container ran nothing."""
        claim = read_local_claim(job.attempt_dir)
        if claimed_by_other(claim, job.handle.get("launch")):
            assert claim is not None
            return superseded_status(claim)
        return None

    # --- status ---------------------------------------------------------------------------
    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        self._watcher.drain()  # before listing, so a container that ends meanwhile wakes us again
        client = self.client()
        rows: dict[str, dict[str, Any]] = {}
        with self._engine("cannot list runyard's containers"):
            for experiment in {job.experiment_id for job in jobs}:
                label = f"{specs.LABEL_EXPERIMENT}={experiment}"
                for row in client.api.containers(all=True, filters={"label": label}):
                    rows[row["Id"]] = row
        out: dict[str, JobStatus] = {}
        for job in jobs:
            container_id = str(job.handle.get("container") or job.job_id)
            row = rows.get(container_id)
            if row is None:
                self._exiting.pop(container_id, None)
                self._judging.discard(container_id)
                result = read_local_result(job.attempt_dir)
                superseded = None if result else self._superseded(job)
                if superseded is not None:
                    out[job.job_id] = superseded
                    continue
                out[job.job_id] = status_of_ended_job(
                    result,
                    None
                    if result
                    else f"lost: its container {job.job_id} is gone (removed by hand?) and left no result",
                )
                continue
            state = row.get("State")
            if state == "paused":
                out[job.job_id] = JobStatus(State.PAUSED)
            elif state == "created":
                out[job.job_id] = JobStatus(State.SUBMITTED)
            elif state in _ENDED:
                out[job.job_id] = self._ended(client, job, container_id)
            else:  # running, restarting
                out[job.job_id] = self._running(client, job, container_id)
        return out

    def _running(self, client: Any, job: JobRef, container_id: str) -> JobStatus:
        """A container the engine lists as running. With a result from its runner, it is
        exiting (the "die" event comes a moment before the listing changes): look again very
        soon rather than report the end now, so the next task does not start while this
        container is torn down (that doubles the start time); one still there after
        EXIT_WAIT seconds (a process of the task that will not end) is ended for good."""
        if read_local_result(job.attempt_dir) is None:
            self._exiting.pop(container_id, None)
            return JobStatus(State.RUNNING)
        now = time.monotonic()
        if now - self._exiting.setdefault(container_id, now) < EXIT_WAIT:
            return JobStatus(State.RUNNING)
        return self._ended(client, job, container_id)

    def _ended(self, client: Any, job: JobRef, container_id: str) -> JobStatus:
        """The status of an attempt whose container has ended; the container is then removed."""
        self._exiting.pop(container_id, None)
        result = read_local_result(job.attempt_dir)
        if result is not None:
            status = status_of_ended_job(result)
            if result.get("signal") == signal.SIGKILL and self._oom_killed(client, container_id):
                status.failure = "oom"
                status.reason = (
                    f"out of memory: the task was killed at the container's memory limit ({status.reason})"
                )
            elif result.get("signal") in KILLED:
                killed = self._killed(client, container_id, result.get("end"))
                if killed is None:
                    return JobStatus(State.RUNNING)
                if killed:
                    status = self._daemon_stopped(status, status.exit_code)
            self._reaper.add(lambda: self._finish(client, job, container_id))
            return status
        superseded = self._superseded(job)
        if superseded is not None:
            self._reaper.add(lambda: self._finish(client, job, container_id))
            return superseded
        import docker.errors

        code: int | None = None
        program, image = "", ""
        why = "the container ended"
        oom = False  # the engine says a process of it was killed for memory (OOMKilled)
        finished: float | None = None
        with self._engine(f"cannot inspect container {job.job_id}"):
            try:
                info = client.api.inspect_container(container_id)
            except docker.errors.NotFound:
                info = {}
        try:
            state = info["State"]
            code = int(state.get("ExitCode", 0))
            finished = _engine_time(state.get("FinishedAt"))
            program = (info["Config"].get("Cmd") or [""])[0]
            image = info["Config"].get("Image") or ""
            why = f"the container exited with code {code}"
            oom = bool(state.get("OOMKilled"))
            if oom:
                why += " (out of memory)"
            if state.get("Error"):
                why += f": {state['Error']}"
        except (KeyError, TypeError, ValueError):
            pass
        killed = self._killed(client, container_id, finished) if code in KILLED_CODES else False
        if killed is None:
            return JobStatus(State.RUNNING)
        output = self._finish(client, job, container_id)
        last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
        said = f"; it said: {last}" if last else ""
        if code == 127 and program:  # the runner's interpreter could not be started
            reason = (
                f"the in-job runner did not start in the container (exit code 127{said}); does image"
                f" {image!r} have {program!r}? (DockerExecutor.python)"
            )
        else:
            reason = f"lost: {why} before the runner wrote a result{said}"
        status = status_of_ended_job(None, reason)
        status.exit_code = code
        if oom:
            status.failure = "oom"
        return self._daemon_stopped(status, code) if killed else status

    def _oom_killed(self, client: Any, container_id: str) -> bool:
        """Whether the kernel killed a process of the container for memory (``OOMKilled``: its
        memory limit was reached), as the engine says; False when it cannot say."""
        import docker.errors

        try:
            return bool(client.api.inspect_container(container_id)["State"].get("OOMKilled"))
        except (docker.errors.DockerException, KeyError, TypeError):
            return False

    def _killed(self, client: Any, container_id: str, ended: float | None) -> bool | None:
        """Whether the daemon's shutdown stopped a container killed at unix time ``ended``: the
        daemon started since (a daemon that stops answers for a moment after it has stopped
        the containers), or this process saw it away around then. None: too soon to tell
        (look again in a moment)."""
        if ended is not None:
            started = self._daemon_started(client)
            if (started is not None and started > ended) or self._reach.away_between(
                ended - SHUTDOWN_WAIT, ended + SHUTDOWN_WAIT
            ):
                self._judging.discard(container_id)
                return True
            if time.time() < ended + SHUTDOWN_WAIT:
                self._judging.add(container_id)
                return None
        self._judging.discard(container_id)
        return False

    def _daemon_started(self, client: Any) -> float | None:
        """When the daemon started: it makes its default ``bridge`` network anew as it starts
        (None: it has none, or did not say)."""
        import docker.errors

        with self._engine("cannot inspect the default network"):
            try:
                return _engine_time(client.api.inspect_network("bridge").get("Created"))
            except docker.errors.NotFound:
                return None

    def _daemon_stopped(self, status: JobStatus, code: int | None) -> JobStatus:
        """The daemon's shutdown (a stop or restart) stopped the container."""
        status.failure = "node_failure"
        status.reason = (
            f"node_failure: the Docker daemon at {docker_host()} stopped or restarted while the task ran,"
            f" and its shutdown stopped the container (exit code {code})"
        )
        return status

    def _finish(self, client: Any, job: JobRef, container_id: str) -> str:
        """Save the container's own output as runner.log, then remove it; returns that output.
        UnreachableError (nothing removed, nothing saved twice) when the daemon is away."""
        import docker.errors

        output = b""
        with self._engine(f"cannot read the output of container {_short(container_id)}"):
            try:
                output = client.api.logs(container_id, stdout=True, stderr=True)
            except docker.errors.NotFound:
                return ""
            except docker.errors.APIError:
                pass
        try:
            if output:
                with open(os.path.join(job.attempt_dir, RUNNER_LOG), "wb") as f:
                    f.write(output)
        except OSError:
            pass
        with self._engine(f"cannot remove container {_short(container_id)}"):
            try:
                client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: removal already in progress (another process)
                    raise
        return output.decode("utf-8", "replace")

    # --- control --------------------------------------------------------------------------
    def _state(self, client: Any, container_id: str) -> str | None:
        """The container's state (``running``, ``paused``, ``exited``...), None if it is gone."""
        import docker.errors

        try:
            return str(client.api.inspect_container(container_id)["State"]["Status"])
        except docker.errors.NotFound:
            return None

    def _cancel(self, job: JobRef) -> None:
        client = self.client()
        container_id = str(job.handle.get("container") or job.job_id)
        with self._engine(f"cannot cancel task container {job.job_id}"):
            state = self._state(client, container_id)
            if state is None:
                return
            if state == "paused":  # a frozen process cannot handle SIGTERM
                client.api.unpause(container_id)
        if state in _ENDED or state == "created":
            self._finish(client, job, container_id)
            return
        executor = job.executor
        grace = executor.cancel_grace if isinstance(executor, DockerExecutor) else 10.0
        # the engine sends SIGTERM to the runner (it forwards it to the task and SIGKILLs the
        # task after the grace by itself, so the result records the kill), waits, then SIGKILLs
        # the container: that is the backstop, a little later. A non-daemon thread waits for it,
        # so that this call returns at once yet even a short-lived process leaves nothing behind
        stopper = threading.Thread(
            target=self._stop, args=(client, job, container_id, grace + STOP_MARGIN), daemon=False
        )
        stopper.start()
        stopper.join(timeout=min(grace, 0.5))

    def _stop(self, client: Any, job: JobRef, container_id: str, grace: float) -> None:
        import docker.errors

        try:
            client.api.stop(container_id, timeout=math.ceil(grace))
            if self._state(client, container_id) in ("running", "paused", "restarting"):
                client.api.kill(container_id)
            self._finish(client, job, container_id)
        except (docker.errors.DockerException, BackendError, OSError):
            pass  # gone meanwhile, or the engine is down: nothing more to do from here

    def _pause(self, job: JobRef) -> None:
        self._control(job, "pause")

    def _resume(self, job: JobRef) -> None:
        self._control(job, "unpause")

    #: Waits between tries of a pause the kernel could not finish ("unable to freeze": runc
    #: gives up when a process of the container is busy in the kernel, e.g. in a fork, and
    #: thaws the container again, so trying again is safe).
    FREEZE_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)

    def _control(self, job: JobRef, action: str) -> None:
        import docker.errors

        client = self.client()
        container_id = str(job.handle.get("container") or job.job_id)
        verb = "pause" if action == "pause" else "resume"
        waits = iter(self.FREEZE_RETRIES if action == "pause" else ())
        with self._engine(f"cannot {verb} task container {job.job_id}"):
            while True:
                try:
                    getattr(client.api, action)(container_id)
                    return
                except docker.errors.NotFound:
                    raise BackendError(f"task container {job.job_id} is gone: nothing to {verb}") from None
                except docker.errors.APIError as exc:
                    wait = next(waits, None)
                    if wait is None or "unable to freeze" not in str(exc.explanation or exc):
                        raise
                    time.sleep(wait)

    # --- waiting, dry run, closing ----------------------------------------------------------
    def wakeup_fds(self, jobs: Sequence[JobRef]) -> list[int]:
        fd = self._watcher.fd() if jobs else None
        return [fd] if fd is not None else []

    def poll_interval(self) -> float:
        if self._exiting:
            return 0.02
        if self._judging:
            return 0.25
        return 2.0 if self._watcher.watching() else 0.25

    def dry_run(self, job: JobSpec) -> str:
        executor = job.executor
        assert isinstance(executor, DockerExecutor)
        spec = self.prepare(job).create
        lines = [
            f"docker: would create and start this container for task {job.task_id}"
            f" on the engine at {docker_host()} (containers.create arguments):",
            specs.describe(spec),
        ]
        for path in specs.missing_volume_sources(job, executor):
            lines.append(f"! volume source {path} does not exist: the launch would fail")
        return "\n".join(lines)

    def _close(self) -> None:
        self._reaper.join(timeout=60)
        self._watcher.close()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
