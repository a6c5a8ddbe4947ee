"""The host folders a container mounts: the user's code (unpacked once per experiment and
code version) and, per attempt, the attempt folder and the task's ``task.json`` with its
paths moved into the container's code folder.

Host layout, beside the experiment's tasks::

    <experiment dir>/code/code-<sha16>.tar.gz   the package (runyard.packaging)
    <experiment dir>/code/<sha16>/              unpacked, mounted read-only at /runyard/code
    <task dir>/attempt-<n>/container-task.json  task.json for the container (read-only
                                                 at /runyard/task/task.json)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
from typing import Any

import attrs
from runyard.executor import JobSpec
from runyard.jobfiles import relocated_task
from runyard.packaging import CodePackage, package_code, relocated_pythonpath

from runyard_docker.executor import DockerExecutor

CODE_DIR = "/runyard/code"
CONTAINER_TASK_JSON = "container-task.json"


@attrs.frozen
class Code:
    """Shipped code: the package, and the host folder it is (or would be) unpacked in."""

    package: CodePackage
    host_dir: str

    @property
    def workdir(self) -> str:
        """The experiment's working directory, inside the container's code folder."""
        rel = self.package.cwd
        return CODE_DIR if rel in ("", os.curdir) else f"{CODE_DIR}/{rel.replace(os.sep, '/')}"


class CodeStager:
    """Packages the user's code once per (experiment, code, cwd) per process, and unpacks
    each version once; an unpacked version already on disk (another process did it) is reused."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str | None, str], Code | None] = {}
        self._unpacked: set[str] = set()
        self._lock = threading.Lock()

    def code(self, job: JobSpec, executor: DockerExecutor) -> Code | None:
        """The experiment's code, packaged (None: nothing to ship)."""
        cwd = job.cwd or os.getcwd()
        key = (job.experiment_id, executor.code, cwd)
        with self._lock:
            if key not in self._cache:
                root = os.path.join(os.path.abspath(job.experiment_dir), "code")
                package = package_code(executor.code, cwd, root)
                self._cache[key] = (
                    None if package is None else Code(package, os.path.join(root, package.sha256[:16]))
                )
            return self._cache[key]

    def unpack(self, code: Code) -> None:
        """Unpack ``code`` into its host folder, unless that was done already."""
        with self._lock:
            if code.host_dir not in self._unpacked:
                _unpack(code.package, code.host_dir)
                self._unpacked.add(code.host_dir)


def _unpack(package: CodePackage, dest: str) -> None:
    if os.path.isdir(dest):
        return
    tmp = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix=".unpack-")
    try:
        with tarfile.open(package.path) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # Python without extraction filters; the tarball is our own
                tar.extractall(tmp)  # noqa: S202
        os.chmod(tmp, 0o755)  # noqa: S103  mkdtemp made it 0700: a container user must read the code
        try:
            os.rename(tmp, dest)
        except OSError:  # another process unpacked the same code meanwhile
            if not os.path.isdir(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def container_task_json(job: JobSpec, code: Code | None) -> dict[str, Any]:
    """The task's ``task.json`` as the container must see it: import paths, the launching
    script and a Script's file moved into the code folder (paths outside it are kept)."""
    package = code.package if code is not None else None
    return relocated_task(job.task_dir, package, CODE_DIR if package else None)


def task_json_path(job: JobSpec) -> str:
    """The host file that holds the container's task.json (in the attempt folder)."""
    return os.path.join(os.path.abspath(job.attempt_dir), CONTAINER_TASK_JSON)


def container_pythonpath(code: Code | None, env_pythonpath: str | None, cwd: str | None) -> list[str]:
    """Entries of the launching process's ``PYTHONPATH`` (relative ones from ``cwd``) that lie
    in the shipped code, as container paths: what imports here imports in the container."""
    return relocated_pythonpath(code.package if code else None, env_pythonpath, cwd, CODE_DIR)


_NUMERIC_USER = re.compile(r"([0-9]+)(?::([0-9]+))?")


def stage_attempt(job: JobSpec, executor: DockerExecutor, spec: dict[str, Any]) -> None:
    """Create the attempt folder and write the container's task.json into it
    (:func:`task_json_path`). When runyard runs as root and ``user`` is a numeric
    ``uid[:gid]``, the attempt folder is given to that user so the runner can write into it."""
    os.makedirs(job.attempt_dir, exist_ok=True)
    with open(task_json_path(job), "w") as f:
        json.dump(spec, f)
    match = _NUMERIC_USER.fullmatch(executor.user or "")
    if match and hasattr(os, "geteuid") and os.geteuid() == 0:
        uid = int(match.group(1))
        gid = int(match.group(2)) if match.group(2) else uid
        os.chown(job.attempt_dir, uid, gid)
