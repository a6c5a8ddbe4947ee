"""The container of one attempt, as the arguments of the engine's container create call.

Shared by launch and dry run, and plain data (no docker SDK needed to build or show it).
Inside every container::

    /runyard/runner.py, /runyard/runner.sh   the in-job runner (read-only), and the rest of
    /runyard/job.py, /runyard/_shim/...      the files a job carries (runyard.jobfiles.JOB_FILES)
    /runyard/task/task.json                  the task, paths moved into /runyard/code (read-only)
    /runyard/task/attempt-<n>/               the attempt folder on the host (read-write)
    /runyard/code/                           the shipped code (read-only), if any
"""

from __future__ import annotations

import json
import os
from typing import Any

import attrs
from runyard.executor import JobSpec
from runyard.jobfiles import JOB_FILES, runner_command, runner_path
from runyard.redact import masked

from runyard_docker.executor import DockerExecutor
from runyard_docker.staging import CODE_DIR, Code

TASK_DIR = "/runyard/task"
RUNNERS = "/runyard"

LABEL_EXPERIMENT = "runyard.experiment"
LABEL_TASK = "runyard.task"
LABEL_ATTEMPT = "runyard.attempt"
LABEL_LAUNCH = "runyard.launch"  # the driver's launch id (adoption after a driver died mid-launch)

# Script entrypoints that mean bash is in the image: such tasks run under runner.sh (no
# Python start); any other Script runs under runner.py, which needs only python3
BASH = ("bash", "/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash")


@attrs.frozen
class Container:
    """What ``DockerBackend.launch`` makes for one attempt (its ``prepare``): ``create``, the
    arguments of ``containers.create``, and what it stages on the host first: the code to
    unpack (mounted at ``/runyard/code``) and the container's ``task.json``."""

    create: dict[str, Any]
    code: Code | None
    task: dict[str, Any]


def labels(job: JobSpec) -> dict[str, str]:
    """The labels that let any process find the container of an attempt."""
    out = {LABEL_EXPERIMENT: job.experiment_id, LABEL_TASK: job.task_id, LABEL_ATTEMPT: str(job.attempt)}
    launch = job.env.get("RUNYARD_LAUNCH_ID")
    if launch:
        out[LABEL_LAUNCH] = launch
    return out


def container_name(job: JobSpec) -> str:
    return f"runyard-{job.experiment_id}-{job.task_id}-{job.attempt}"


def command(job: JobSpec, executor: DockerExecutor, task_spec: dict[str, Any]) -> list[str]:
    """The in-job runner's command line in the container."""
    task = task_spec.get("task")
    bash = isinstance(task, dict) and task.get("entrypoint") in BASH
    return runner_command(
        job, python=executor.python, runner_dir=RUNNERS, task_dir=TASK_DIR, task=task_spec, bash=bash
    )


def bind(source: str, target: str, read_only: bool) -> dict[str, Any]:
    """A bind mount, in the engine's Mount format."""
    return {"Type": "bind", "Source": source, "Target": target, "ReadOnly": read_only}


def mounts(job: JobSpec, executor: DockerExecutor, code: Code | None, task_json: str) -> list[dict[str, Any]]:
    out = [
        *(bind(runner_path(name), f"{RUNNERS}/{name}", True) for name in JOB_FILES),
        bind(task_json, f"{TASK_DIR}/task.json", True),
        bind(os.path.abspath(job.attempt_dir), f"{TASK_DIR}/attempt-{job.attempt}", False),
    ]
    if code is not None:
        out.append(bind(code.host_dir, CODE_DIR, True))
    for volume in executor.parsed_volumes():
        if volume.named:
            out.append(
                {
                    "Type": "volume",
                    "Source": volume.source,
                    "Target": volume.target,
                    "ReadOnly": volume.read_only,
                }
            )
        else:
            out.append(bind(volume.host_path(job.cwd), volume.target, volume.read_only))
    return out


def missing_volume_sources(job: JobSpec, executor: DockerExecutor) -> list[str]:
    """Host paths of ``volumes`` that do not exist (Docker would fail, or create them as root)."""
    return [
        v.host_path(job.cwd)
        for v in executor.parsed_volumes()
        if not v.named and not os.path.exists(v.host_path(job.cwd))
    ]


def gpu_request(gpus: int | str | None) -> list[dict[str, Any]]:
    """``gpus`` as device requests (``docker run --gpus``): a count, or -1 for all. The SDK
    makes each a ``docker.types.DeviceRequest(count=..., capabilities=[["gpu"]])``."""
    if gpus is None:
        return []
    return [{"count": -1 if gpus == "all" else int(gpus), "capabilities": [["gpu"]]}]


def container_spec(
    job: JobSpec,
    executor: DockerExecutor,
    *,
    code: Code | None,
    task_spec: dict[str, Any],
    task_json: str,
    pythonpath: list[str],
) -> dict[str, Any]:
    """Keyword arguments of ``client.containers.create`` for one attempt.

    ``task_spec`` is the container's task.json (already relocated), ``task_json`` the host
    file that holds it, ``pythonpath`` container paths for ``PYTHONPATH``.
    """
    cmd = command(job, executor, task_spec)
    env = dict(job.env)
    env["RUNYARD_TASK_DIR"] = TASK_DIR
    if pythonpath and "PYTHONPATH" not in env:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    extra = dict(executor.run_kwargs)
    spec: dict[str, Any] = {
        "image": executor.image,
        "command": cmd,
        "name": container_name(job),
        "labels": {**extra.pop("labels", {}), **labels(job)},
        "environment": env,
        "mounts": mounts(job, executor, code, task_json),
        "init": True,  # a real PID 1: signals reach the runner, zombies are reaped
    }
    workdir = executor.workdir or (code.workdir if code is not None else None)
    if workdir:
        spec["working_dir"] = workdir
    if executor.gpus is not None:
        spec["device_requests"] = gpu_request(executor.gpus)
    for field in ("network", "shm_size", "ipc_mode", "user"):
        value = getattr(executor, field)
        if value is not None:
            spec[field] = value
    spec.update(extra)
    return spec


def describe(spec: dict[str, Any]) -> str:
    """The spec as indented JSON, secret values masked."""
    shown = dict(spec)
    shown["environment"] = masked(spec.get("environment") or {})
    return json.dumps(shown, indent=2, sort_keys=False)
