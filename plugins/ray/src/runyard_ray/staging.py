"""What a Ray job is given: its working dir (a zip the head keeps, content-addressed) and what to
run in it (``$RUNYARD_RAY_JOB``, read by ``jobmain.py``).

The working dir holds ``ray_job.py`` (``jobmain.py``), ``runner/`` (core's job files) and, when
code is shipped, ``code/`` (the user's code, as ``runyard.packaging`` makes it). It is the same
for every task of an experiment and code version, so it is uploaded once and Ray unpacks it
once per node. The task's own part (its ``task.json``, with paths moved into the working dir)
travels in the job's environment.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import tarfile
import threading
import zipfile
from importlib import resources
from typing import Any

import attrs
from runyard.errors import ConfigError
from runyard.executor import JobSpec
from runyard.jobfiles import JOB_FILES, relocated_task, runner_command, runner_path
from runyard.packaging import CodePackage, package_code, relocated_pythonpath

from runyard_ray.executor import RayExecutor
from runyard_ray.jobmain import CONF_ENV, TASK_TOKEN, TOKEN

ENTRY = "ray_job.py"
CODE = f"{TOKEN}/code"
RUNNERS = f"{TOKEN}/runner"
MAX_CONF = 96 * 1024  # bytes of $RUNYARD_RAY_JOB (a variable holds at most 128 KiB on Linux)
_EPOCH = (1980, 1, 1, 0, 0, 0)


@attrs.frozen
class WorkDir:
    """A job's working dir: the zip, and the URI the head keeps it under."""

    uri: str
    data: bytes = attrs.field(repr=False)
    code: CodePackage | None

    @property
    def size(self) -> int:
        return len(self.data)


def _add(zf: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | (mode & 0o777)) << 16
    zf.writestr(info, data)


def make_workdir(code: CodePackage | None) -> WorkDir:
    """The working dir zip for ``code`` (None: no code), the same bytes for the same input."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _add(zf, ENTRY, resources.files("runyard_ray").joinpath("jobmain.py").read_bytes())
        for name in JOB_FILES:
            with open(runner_path(name), "rb") as f:
                _add(zf, f"runner/{name}", f.read(), 0o755 if name.endswith((".sh", ".py")) else 0o644)
        if code is not None:
            with tarfile.open(code.path) as tar:
                for member in sorted(tar.getmembers(), key=lambda m: m.name):
                    if not member.isreg():
                        continue  # (links and folders: a zip of files)
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        _add(zf, f"code/{member.name}", extracted.read(), member.mode)
    data = buf.getvalue()
    return WorkDir(f"gcs://_ray_pkg_{hashlib.sha256(data).hexdigest()[:16]}.zip", data, code)


class Stager:
    """Working dirs made once per (experiment, code, cwd) in this process."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str | None, str], WorkDir] = {}
        self._lock = threading.Lock()

    def workdir(self, job: JobSpec, executor: RayExecutor) -> WorkDir:
        cwd = job.cwd or os.getcwd()
        key = (job.experiment_id, executor.code, cwd)
        with self._lock:
            if key not in self._cache:
                root = os.path.join(os.path.abspath(job.experiment_dir), "code")
                self._cache[key] = make_workdir(package_code(executor.code, cwd, root))
            return self._cache[key]


def job_conf(job: JobSpec, executor: RayExecutor, code: CodePackage | None) -> dict[str, Any]:
    """What ``jobmain.py`` runs (``$RUNYARD_RAY_JOB``), its paths in the working dir."""
    task = relocated_task(job.task_dir, code, CODE if code else None)
    argv = runner_command(job, python=executor.python, runner_dir=RUNNERS, task_dir=TASK_TOKEN, task=task)
    cwd = None
    if code is not None:
        rel = code.cwd
        cwd = CODE if rel in ("", os.curdir) else f"{CODE}/{rel.replace(os.sep, '/')}"
    pythonpath = relocated_pythonpath(code, os.environ.get("PYTHONPATH"), job.cwd, CODE)
    return {"attempt": job.attempt, "argv": argv, "cwd": cwd, "task": task, "pythonpath": pythonpath}


def submission_id(job: JobSpec) -> str:
    """The job's submission id: the attempt's, and its launch's (Ray refuses a second job of one
    id, and ``adopt`` finds the job by its metadata)."""
    launch = job.env.get("RUNYARD_LAUNCH_ID", "")[:8]
    return f"runyard-{job.experiment_id}-{job.task_id}-{job.attempt}" + (f"-{launch}" if launch else "")


def metadata(job: JobSpec) -> dict[str, str]:
    """What the job carries so that any process finds it by its attempt."""
    out = {
        "runyard_experiment": job.experiment_id,
        "runyard_task": job.task_id,
        "runyard_attempt": str(job.attempt),
    }
    launch = job.env.get("RUNYARD_LAUNCH_ID")
    if launch:
        out["runyard_launch"] = launch
    return out


def submit_request(job: JobSpec, executor: RayExecutor, workdir: WorkDir) -> dict[str, Any]:
    """The body of ``POST /api/jobs/`` for one attempt (secrets in it: ``dry_run`` masks them)."""
    conf = json.dumps(job_conf(job, executor, workdir.code), separators=(",", ":"))
    if len(conf.encode()) > MAX_CONF:
        raise ConfigError(
            f"task {job.task_id!r}: its task.json is {len(conf) // 1024} KiB, more than a Ray job's"
            f" environment can carry ({MAX_CONF // 1024} KiB): pass large values as files or artifacts"
        )
    env = {**job.env, CONF_ENV: conf}
    runtime_env: dict[str, Any] = {
        **(executor.runtime_env or {}),
        "working_dir": workdir.uri,
        "env_vars": env,
    }
    request: dict[str, Any] = {
        "entrypoint": f"{shlex.quote(executor.python)} {ENTRY}",
        "submission_id": submission_id(job),
        "runtime_env": runtime_env,
        "metadata": metadata(job),
    }
    if executor.num_cpus is not None:
        request["entrypoint_num_cpus"] = executor.num_cpus
    if executor.num_gpus is not None:
        request["entrypoint_num_gpus"] = executor.num_gpus
    if executor.resources:
        request["entrypoint_resources"] = dict(executor.resources)
    return request
