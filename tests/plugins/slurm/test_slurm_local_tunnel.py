"""``LocalTunnel``: Slurm on this machine (runyard runs on the login node): the same jobs,
with commands run here instead of over SSH."""

from __future__ import annotations

import shutil

import runyard as run
import taskdefs
from _slurm_helpers import Cluster
from runyard_slurm.tunnel import LocalSession, session_for


def test_a_task_runs_through_the_local_sbatch(cluster: Cluster) -> None:
    tunnel = run.LocalTunnel(job_dir=cluster.job_dir + "/local-tunnel")
    exp = run.Experiment("local-tunnel")
    exp.add(
        [run.Config(taskdefs.hello, n) for n in ("a", "b")],
        executor=cluster.executor(tunnel=tunnel),
        name="t",
    )

    try:
        assert exp.run() == "SUCCEEDED"
        assert [exp.get_logs(i).stdout for i in ("t-0", "t-1")] == ["hello a\n", "hello b\n"]
        assert isinstance(session_for(tunnel), LocalSession)
        assert cluster.state(exp.tasks[0].job_id) == "COMPLETED"
    finally:
        shutil.rmtree(tunnel.job_dir, ignore_errors=True)
