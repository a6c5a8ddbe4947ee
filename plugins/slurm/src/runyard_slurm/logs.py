"""``SlurmLogSource``: a task's output files, read over SFTP from the cluster's job folder.

``stream_logs`` follows a task by asking for the journal from the offset it has read up to,
so each look reads only what is new.
"""

from __future__ import annotations

from runyard.logs import LogRef, LogSource

from runyard_slurm.layout import layout
from runyard_slurm.tunnel import session_for


class SlurmLogSource(LogSource):
    """Reads ``<job_dir>/<experiment>/tasks/<task>/attempt-<n>/<name>`` where the job ran."""

    def read(self, ref: LogRef, name: str, offset: int = 0) -> bytes:
        from runyard_slurm.backend import tunnel_of

        tunnel = tunnel_of(ref.executor)
        session = session_for(tunnel)
        task_dir = layout(session, tunnel).task_dir_of(ref.task_dir)
        return session.read(f"{task_dir}/attempt-{ref.attempt}/{name}", offset)
