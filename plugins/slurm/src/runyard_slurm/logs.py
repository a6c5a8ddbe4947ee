"""``SlurmLogSource``: a task's output files, read over SFTP from the cluster's job folder.

``stream_logs`` follows a task by asking for the journal from the offset it has read up to,
so each look reads only what is new. A person waits on these reads: when the cluster cannot
be reached they give up after ``READ_PATIENCE`` seconds (an ``UnreachableError`` that says
since when), not after the tunnel's whole ``retry_for``.
"""

from __future__ import annotations

from runyard.executor import JobRef
from runyard.logs import LogSource

from runyard_slurm.layout import attempt_dir_of, layout
from runyard_slurm.tunnel import session_for

READ_PATIENCE = 3.0  # seconds a log read waits for an unreachable cluster


class SlurmLogSource(LogSource):
    """Reads ``<job_dir>/<experiment>/tasks/<task>/attempt-<n>/<name>`` where the job ran."""

    def read(self, ref: JobRef, name: str, offset: int = 0) -> bytes:
        from runyard_slurm.backend import tunnel_of

        tunnel = tunnel_of(ref.executor)
        session = session_for(tunnel)
        with session.patience(READ_PATIENCE):
            return session.read(f"{attempt_dir_of(ref, layout(session, tunnel))}/{name}", offset)
