"""The in-job runner's command line (:func:`runner_command`), the files it writes, and how a
backend reads them into a status.

Shared by every backend: the runner's ``result.json`` decides the exit code (it beats a
scheduler that forgot the job); no result and a dead job means the job was lost.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from importlib import resources
from typing import Any

from runyard.errors import BackendError
from runyard.executor import JobSpec, JobStatus
from runyard.packaging import CodePackage
from runyard.runner import script_argv
from runyard.states import State

RESULT = "result.json"
CLAIM = "claim.json"  # written first, exclusively, by the runner that runs the attempt
CLAIMED_EXIT = 75  # a runner that finds the attempt claimed already exits with this, running nothing
HEARTBEAT = "heartbeat"
JOURNAL = "journal.log"
STDOUT = "stdout.log"
STDERR = "stderr.log"
TASK = "task.json"


# The files every job carries, by their paths in the job's runner folder (RUNNER_DIR), which
# are their paths in core too: the runners, the in-task helper ``runyard.job``, and the
# stand-in ``runyard`` package the runners put on the task's PYTHONPATH (``import runyard.job``
# where runyard is not installed).
JOB_FILES = ("runner.py", "runner.sh", "job.py", "_shim/runyard/__init__.py")


def runner_path(name: str = "runner.py") -> str:
    """Path of one of the :data:`JOB_FILES` (default: the runner, ``runner.py``) in core."""
    return str(resources.files("runyard").joinpath(name))


def runner_command(
    job: JobSpec,
    *,
    python: str,
    runner_dir: str | None = None,
    task_dir: str | None = None,
    task: dict[str, Any] | None = None,
    bash: bool = True,
) -> list[str]:
    """The command line that starts the in-job runner on one attempt; every backend builds
    it here. A Script task: ``bash RUNNER_DIR/runner.sh TASK_DIR ATTEMPT PROGRAM [ARGS...]``;
    any other: ``PYTHON RUNNER_DIR/runner.py TASK_DIR ATTEMPT``.

    Paths are the job's: ``runner_dir`` holds ``runner.py`` and ``runner.sh`` (default:
    core's, on this machine), ``task_dir`` is the task folder (default ``job.task_dir``).
    ``task``: the ``task.json`` the job reads, when its paths moved (:func:`relocated_task`);
    a Script's program is then the one it names (default ``job.argv``). ``bash=False`` runs
    a Script under ``runner.py`` (which starts the program itself), where bash may be missing;
    so does a launcher (``job.launcher``): ``runner.py`` starts it, and the task once per rank.
    """
    runner_dir = runner_dir or os.path.dirname(runner_path())
    where = task_dir or job.task_dir
    if job.is_script and bash and job.launcher is None:  # (under a launcher: runner.py starts it)
        program = script_argv(task["task"]) if task is not None else job.argv
        return ["bash", f"{runner_dir}/runner.sh", where, str(job.attempt), *program]
    return [python, f"{runner_dir}/runner.py", where, str(job.attempt)]


def parse_result(text: str | bytes | None) -> dict[str, Any] | None:
    """The runner's result, or None when absent or not complete yet."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "exit_code" in data else None


def _read_local(path: str) -> bytes | None:
    """A runner file's bytes; None when it does not exist. Any other error (too many open
    files, permissions, I/O) is no answer at all: raised as BackendError, never taken for
    "the runner wrote nothing"."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc}") from None


def read_local_result(attempt_dir: str) -> dict[str, Any] | None:
    return parse_result(_read_local(os.path.join(attempt_dir, RESULT)))


def parse_claim(text: str | bytes | None) -> dict[str, Any] | None:
    """A runner's claim; ``{}`` for a claim being written (claimed, owner not known yet);
    None when there is none."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def read_local_claim(attempt_dir: str) -> dict[str, Any] | None:
    return parse_claim(_read_local(os.path.join(attempt_dir, CLAIM)))


def claimed_by_other(claim: dict[str, Any] | None, launch: str | None) -> bool:
    """Whether ``claim`` shows that another launch than ``launch`` runs the attempt."""
    if not claim or launch is None:
        return False
    return claim.get("launch") not in (None, launch)


def superseded_status(claim: dict[str, Any]) -> JobStatus:
    """The status of a job whose attempt another launch claimed: core adopts that one."""
    return JobStatus(state=State.RUNNING, claim=claim)


def timestamp(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)


def utc(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)


def status_from_result(result: dict[str, Any]) -> JobStatus:
    """A final status from the runner's result file."""
    code = int(result["exit_code"])
    return JobStatus(
        state=State.SUCCEEDED if code == 0 else State.FAILED,
        exit_code=code,
        reason=None if code == 0 else (result.get("error") or f"exit code {code}"),
        start_time=timestamp(result.get("start")),
        end_time=timestamp(result.get("end")),
    )


def status_of_ended_job(result: dict[str, Any] | None, backend_reason: str | None = None) -> JobStatus:
    """The status of a job the backend says has ended: its result, or lost without one."""
    if result is not None:
        status = status_from_result(result)
        if backend_reason and status.state is State.FAILED:
            status.reason = backend_reason
        return status
    return JobStatus(
        state=State.FAILED,
        reason=backend_reason or "lost: the job ended without writing a result (killed?)",
    )


def relocated_task(
    task_dir: str, package: CodePackage | None, remote_code_root: str | None
) -> dict[str, Any]:
    """The task's ``task.json`` for a job that runs elsewhere, with the script and import
    paths moved into the shipped code (paths outside the code are kept as they are): the
    launching script, the import paths, and a Script task's absolute ``path``."""
    with open(os.path.join(task_dir, TASK), "rb") as f:
        spec: dict[str, Any] = json.load(f)
    if package is not None and remote_code_root:
        root = remote_code_root
        spec["python_path"] = [package.relocate(p, root) for p in spec.get("python_path") or []]
        if root not in spec["python_path"]:
            spec["python_path"].append(root)
        if spec.get("main_path"):
            spec["main_path"] = package.relocate(spec["main_path"], root)
        task = spec.get("task")
        if (
            isinstance(task, dict)
            and task.get("__runyard__") == "script"
            and os.path.isabs(task.get("path") or "")
        ):
            task["path"] = package.relocate(task["path"], root)  # a Script's file
    return spec


def heartbeat_is_stale(heartbeat_mtime: float | None, now: float, interval: float = 5.0) -> bool:
    """A runner that has not touched its heartbeat for 3 intervals (and 30 s) is taken for lost.

    Used by backends that cannot see the process (a batch scheduler that forgot the job): a
    stale heartbeat and no result means the job was lost.
    """
    if heartbeat_mtime is None:
        return False
    return now - heartbeat_mtime > max(3 * interval, 30.0)
