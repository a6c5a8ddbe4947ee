"""Metrics of a Slurm task: what it logged with ``runyard.job.log_metrics`` and the ``loss:``
lines it printed come back through ``exp.get_metrics``, read over SFTP from the cluster's job
folder as its logs are (nothing is copied to this machine)."""

from __future__ import annotations

import os

import metrictasks
import pytest
import runyard as run
from _slurm_helpers import Cluster
from helpers import assert_trained


@pytest.mark.alone
def test_logged_and_printed_metrics_of_a_slurm_task_come_back_from_the_cluster(cluster: Cluster) -> None:
    exp = run.Experiment("slurm-metrics")
    t = exp.add(run.Config(metrictasks.train, steps=2, lr=0.5), executor=cluster.executor(), name="train")
    assert exp.run() == "SUCCEEDED", exp.tasks[0].reason

    points = exp.get_metrics(t)

    assert_trained(points)
    local = os.path.join(exp.store.task_dir(exp.experiment_id, t), "attempt-1", "metrics.jsonl")
    assert not os.path.exists(local)  # read remotely, never copied here
