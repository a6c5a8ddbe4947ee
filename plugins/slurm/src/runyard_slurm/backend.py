"""``SlurmBackend``: tasks as Slurm batch jobs, submitted and watched over one connection.

Launching a batch of tasks is one command on the cluster (``sbatch.submit_command``): the
job files (task.json, the sbatch scripts, the in-job runner the first time) travel as a tar
on its stdin, and every script is submitted with ``sbatch --parsable``. The user's code
travels once per version (``runyard.packaging``), unpacked in ``<job_dir>/code/<sha>``.
Tasks launched together on identical executors with the same dependencies become one job
array. A task whose dependencies are all live jobs of the same cluster is submitted at
once, chained with ``--dependency=afterok:...`` and ``--kill-on-invalid-dep=yes``.

An attempt is submitted once, however often its launch is repeated (a dropped connection,
a new driver after one died mid-launch, a launch that could not reach the cluster): each
submission carries a tag (the job's comment, ``sbatch.tag``) and is recorded in the attempt
folder (``submitted.json``) before ``sbatch`` runs; a repeat finds the job by it
(``sbatch.submit_command``, ``adopt``). Cancelling many jobs is one ``scancel`` per cluster.

Polling is one ``squeue`` for every job (then ``sacct`` for jobs squeue forgot, and the
runner's ``result.json`` over SFTP for jobs that ended), and backs off while nothing
changes. See ``status.py`` for how Slurm's states become task states.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import tarfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs
from runyard.errors import BackendError, BackendRefusedError
from runyard.executor import Backend, JobRef, JobSpec, JobStatus, Launched
from runyard.jobfiles import (
    CLAIM,
    HEARTBEAT,
    JOB_FILES,
    RESULT,
    claimed_by_other,
    heartbeat_is_stale,
    parse_claim,
    parse_result,
    relocated_task,
    runner_command,
    runner_path,
    superseded_status,
)
from runyard.packaging import CodePackage, package_code
from runyard.states import State

from runyard_slurm import sbatch, status
from runyard_slurm.config import load_defaults
from runyard_slurm.executor import LocalTunnel, SlurmExecutor, SSHTunnel, default_tunnel, parse_signal
from runyard_slurm.layout import Layout, attempt_dir_of, layout
from runyard_slurm.tunnel import CommandResult, Session, pool_key, session_for

POLL_MIN = 0.5  # seconds between polls right after something changed
POLL_GROWTH = 1.5  # the wait grows by this factor per poll that brings no news
LOST_GRACE = 10.0  # seconds a job may stay ended (or unknown) without a result before it is lost
SUBMITTED = "submitted.json"  # in an attempt folder: how its job was submitted (script, tag, array index)
_JOB_ERROR = re.compile(r"\bjob id (\S+?):")  # scancel's words about one job: "... on job id 123: why"
_GONE = ("already completing or completed", "Invalid job id", "has already finished", "already finished")


def _claim(session: Session, attempt_dir: str) -> dict[str, Any] | None:
    """The attempt's claim (see runyard.jobfiles.CLAIM); None when there is none (or it is empty:
    being written)."""
    return parse_claim(session.read(f"{attempt_dir}/{CLAIM}") or None)


def _base_attempt(ref: JobRef) -> int:
    """The attempt the job was submitted as (its launch records it; else the ref's)."""
    base = ref.handle.get("attempt")
    return base if isinstance(base, int) and not isinstance(base, bool) and base >= 1 else ref.attempt


def _attempt_now(ref: JobRef, job: status.SlurmJob | None) -> int:
    """The attempt the job runs now: the one it was submitted as plus the times Slurm ran it
    again (requeued); its job script counts them the same way (``sbatch.py``)."""
    if job is None or not job.restarts or "attempt" not in ref.handle:
        return ref.attempt
    return max(ref.attempt, _base_attempt(ref) + job.restarts)


def _scancel_failures(done: CommandResult, ids: Sequence[str]) -> dict[str, str]:
    """The jobs an ``scancel`` of ``ids`` that exited non-zero did not end, with what it said:
    those its lines ``... on job id 123: why`` name, unless they had ended already; every
    other job too when another error line says scancel refused the whole command."""
    named: dict[str, str] = {}
    refused: list[str] = []
    for line in done.stderr.splitlines():
        match = _JOB_ERROR.search(line)
        if match and match.group(1) in ids:
            named[match.group(1)] = " ".join(line.split())
        elif line.strip():
            refused.append(" ".join(line.split()))
    failed = {job_id: said for job_id, said in named.items() if not any(g in said for g in _GONE)}
    if refused or not named:
        said = "; ".join(refused) or done.output or f"exit code {done.exit_code}"
        failed.update({job_id: said for job_id in ids if job_id not in named})
    return failed


def tunnel_of(executor: Any) -> SSHTunnel | LocalTunnel:
    if not isinstance(executor, SlurmExecutor):
        raise BackendError(f"the Slurm backend got a {type(executor).__name__}")
    return executor.tunnel if executor.tunnel is not None else default_tunnel()


def _runner_files() -> tuple[str, dict[str, bytes]]:
    files = {}
    for name in JOB_FILES:  # the runners, runyard.job and its stand-in package
        with open(runner_path(name), "rb") as f:
            files[name] = f.read()
    digest = hashlib.sha256(b"".join(files[n] for n in sorted(files))).hexdigest()
    return digest, files


class _Tar:
    """The job files of one submission, as a tar stream (paths relative to the job folder)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()

    def add(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = int(time.time())
        self.tar.addfile(info, io.BytesIO(data))

    def add_dir(self, name: str) -> None:
        if name in self.dirs:
            return
        self.dirs.add(name)
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.mtime = int(time.time())
        self.tar.addfile(info)

    def bytes(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


@attrs.frozen
class Submission:
    """What ``SlurmBackend.launch`` submits for one job (its ``prepare``); every path is on the
    cluster, the job folder resolved there as launch resolves it (``~`` is the remote home)."""

    executor: SlurmExecutor
    experiment_id: str
    where: Layout
    files: sbatch.JobFiles
    task: dict[str, Any]  # the task.json the job reads (paths moved into the shipped code)
    package: CodePackage | None  # the code shipped into ``code_root``, if any
    after: tuple[str, ...] = ()  # job ids it starts after (``--dependency=afterok``)
    max_parallel: int | None = None  # of the jobs launched with it, at most this many run at once

    @property
    def code_root(self) -> str | None:
        return self.where.code_dir(self.package.sha256) if self.package is not None else None

    @property
    def script_path(self) -> str:
        return f"{self.files.attempt_dir}/job.sh"

    def script(self, *, show_secrets: bool = True) -> str:
        """The sbatch script of this job alone; ``show_secrets=False`` masks secret values."""
        return sbatch.render(
            self.executor, [self.files], experiment_id=self.experiment_id, after=self.after,
            output_dir=self.where.output_dir(self.experiment_id), show_secrets=show_secrets,
        )  # fmt: skip


class SlurmBackend(Backend):
    """Launches, polls and controls Slurm jobs; see the module docstring."""

    self_driving = True
    throttles_groups = True  # a task group's job array runs at most max_parallel elements at once (%N)

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._packages: dict[tuple[str, str | None, str | None], CodePackage | None] = {}
        # (session id, experiment id, remote path) known to exist: checked once per experiment,
        # so a job folder cleaned up meanwhile is filled again
        self._present: set[tuple[int, str, str]] = set()
        self._runner_sha, self._runner = _runner_files()
        self._accounting: dict[int, bool] = {}  # session id -> sacct works
        self._undecided: dict[str, float] = {}  # job id -> when it was first seen ended without result
        self._last: dict[str, State] = {}
        self._interval = POLL_MIN
        self._next_poll = 0.0
        self._polled: set[str] = set()
        self._poll_max = max(POLL_MIN, load_defaults().poll_max)

    # --- where ---------------------------------------------------------------------------
    def _where(self, executor: Any) -> tuple[Session, Layout]:
        tunnel = tunnel_of(executor)
        session = session_for(tunnel)
        return session, layout(session, tunnel)

    @staticmethod
    def _by_cluster(executors: Sequence[Any]) -> dict[tuple[Any, ...], list[int]]:
        """Indexes of ``executors`` grouped by connection and job folder, without any I/O
        (so an unreachable cluster costs one retry period per poll or launch, not one per job)."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, executor in enumerate(executors):
            tunnel = tunnel_of(executor)
            groups.setdefault((*pool_key(tunnel), tunnel.job_dir), []).append(index)
        return groups

    def can_chain(self, job: JobSpec, dependencies: Sequence[JobRef]) -> bool:
        """Chain when every dependency is a job on the same cluster (host, port, user)."""
        if not isinstance(job.executor, SlurmExecutor):
            return False
        cluster = tunnel_of(job.executor).cluster()
        return all(
            isinstance(dep.executor, SlurmExecutor) and tunnel_of(dep.executor).cluster() == cluster
            for dep in dependencies
        )

    # --- launching --------------------------------------------------------------------------
    def _launch(self, job: JobSpec) -> Launched:
        [result] = self.launch_many([job])
        if isinstance(result, Exception):
            raise result
        return result

    def launch_many(self, jobs: Sequence[JobSpec]) -> list[Launched | Exception]:
        results: list[Launched | Exception | None] = [None] * len(jobs)
        for indexes in self._by_cluster([job.executor for job in jobs]).values():
            batch = [jobs[i] for i in indexes]
            try:
                launched = self._submit(batch)
            except Exception as exc:  # the whole batch failed (connection, tar, ...)
                error = exc if isinstance(exc, BackendError) else BackendError(f"{type(exc).__name__}: {exc}")
                launched = [error] * len(batch)
            for i, item in zip(indexes, launched, strict=True):
                results[i] = item
        with self._lock:
            self._next_poll = time.monotonic() + POLL_MIN
            self._interval = POLL_MIN
        return [r if r is not None else BackendError("not launched") for r in results]

    def _package(self, job: JobSpec) -> CodePackage | None:
        executor = job.executor
        assert isinstance(executor, SlurmExecutor)
        key = (job.experiment_id, executor.code, job.cwd)
        with self._lock:
            if key not in self._packages:
                cwd = job.cwd or os.getcwd()
                self._packages[key] = package_code(
                    executor.code, cwd, os.path.join(job.experiment_dir, "code")
                )
            return self._packages[key]

    def _ship_code(self, session: Session, where: Layout, package: CodePackage, experiment_id: str) -> str:
        root = where.code_dir(package.sha256)
        marker = f"{root}/.complete"
        if (id(session), experiment_id, marker) in self._present:
            return root
        if session.stat(marker) is None:
            session.run(f"mkdir -p {shlex.quote(where.job_dir)}/code")
            archive = f"{root}.tar.gz"
            session.upload(package.path, archive)
            done = session.run(
                f"mkdir -p {shlex.quote(root)} && tar -x -o -z -f {shlex.quote(archive)} -C {shlex.quote(root)}"
                f" && touch {shlex.quote(marker)} && rm -f {shlex.quote(archive)}"
            )
            if done.exit_code != 0:
                raise BackendError(f"cannot unpack the code on {session.where}: {done.output}")
        self._present.add((id(session), experiment_id, marker))
        return root

    def prepare(self, job: JobSpec) -> Submission:
        """The job's sbatch script and files, as ``launch`` submits them (nothing is sent;
        the cluster is asked for its home folder when the job folder is relative to it)."""
        return self._prepare(job, self._where(job.executor)[1])

    def _prepare(self, job: JobSpec, where: Layout) -> Submission:
        executor = job.executor
        assert isinstance(executor, SlurmExecutor)
        package = self._package(job)
        code_root = where.code_dir(package.sha256) if package is not None else None
        task = relocated_task(job.task_dir, package, code_root)
        task_dir = where.task_dir(job.experiment_id, job.task_id)
        command = runner_command(
            job,
            python=executor.python,
            runner_dir=where.runner_dir(self._runner_sha),
            task_dir=task_dir,
            task=task,
        )
        if package is not None and code_root is not None:
            cwd: str | None = package.relocate(os.path.join(package.root, package.cwd), code_root)
        else:
            cwd = job.cwd
        env = dict(job.env, RUNYARD_TASK_DIR=task_dir)  # the task's folder where it runs
        if executor.signal is not None:  # the runner takes this signal for the warning (runyard.job)
            env["RUNYARD_PREEMPT_SIGNAL"] = parse_signal(executor.signal)[1]
        files = sbatch.JobFiles(
            job.task_id, job.attempt, where.experiment_dir(job.experiment_id), env, tuple(command), cwd,
            job.launcher,
        )  # fmt: skip
        after = tuple(r.job_id for r in job.after)
        return Submission(executor, job.experiment_id, where, files, task, package, after, job.max_parallel)

    def _submit(self, jobs: Sequence[JobSpec]) -> list[Launched | Exception]:
        session, where = self._where(jobs[0].executor)
        tar = _Tar()
        runner_dir = where.runner_dir(self._runner_sha)
        shipped = (id(session), jobs[0].experiment_id, runner_dir)
        if shipped not in self._present and session.stat(f"{runner_dir}/runner.sh") is None:
            for name, data in self._runner.items():
                tar.add(f"{where.relative(runner_dir)}/{name}", data, 0o755)
        self._present.add(shipped)

        results: list[Launched | Exception | None] = [None] * len(jobs)
        prepared: list[tuple[int, Submission]] = []
        for index, job in enumerate(jobs):
            try:
                submission = self._prepare(job, where)
                if submission.package is not None:
                    self._ship_code(session, where, submission.package, job.experiment_id)
            except Exception as exc:
                results[index] = (
                    exc if isinstance(exc, BackendError) else BackendError(f"{type(exc).__name__}: {exc}")
                )
                continue
            tar.add(
                where.relative(f"{submission.files.task_dir}/task.json"), json.dumps(submission.task).encode()
            )
            tar.add_dir(where.relative(submission.files.attempt_dir))
            prepared.append((index, submission))

        # one script per job, or per group of identical executors with the same dependencies
        groups: list[list[tuple[int, Submission]]] = []
        for index, submission in prepared:
            for group in groups:
                first = group[0][1]
                if (
                    submission.executor.array
                    and first.executor == submission.executor
                    and first.after == submission.after
                    and first.max_parallel == submission.max_parallel
                ):
                    group.append((index, submission))
                    break
            else:
                groups.append([(index, submission)])
        scripts: list[str] = []
        tags: dict[str, str] = {}
        for group in groups:
            first = group[0][1]
            files = [s.files for _, s in group]
            tag = sbatch.tag(first.experiment_id, files)
            try:
                if len(group) > 1:
                    text = sbatch.render(
                        first.executor, files, experiment_id=first.experiment_id,
                        after=first.after, output_dir=where.output_dir(first.experiment_id), array=True,
                        max_parallel=first.max_parallel,
                    )  # fmt: skip
                    # named by its tag: the same tasks submitted again find this submission
                    script = f"{where.output_dir(first.experiment_id)}/{tag.rpartition('/')[2]}.sh"
                else:
                    text, script = first.script(), first.script_path
            except BackendError as exc:
                for index, _ in group:
                    results[index] = exc
                scripts.append("")
                continue
            tar.add(where.relative(script), text.encode(), 0o700)  # it may hold secrets
            for position, (index, submission) in enumerate(group):  # how adopt finds the job
                record = {
                    "script": script,
                    "tag": tag,
                    "index": position if len(group) > 1 else None,
                    "launch": jobs[index].env.get("RUNYARD_LAUNCH_ID"),
                }
                path = where.relative(f"{submission.files.attempt_dir}/{SUBMITTED}")
                tar.add(path, json.dumps(record).encode())
            scripts.append(script)
            tags[script] = tag

        to_submit = [s for s in scripts if s]
        if to_submit:
            command = sbatch.submit_command(where.job_dir, [(s, tags[s]) for s in to_submit])
            done = session.run(command, stdin=tar.bytes())
            answers = sbatch.parse_submit_output(done.stdout, len(to_submit)) if done.stdout.strip() else []
            if len(answers) != len(to_submit):
                raise BackendError(
                    f"submitting to Slurm on {session.where} failed: {done.output or done.exit_code}"
                )
            by_script = dict(zip(to_submit, answers, strict=True))
            for group, script in zip(groups, scripts, strict=True):
                if not script:
                    continue
                answer = by_script[script]
                for position, (index, _) in enumerate(group):
                    if answer.job_id is None:
                        results[index] = BackendError(answer.error or "sbatch refused the job")
                        continue
                    array = len(group) > 1
                    job_id = f"{answer.job_id}_{position}" if array else answer.job_id
                    handle = {
                        "cluster": tunnel_of(jobs[index].executor).cluster(),
                        "job_dir": where.job_dir,
                        "array": answer.job_id if array else None,
                        "attempt": jobs[index].attempt,  # the one it runs as, until Slurm requeues it
                    }
                    results[index] = Launched(job_id=job_id, handle=handle, state=State.SUBMITTED)
        return [r if r is not None else BackendError("not launched") for r in results]

    def adopt(self, job: JobSpec) -> Launched | None:
        """The Slurm job whose runner claimed this attempt (its claim names the job id), else the
        job submitted for it that has not started yet (found by its tag: ``_submitted``)."""
        session, where = self._where(job.executor)
        attempt_dir = where.attempt_dir(job.experiment_id, job.task_id, job.attempt)
        claim = _claim(session, attempt_dir)
        if not claim or not claim.get("slurm_job_id"):
            return self._submitted(session, where, job, attempt_dir)
        array, index = claim.get("slurm_array_job_id"), claim.get("slurm_array_task_id")
        job_id = f"{array}_{index}" if array and index is not None else str(claim["slurm_job_id"])
        handle = {
            "cluster": tunnel_of(job.executor).cluster(),
            "job_dir": where.job_dir,
            "array": str(array) if array else None,
            "attempt": job.attempt,  # as if submitted as it (a job Slurm requeued before: see _attempt_now)
            "launch": claim.get("launch"),
        }
        return Launched(job_id=job_id, handle=handle, state=State.RUNNING)

    def _submitted(self, session: Session, where: Layout, job: JobSpec, attempt_dir: str) -> Launched | None:
        """The job a launch submitted for this attempt, looked up by the tag the launch recorded in
        the attempt folder (``SUBMITTED``, shipped with the job files before ``sbatch`` ran):
        the job id kept beside its script, else the job Slurm knows by the tag."""
        try:
            record = json.loads(session.read(f"{attempt_dir}/{SUBMITTED}") or b"null")
        except ValueError:
            return None
        if not isinstance(record, dict) or not record.get("script") or not record.get("tag"):
            return None  # never submitted
        done = session.run(sbatch.find_command(str(record["script"]), str(record["tag"])))
        found = done.stdout.strip().split(";")[0].strip() if done.exit_code == 0 else ""
        if not found.isdigit():
            return None
        index = record.get("index")
        array = isinstance(index, int) and not isinstance(index, bool)
        handle = {
            "cluster": tunnel_of(job.executor).cluster(),
            "job_dir": where.job_dir,
            "array": found if array else None,
            "attempt": job.attempt,
            "launch": record.get("launch"),
        }
        return Launched(job_id=f"{found}_{index}" if array else found, handle=handle, state=State.SUBMITTED)

    # --- status ---------------------------------------------------------------------------
    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        now = time.monotonic()
        ids = {j.job_id for j in jobs}
        with self._lock:
            if ids <= self._polled and now < self._next_poll:
                return {}  # backing off: nothing new to ask about, and not due yet
        out: dict[str, JobStatus] = {}
        errors: list[BackendError] = []
        for indexes in self._by_cluster([job.executor for job in jobs]).values():
            refs = [jobs[i] for i in indexes]
            try:
                session, where = self._where(refs[0].executor)
                out.update(self._poll_cluster(session, where, refs))
            except BackendError as exc:  # this cluster is unreachable: no news from it
                errors.append(exc)
        refused = [e for e in errors if isinstance(e, BackendRefusedError)]
        if refused:  # only a person can fix it: say so, even while other clusters answer
            raise refused[0]
        if errors and not out:
            raise errors[0]
        with self._lock:
            changed = any(out[j].state is not self._last.get(j) for j in out)
            for job_id, st in out.items():
                self._last[job_id] = st.state
            self._interval = POLL_MIN if changed else min(self._interval * POLL_GROWTH, self._poll_max)
            self._next_poll = time.monotonic() + self._interval
            self._polled = ids
        return out

    def _poll_cluster(self, session: Session, where: Layout, refs: list[JobRef]) -> dict[str, JobStatus]:
        done = session.run(status.squeue_command(r.job_id for r in refs))
        if done.exit_code != 0 and not status.squeue_forgot_all(done.stderr):
            raise BackendError(f"squeue failed on {session.where}: {done.output}")
        remote_now, known = status.parse_squeue(done.stdout)
        missing = [r.job_id for r in refs if r.job_id not in known]
        # jobs Slurm ran again since runyard last looked: sacct says how their run before ended
        requeued = [
            r.job_id for r in refs if r.job_id in known and _attempt_now(r, known[r.job_id]) > r.attempt
        ]
        if (missing or requeued) and self._accounting.get(id(session), True):
            acct = session.run(status.sacct_command(missing + requeued))
            if acct.exit_code != 0 and status.accounting_missing(acct.stderr + acct.stdout):
                self._accounting[id(session)] = False
            elif acct.exit_code == 0:
                self._accounting[id(session)] = True
                for job_id, accounted in status.parse_sacct(acct.stdout).items():
                    if job_id in known:  # squeue's view of it stands; sacct adds why it ran again
                        known[job_id] = attrs.evolve(known[job_id], requeued_by=accounted.requeued_by)
                    else:
                        known[job_id] = accounted
        out: dict[str, JobStatus] = {}
        for ref in refs:
            job = known.get(ref.job_id)
            attempt = _attempt_now(ref, job)  # a requeued job's run is an attempt of its own
            attempt_dir = attempt_dir_of(attrs.evolve(ref, attempt=attempt), where)
            result = None
            if job is None or job.state in status.ENDED:
                result = parse_result(session.read(f"{attempt_dir}/{RESULT}"))
            if job is None and (result is None or int(result["exit_code"]) > 128):
                # Slurm forgot the job: slurmstepd's words in its output say how Slurm ended it
                first = attempt_dir_of(attrs.evolve(ref, attempt=_base_attempt(ref)), where)  # Slurm's output
                said = status.ending_in_output(self._output(session, first))
                job = status.SlurmJob(ref.job_id, said) if said else None
            decided = status.job_status(job, result)
            if decided and job and job.state == "FAILED" and result and int(result["exit_code"]) > 128:
                tail = self._output_tail(session, attempt_dir)  # srun's words: who stopped it
                decided.reason = f"{decided.reason}; its output ends with: {tail}" if tail else decided.reason
            if decided is None:
                # ended without a result: if another launch's runner claimed the attempt, this
                # job ran nothing (its runner saw the claim) and that one is the one to follow
                claim = _claim(session, attempt_dir)
                if claimed_by_other(claim, ref.handle.get("launch")):
                    assert claim is not None
                    self._undecided.pop(ref.job_id, None)
                    out[ref.job_id] = superseded_status(claim)
                    continue
                decided = self._maybe_lost(session, ref, job, attempt_dir, remote_now)
            else:
                self._undecided.pop(ref.job_id, None)
            if decided is not None:
                if attempt > ref.attempt and job is not None:
                    decided.attempt = attempt
                    decided.requeued_by = status.requeue_failure(job)  # how the run before ended
                out[ref.job_id] = decided
        return out

    def _maybe_lost(
        self,
        session: Session,
        ref: JobRef,
        job: status.SlurmJob | None,
        attempt_dir: str,
        remote_now: float | None,
    ) -> JobStatus | None:
        """A job that ended (or that Slurm forgot) without a result: lost, unless its runner
        still beats. One that Slurm says COMPLETED (or forgot) gets a grace period first: a
        shared file system may show the result late, and success must not be taken for loss.
        One that Slurm says FAILED has failed whatever the result will say."""
        now = time.monotonic()
        since = self._undecided.setdefault(ref.job_id, now)
        failed_in_slurm = job is not None and job.state == "FAILED"
        if now - since < LOST_GRACE and not failed_in_slurm:
            return None
        if job is None:
            beat = session.stat(f"{attempt_dir}/{HEARTBEAT}")
            if beat is None:  # its runner never started: it left the queue (an array element
                # cancelled while pending leaves no record at all)
                self._undecided.pop(ref.job_id, None)
                return JobStatus(
                    State.CANCELLED, reason=f"job {ref.job_id} left Slurm's queue without starting"
                )
            if remote_now is not None and not heartbeat_is_stale(beat.mtime, remote_now):
                return None  # Slurm forgot it but its runner is alive: wait
        tail = self._output_tail(session, attempt_dir)
        if job is None:
            reason = f"lost: Slurm no longer knows job {ref.job_id} and it left no result"
        else:
            reason = f"the job ended ({job.state} in Slurm) without a result from the runner"
        self._undecided.pop(ref.job_id, None)
        # FAILED in Slurm: its script failed before or around the runner (it says why in its output)
        failure = "error" if failed_in_slurm else None
        return JobStatus(
            State.FAILED, reason=reason + (f"; its output ends with: {tail}" if tail else ""), failure=failure
        )

    def _output(self, session: Session, attempt_dir: str) -> str:
        """The end of the attempt's ``slurm.out`` ("" if it cannot be read)."""
        try:
            data = session.read(f"{attempt_dir}/slurm.out")
        except BackendError:
            return ""
        return data[-2000:].decode(errors="replace")

    def _output_tail(self, session: Session, attempt_dir: str) -> str:
        lines = [line.strip() for line in self._output(session, attempt_dir).splitlines() if line.strip()]
        return " | ".join(lines[-5:])[-800:]

    def poll_interval(self) -> float:
        return self._interval

    # --- control ----------------------------------------------------------------------------
    def _session_of(self, job: JobRef) -> Session:
        return self._where(job.executor)[0]

    def _cancel(self, job: JobRef) -> None:
        [error] = self.cancel_many([job])
        if error is not None:
            raise error

    def cancel_many(self, jobs: Sequence[JobRef]) -> list[Exception | None]:
        """One ``scancel`` per cluster for all of its jobs (one round trip, however many)."""
        results: list[Exception | None] = [None] * len(jobs)
        clusters: dict[tuple[Any, ...], list[int]] = {}  # by connection (job folders do not matter)
        for index, job in enumerate(jobs):
            clusters.setdefault(pool_key(tunnel_of(job.executor)), []).append(index)
        for indexes in clusters.values():
            ids = list(dict.fromkeys(jobs[i].job_id for i in indexes if jobs[i].job_id))
            if not ids:
                continue
            session = session_for(tunnel_of(jobs[indexes[0]].executor))
            try:
                done = session.run("scancel " + " ".join(shlex.quote(i) for i in ids))
            except Exception as exc:  # this cluster cannot be reached: none of its jobs ended
                error = exc if isinstance(exc, BackendError) else BackendError(f"{type(exc).__name__}: {exc}")
                for i in indexes:
                    results[i] = error
                continue
            if done.exit_code != 0:  # scancel went on past the jobs it could not end: say which
                failed = _scancel_failures(done, ids)
                for i in indexes:
                    said = failed.get(jobs[i].job_id)
                    if said is not None:
                        results[i] = BackendError(f"scancel failed on {session.where}: {said}")
        with self._lock:
            self._next_poll = 0.0
        return results

    def _control(self, job: JobRef, what: str, actions: dict[str, str]) -> None:
        session = self._session_of(job)
        job_id = shlex.quote(job.job_id)
        cases = " ".join(
            f"{'|'.join(states.split())}) scontrol {verb} {job_id};;" for states, verb in actions.items()
        )
        command = (
            f"s=$(squeue -h -t all -j {job_id} -o %T) || exit 3; "
            f'case "$s" in {cases} *) echo "state=$s" >&2; exit 4;; esac'
        )
        done = session.run(command)
        if done.exit_code == 0:
            with self._lock:
                self._next_poll = 0.0
            return
        if done.exit_code == 4:
            state = done.stderr.strip().removeprefix("state=") or "unknown to Slurm"
            raise BackendError(f"cannot {what} job {job.job_id}: Slurm says it is {state}")
        hint = ""
        if "denied" in done.output.lower() or "not supported" in done.output.lower():
            hint = (
                " (suspending and resuming a running job needs Slurm operator or administrator rights"
                " on most clusters; a pending job can be held and released by its owner)"
            )
        raise BackendError(f"Slurm refused to {what} job {job.job_id}: {done.output}{hint}")

    def _pause(self, job: JobRef) -> None:
        """A pending job is held (``scontrol hold``), a running one suspended."""
        self._control(job, "pause", {"PENDING REQUEUED": "hold", "RUNNING": "suspend"})

    def _resume(self, job: JobRef) -> None:
        """A held job is released (``scontrol release``), a suspended one resumed."""
        self._control(job, "resume", {"PENDING": "release", "SUSPENDED": "resume"})

    # --- dry run --------------------------------------------------------------------------
    def dry_run(self, job: JobSpec) -> str:
        """The sbatch script ``launch`` would submit (secret values masked); runs nothing there."""
        submission = self.prepare(job)
        tunnel = tunnel_of(job.executor)
        package = submission.package
        if package is not None:
            code = (
                f"{package.root} ({package.kind}, SHA-256 {package.sha256[:16]}) into {submission.code_root}"
            )
        else:
            code = "nothing (SlurmExecutor.code is None, or no git work tree)"
        return (
            f"# slurm on {tunnel.describe()} ({tunnel.cluster()}): "
            f"sbatch --parsable {submission.script_path}\n# code shipped: {code}\n"
            + submission.script(show_secrets=False)
        )

    def _close(self) -> None:
        from runyard_slurm.tunnel import close_sessions

        close_sessions()
