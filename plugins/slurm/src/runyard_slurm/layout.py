"""Where things live in a cluster's job folder (``SSHTunnel.job_dir``).

::

    <job_dir>/
      runner/<sha>/runner.py, runner.sh       the in-job runner, shipped once per version
      code/<sha>/...                          the user's code, unpacked once per version
      <experiment id>/
        slurm/                                array scripts and Slurm's output of array elements
        tasks/<task id>/task.json             the serialized task (paths moved into code/<sha>)
        tasks/<task id>/attempt-<n>/          job.sh, slurm.out, and the runner's files

The experiment folder there mirrors the local one (``runyard.naming``: ``tasks/<task id>/
attempt-<n>``), so every process finds an attempt's files from its ids and its executor alone.
"""

from __future__ import annotations

import attrs
from runyard import naming
from runyard.executor import JobRef

from runyard_slurm.executor import LocalTunnel, SSHTunnel
from runyard_slurm.tunnel import Session


@attrs.frozen
class Layout:
    job_dir: str  # absolute, on the cluster

    def experiment_dir(self, experiment_id: str) -> str:
        return f"{self.job_dir}/{naming.check_component(experiment_id, 'experiment id')}"

    def output_dir(self, experiment_id: str) -> str:
        return f"{self.experiment_dir(experiment_id)}/slurm"

    def task_dir(self, experiment_id: str, task_id: str) -> str:
        return naming.task_dir(self.experiment_dir(experiment_id), task_id)

    def attempt_dir(self, experiment_id: str, task_id: str, attempt: int) -> str:
        return naming.attempt_dir(self.experiment_dir(experiment_id), task_id, attempt)

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


def attempt_dir_of(ref: JobRef, where: Layout) -> str:
    """The attempt folder of ``ref`` on the cluster: in the job folder its launch recorded
    (``handle["job_dir"]``), else in ``where``."""
    recorded = ref.handle.get("job_dir")
    if isinstance(recorded, str) and recorded.startswith("/"):
        where = Layout(recorded)
    return where.attempt_dir(ref.experiment_id, ref.task_id, ref.attempt)
