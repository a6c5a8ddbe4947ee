"""Where things live in a cluster's job folder (``SSHTunnel.job_dir``).

::

    <job_dir>/
      runner/<sha>/runner.py, runner.sh       the in-job runner, shipped once per version
      code/<sha>/...                          the user's code, unpacked once per version
      <experiment id>/
        slurm/                                array scripts and Slurm's output of array elements
        tasks/<task id>/task.json             the serialized task (paths moved into code/<sha>)
        tasks/<task id>/attempt-<n>/          job.sh, slurm.out, and the runner's files

The task folder mirrors the local one (``<home>/experiments/<id>/tasks/<task id>``), so
every process finds a task's files from its local task folder and its executor alone.
"""

from __future__ import annotations

import attrs
from runyard.errors import BackendError

from runyard_slurm.executor import LocalTunnel, SSHTunnel
from runyard_slurm.tunnel import Session


def split_task_dir(task_dir: str) -> tuple[str, str]:
    """(experiment id, task id) of a local task folder ``.../<experiment id>/tasks/<task id>``."""
    parts = task_dir.rstrip("/").split("/")
    if len(parts) < 3 or parts[-2] != "tasks":
        raise BackendError(f"not a runyard task folder: {task_dir}")
    return parts[-3], parts[-1]


@attrs.frozen
class Layout:
    job_dir: str  # absolute, on the cluster

    def experiment_dir(self, experiment_id: str) -> str:
        return f"{self.job_dir}/{experiment_id}"

    def output_dir(self, experiment_id: str) -> str:
        return f"{self.job_dir}/{experiment_id}/slurm"

    def task_dir(self, experiment_id: str, task_id: str) -> str:
        return f"{self.job_dir}/{experiment_id}/tasks/{task_id}"

    def task_dir_of(self, local_task_dir: str) -> str:
        return self.task_dir(*split_task_dir(local_task_dir))

    def code_dir(self, sha256: str) -> str:
        return f"{self.job_dir}/code/{sha256[:16]}"

    def runner_dir(self, sha256: str) -> str:
        return f"{self.job_dir}/runner/{sha256[:16]}"

    def relative(self, path: str) -> str:
        """``path`` relative to the job folder (it must lie inside)."""
        prefix = self.job_dir + "/"
        if not path.startswith(prefix):
            raise ValueError(f"{path} is not in {self.job_dir}")
        return path[len(prefix) :]


def layout(session: Session, tunnel: SSHTunnel | LocalTunnel) -> Layout:
    """The job folder of ``tunnel``, made absolute there (``~`` is the remote home)."""
    return Layout(session.resolve(tunnel.job_dir).rstrip("/") or "/")
