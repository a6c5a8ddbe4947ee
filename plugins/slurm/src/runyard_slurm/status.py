"""Slurm's view of jobs (``squeue``, ``sacct``) and how it becomes a task status.

A poll is one ``squeue`` for every job of the experiment (``-r``: one line per array
element; ``-t all``: ended jobs too, while Slurm keeps them, ``MinJobAge``), then ``sacct``
for the jobs squeue has forgotten (or that Slurm has just requeued), where accounting exists. The runner's ``result.json``
decides the exit code of a job that ended; a job both have forgotten still gets its final
state from that file, and how Slurm ended it from the job's output (``slurm.out``, where
slurmstepd writes ``*** JOB 12 ON node CANCELLED AT ... DUE TO TIME LIMIT ***``).

A job Slurm ran again by itself (requeued: ``scontrol requeue``, a node failure or a
preemption with ``--requeue``) counts its restarts (squeue's ``RestartCnt``; sacct ``-D``
lists one record per run): each run is an attempt of its own (see ``sbatch.py``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Any

import attrs
from runyard.executor import JobStatus
from runyard.jobfiles import status_from_result, timestamp
from runyard.states import State

SQUEUE_FORMAT = "JobArrayID:|,State:|,Reason:|,RestartCnt:"  # squeue -O: id|STATE|reason|restarts
SACCT_FIELDS = "JobID,State,ExitCode,Reason"

PENDING = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "CONFIGURING"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "POWER_UP_NODE"})
PAUSED = frozenset({"SUSPENDED", "STOPPED"})
# ended by Slurm for a reason of its own: FAILED, with that reason and failure kind
FAILURE_REASONS = {
    "TIMEOUT": "the job reached its time limit (SlurmExecutor.time)",
    "OUT_OF_MEMORY": "the job ran out of memory (SlurmExecutor.mem)",
    "PREEMPTED": "the job was preempted by a higher-priority job",
    "NODE_FAIL": "a node of the job failed",
    "BOOT_FAIL": "a node of the job failed to boot",
    "DEADLINE": "the job reached its deadline",
    "SPECIAL_EXIT": "the job ended in Slurm's special-exit state",
}
FAILURE_KINDS = {  # runyard's failure kinds (``states.FAILURES``) of those endings
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "OUT_OF_MEMORY": "oom",
    "PREEMPTED": "preempted",
    "NODE_FAIL": "node_failure",
    "BOOT_FAIL": "node_failure",
}
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "REVOKED", *FAILURE_REASONS})
CANCELLED_OUTSIDE = "cancelled outside runyard (scancel in Slurm)"

# slurmstepd's last words in a job's output, and the state they stand for
_STEPD_ENDING = re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))? \*\*\*")
_DUE_TO: dict[str, str | None] = {
    "TIME LIMIT": "TIMEOUT", "PREEMPTION": "PREEMPTED", "NODE FAILURE": "NODE_FAIL",
    "JOB REQUEUE": None,  # no ending: the job runs again
}  # fmt: skip
_OOM = re.compile(r"Detected \d+ oom[-_ ]kill event")

# what sacct says when the cluster keeps no accounting
NO_ACCOUNTING = ("accounting storage is disabled", "accounting_storage/none")


@attrs.frozen
class SlurmJob:
    """One job (or array element) as Slurm reports it."""

    job_id: str
    state: str  # the base state, e.g. CANCELLED (sacct's "CANCELLED by 0" loses " by 0")
    reason: str | None = None
    exit_code: int | None = None  # sacct only
    restarts: int = 0  # times Slurm ran it again (requeued)
    requeued_by: str | None = None  # how the run before the last ended (sacct -D): NODE_FAIL, ...


def _base_state(text: str) -> str:
    return text.strip().split()[0].rstrip("+") if text.strip() else ""


def squeue_command(job_ids: Iterable[str]) -> str:
    """Prints the cluster's clock (epoch seconds), then one ``id|STATE|reason|restarts`` line
    per job."""
    ids = ",".join(job_ids)
    return f"date +%s && squeue -h -r -t all -j {shlex.quote(ids)} -O {shlex.quote(SQUEUE_FORMAT)}"


def parse_squeue(stdout: str) -> tuple[float | None, dict[str, SlurmJob]]:
    """The cluster's clock and the jobs of :func:`squeue_command`'s output."""
    lines = stdout.splitlines()
    now: float | None = None
    if lines and lines[0].strip().isdigit():
        now = float(lines.pop(0))
    jobs: dict[str, SlurmJob] = {}
    for line in lines:
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        reason = (
            parts[2].strip() if len(parts) > 2 and parts[2].strip() not in ("", "None", "(null)") else None
        )
        restarts = parts[3].strip() if len(parts) > 3 else ""
        jobs[parts[0].strip()] = SlurmJob(
            parts[0].strip(),
            _base_state(parts[1]),
            reason,
            restarts=int(restarts) if restarts.isdigit() else 0,
        )
    return now, jobs


def squeue_forgot_all(stderr: str) -> bool:
    """squeue exits 1 with this when none of the ids is known any more."""
    return "Invalid job id" in stderr


def sacct_command(job_ids: Iterable[str]) -> str:
    """One record per run of each job (``-D``: a requeued job's earlier runs too), oldest first."""
    ids = ",".join(job_ids)
    return f"sacct -X -D -n -P -j {shlex.quote(ids)} -o {SACCT_FIELDS}"


def parse_sacct(stdout: str) -> dict[str, SlurmJob]:
    """Jobs of :func:`sacct_command`'s output: the last record of a job is its current run,
    the ones before it its earlier runs (restarts; the one just before says how it ended)."""
    jobs: dict[str, SlurmJob] = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0] or "[" in parts[0]:
            continue  # "123_[4-9]": array elements that never started
        code: int | None = None
        head = parts[2].split(":")[0]
        if head.isdigit():
            code = int(head)
        reason = parts[3].strip() if len(parts) > 3 and parts[3].strip() not in ("", "None") else None
        job_id = parts[0].strip()
        earlier = jobs.get(job_id)
        restarts, requeued_by = (earlier.restarts + 1, earlier.state) if earlier is not None else (0, None)
        jobs[job_id] = SlurmJob(job_id, _base_state(parts[1]), reason, code, restarts, requeued_by)
    return jobs


def ending_in_output(text: str) -> str | None:
    """The state Slurm ended a job in, from slurmstepd's words in its output (the last ones
    win): ``CANCELLED``, ``TIMEOUT``, ``PREEMPTED``, ``NODE_FAIL`` or ``OUT_OF_MEMORY``; None
    if it says nothing of an ending (a ``JOB REQUEUE`` is none: the job runs again)."""
    said: str | None = None
    for line in text.splitlines():
        if match := _STEPD_ENDING.search(line):
            said = _DUE_TO.get(match.group(1), said) if match.group(1) else "CANCELLED"
        elif _OOM.search(line):
            said = "OUT_OF_MEMORY"
    return said


def requeue_failure(job: SlurmJob) -> str | None:
    """The failure kind of the run before a requeued job's current one, when sacct says it
    (NODE_FAIL: ``node_failure``; PREEMPTED: ``preempted``); None lets core say ``preempted``."""
    return FAILURE_KINDS.get(job.requeued_by or "")


def accounting_missing(stderr: str) -> bool:
    text = stderr.lower()
    return any(marker in text for marker in NO_ACCOUNTING)


def _times(result: dict[str, Any] | None) -> dict[str, Any]:
    if result is None:
        return {}
    return {"start_time": timestamp(result.get("start")), "end_time": timestamp(result.get("end"))}


def job_status(job: SlurmJob | None, result: dict[str, Any] | None) -> JobStatus | None:
    """A task's status from Slurm's view of its job and the runner's result (None if absent).

    Returns None when they do not decide it yet: the job is unknown to Slurm (or ended
    normally) and left no result — the caller waits a moment (file systems lag) and then
    calls it lost.
    """
    if job is None:
        return status_from_result(result) if result is not None else None
    state = job.state
    if state in PENDING:
        return JobStatus(State.SUBMITTED)
    if state in RUNNING:
        return JobStatus(State.RUNNING)
    if state in PAUSED:
        return JobStatus(State.PAUSED)
    code = int(result["exit_code"]) if result is not None else None
    if state == "COMPLETED":
        return status_from_result(result) if result is not None else None
    if state == "FAILED":
        if result is None:
            return None
        status = status_from_result(result)
        if status.state is State.SUCCEEDED:  # another task process of the job failed
            return JobStatus(
                State.FAILED, exit_code=code, **_times(result),
                reason="Slurm says the job FAILED although its first task process exited 0 "
                "(another process of the job failed?)",
            )  # fmt: skip
        return status
    if state in ("CANCELLED", "REVOKED"):
        if job.reason and job.reason.startswith("Dependency"):
            reason = "dependency failed"
        elif state == "REVOKED":
            reason = "revoked by Slurm (the job ran on another cluster of the federation)"
        else:
            reason = CANCELLED_OUTSIDE
        failure = "dependency" if reason == "dependency failed" else "cancelled"
        return JobStatus(State.CANCELLED, exit_code=code, reason=reason, failure=failure, **_times(result))
    if state in FAILURE_REASONS:
        return JobStatus(
            State.FAILED, exit_code=code, reason=f"{state}: {FAILURE_REASONS[state]}",
            failure=FAILURE_KINDS.get(state), **_times(result),
        )  # fmt: skip
    return None  # a state this version does not know: no news
