"""``RayBackend``: each attempt of a task is one Ray Job on the executor's cluster.

- **Launch**: the working dir (``staging.py``) is uploaded to the head once (content-addressed;
  looked for again before each launch wave, which also keeps the head from dropping it), then
  each attempt is submitted with a submission id of its own and the attempt in its metadata.
  A wave first lists the head's jobs: an attempt whose job is there already (a submission
  whose answer was lost) is taken as launched, never submitted twice.
- **Status**: one ``GET /api/jobs/`` for all of a cluster's jobs (one job: its own call). A job
  that ended has its log brought home (``home.py``) and its status is the runner's
  ``result.json`` (Ray's says only how the entrypoint ended); then the head forgets it
  (``DELETE``: each job costs the head memory while it is kept). A job the head does not know
  (a cluster that restarted, a job deleted by hand) is lost, never RUNNING for ever; a head
  that does not answer is an outage (``UnreachableError``), never a failure.
- **Cancel**: Ray's stop (SIGTERM to every process of the job, SIGKILL after the cluster's
  ``RAY_JOB_STOP_WAIT_TIME_S``, 3 s by default), then the log brought home and the job deleted.
  Pause and resume: Ray has neither.
- **Concurrency**: each attempt holds one of the cluster's ``max_jobs`` job slots, leased
  machine-wide through the store; a task waits PENDING while none is free.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
from runyard.errors import BackendError, UnreachableError
from runyard.executor import Backend, Executor, JobRef, JobSpec, JobStatus, Launched
from runyard.jobfiles import read_local_result, status_of_ended_job, timestamp
from runyard.redact import masked
from runyard.states import State

from runyard_ray import home
from runyard_ray.client import JobsClient, NotFound
from runyard_ray.executor import RayExecutor, job_slots
from runyard_ray.jobmain import CONF_ENV
from runyard_ray.staging import Stager, WorkDir, submit_request

ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
SUBMITTERS = 8  # submissions in flight at once to one head
STOP_WAIT = 10.0  # seconds a cancel waits for Ray to stop the job, to bring its log home


@attrs.frozen
class Submission:
    """What ``launch`` submits for one attempt (``prepare``)."""

    request: dict[str, Any]
    workdir: WorkDir


def _executor(job: JobRef | JobSpec) -> RayExecutor:
    executor = job.executor
    assert isinstance(executor, RayExecutor)
    return executor


def _ms(value: Any) -> float | None:
    return float(value) / 1000 if isinstance(value, (int, float)) and value > 0 else None


def _attempt_of(info: dict[str, Any]) -> tuple[str, str, str] | None:
    meta = info.get("metadata") or {}
    if not isinstance(meta, dict) or "runyard_experiment" not in meta:
        return None
    return (str(meta["runyard_experiment"]), str(meta.get("runyard_task")), str(meta.get("runyard_attempt")))


class RayBackend(Backend):
    def __init__(self) -> None:
        self._clients: dict[str, JobsClient] = {}
        self._lock = threading.Lock()
        self._stager = Stager()

    def client(self, address: str) -> JobsClient:
        with self._lock:
            if address not in self._clients:
                self._clients[address] = JobsClient(address)
            return self._clients[address]

    def resource_pool(self, executor: Executor) -> dict[str, list[str]]:
        if not isinstance(executor, RayExecutor):
            return {}
        return {job_slots(executor.address): [str(i) for i in range(executor.max_jobs)]}

    # --- launch -----------------------------------------------------------------------------
    def prepare(self, job: JobSpec) -> Submission:
        executor = _executor(job)
        workdir = self._stager.workdir(job, executor)
        return Submission(submit_request(job, executor, workdir), workdir)

    def launch_many(self, jobs: Sequence[JobSpec]) -> list[Launched | Exception]:
        out: dict[int, Launched | Exception] = {}
        by_address: dict[str, list[tuple[int, JobSpec]]] = {}
        for i, job in enumerate(jobs):
            by_address.setdefault(_executor(job).address, []).append((i, job))
        for address, mine in by_address.items():
            out.update(self._launch_on(self.client(address), mine))
        return [out[i] for i in range(len(jobs))]

    def _launch_on(
        self, client: JobsClient, jobs: list[tuple[int, JobSpec]]
    ) -> dict[int, Launched | Exception]:
        """Launch one cluster's jobs (by their index in the wave): its jobs listed once, the
        working dir uploaded by the first, the others' submissions overlapped."""
        try:
            known = {_attempt_of(info): info for info in client.jobs()}
        except BackendError as exc:
            return {i: exc for i, _ in jobs}
        uploaded: set[str] = set()
        out: dict[int, Launched | Exception] = {}

        def one(item: tuple[int, JobSpec]) -> None:
            i, job = item
            try:
                out[i] = self._launch_one(client, job, known, uploaded)
            except Exception as exc:  # reported per job: one refusal must not lose the others
                out[i] = exc

        one(jobs[0])  # alone: it uploads the working dir
        if len(jobs) > 1:  # the head answers submissions at once: overlap their round trips
            with ThreadPoolExecutor(min(SUBMITTERS, len(jobs) - 1)) as pool:
                list(pool.map(one, jobs[1:]))
        return out

    def _launch(self, job: JobSpec) -> Launched:
        [result] = self.launch_many([job])
        if isinstance(result, Exception):
            raise result
        return result

    def _launch_one(
        self, client: JobsClient, job: JobSpec, known: dict[Any, dict[str, Any]], uploaded: set[str]
    ) -> Launched:
        found = known.get((job.experiment_id, job.task_id, str(job.attempt)))
        if found is not None:  # submitted already, its answer lost: that job runs the attempt
            return self._launched(found, client.address)
        submission = self.prepare(job)
        uri = submission.workdir.uri
        if uri not in uploaded:
            if not client.has_package(uri):
                client.upload_package(uri, submission.workdir.data)
            uploaded.add(uri)
        os.makedirs(job.attempt_dir, exist_ok=True)
        submission_id = client.submit(submission.request)
        return Launched(job_id=submission_id, handle={"address": client.address}, state=State.SUBMITTED)

    @staticmethod
    def _launched(info: dict[str, Any], address: str) -> Launched:
        state = State.RUNNING if info.get("status") == "RUNNING" else State.SUBMITTED
        return Launched(job_id=str(info.get("submission_id")), handle={"address": address}, state=state)

    def adopt(self, job: JobSpec) -> Launched | None:
        """The job of this attempt on the head, found by its metadata."""
        client = self.client(_executor(job).address)
        for info in client.jobs():
            if _attempt_of(info) == (job.experiment_id, job.task_id, str(job.attempt)):
                return self._launched(info, client.address)
        return None

    # --- status -----------------------------------------------------------------------------
    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        by_address: dict[str, list[JobRef]] = {}
        for job in jobs:
            by_address.setdefault(_executor(job).address, []).append(job)
        for address, mine in by_address.items():
            client = self.client(address)
            infos: dict[str, dict[str, Any]] = {}
            if len(mine) == 1:
                try:
                    infos[mine[0].job_id] = client.job(mine[0].job_id)
                except NotFound:
                    pass
            else:
                infos = {str(info.get("submission_id")): info for info in client.jobs()}
            for job in mine:
                out[job.job_id] = self._status(client, job, infos.get(job.job_id))
        return out

    def _status(self, client: JobsClient, job: JobRef, info: dict[str, Any] | None) -> JobStatus:
        if info is None:
            if home.is_home(job.attempt_dir):  # ended, brought home, forgotten by the head
                return status_of_ended_job(read_local_result(job.attempt_dir))
            return JobStatus(
                state=State.FAILED,
                reason=f"lost: the Ray head at {client.address} has no job {job.job_id} (the cluster"
                " restarted, or the job was deleted)",
            )
        status = str(info.get("status"))
        if status == "PENDING":
            return JobStatus(state=State.SUBMITTED)
        if status not in ENDED:
            return JobStatus(state=State.RUNNING, start_time=timestamp(_ms(info.get("start_time"))))
        unpacked = self._bring_home(client, job, ended=True)
        result = read_local_result(job.attempt_dir)
        reason = None
        if result is None:
            said = str(info.get("message") or "").strip()
            if status == "STOPPED":
                reason = "stopped on the Ray cluster (ray job stop) before the runner wrote its result"
            else:
                reason = f"lost: the Ray job ended without the runner's result: {said or status}"
            if unpacked.problems:
                reason += f" ({'; '.join(unpacked.problems)[:300]})"
        ended = status_of_ended_job(result, reason if result is None else None)
        ended.start_time = ended.start_time or timestamp(_ms(info.get("start_time")))
        ended.end_time = ended.end_time or timestamp(_ms(info.get("end_time")))
        self._forget(client, job.job_id)
        return ended

    def _bring_home(self, client: JobsClient, job: JobRef, *, ended: bool) -> home.Unpacked:
        unpacked = home.unpack(client.logs(job.job_id))
        home.bring_home(job.attempt_dir, unpacked, ended=ended)
        return unpacked

    @staticmethod
    def _forget(client: JobsClient, submission_id: str) -> None:
        try:
            client.delete(submission_id)
        except (NotFound, UnreachableError):
            pass  # gone already; or the head went away: the job is home, a later look deletes nothing
        except BackendError:
            pass  # not ended yet in the head's eyes (a race with its own bookkeeping): harmless

    # --- cancel -----------------------------------------------------------------------------
    def cancel_many(self, jobs: Sequence[JobRef]) -> list[Exception | None]:
        """Stop every job first, then wait for them together to bring their logs home."""
        out: list[Exception | None] = []
        stopping: list[JobRef] = []
        for job in jobs:
            try:
                if job.job_id:
                    self.client(_executor(job).address).stop(job.job_id)
                    stopping.append(job)
                out.append(None)
            except NotFound:
                out.append(None)  # gone already
            except Exception as exc:  # reported per job: one failure must not keep the others
                out.append(exc)
        self._settle(stopping)
        return out

    def _cancel(self, job: JobRef) -> None:
        [problem] = self.cancel_many([job])
        if problem is not None:
            raise problem

    def _settle(self, jobs: list[JobRef]) -> None:
        """Wait (``STOP_WAIT`` at most) for stopped jobs to end; bring each home and forget it."""
        deadline = time.monotonic() + STOP_WAIT
        left = list(jobs)
        while left and time.monotonic() < deadline:
            time.sleep(0.25)
            still = []
            for job in left:
                client = self.client(_executor(job).address)
                try:
                    info = client.job(job.job_id)
                except NotFound:
                    continue
                except BackendError:
                    return  # the head went away: what is left stays on it
                if info.get("status") in ENDED:
                    try:
                        self._bring_home(client, job, ended=True)
                        self._forget(client, job.job_id)
                    except BackendError:
                        pass
                else:
                    still.append(job)
            left = still

    # --- output, dry run, closing -----------------------------------------------------------
    def refresh(self, job: JobRef) -> None:
        """Bring a live job's output home now (the log source does, for ``stream_logs``)."""
        self._bring_home(self.client(_executor(job).address), job, ended=False)

    def poll_interval(self) -> float:
        return 1.0

    def dry_run(self, job: JobSpec) -> str:
        submission = self.prepare(job)
        request = json.loads(json.dumps(submission.request))
        env = request["runtime_env"]["env_vars"]
        conf = json.loads(env.pop(CONF_ENV))
        request["runtime_env"]["env_vars"] = masked(env)
        workdir = submission.workdir
        code = workdir.code
        lines = [
            f"ray: would submit this job for task {job.task_id} to the Ray head at {_executor(job).address}"
            " (POST /api/jobs/):",
            json.dumps(request, indent=2),
            f"working dir {workdir.uri}: {workdir.size} bytes (ray_job.py, runyard's runner"
            + (f", the code of {code.root} ({code.kind}))" if code else ", no code)"),
            f"${CONF_ENV} (what ray_job.py runs there):",
            json.dumps(conf, indent=2),
        ]
        return "\n".join(lines)

    def _close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


_shared: RayBackend | None = None


def shared_backend() -> RayBackend:
    """A backend for reads outside the engine (the log source), made on first use."""
    global _shared
    if _shared is None:
        _shared = RayBackend()
    return _shared
