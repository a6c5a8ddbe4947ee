"""Logs of Slurm tasks, read over SFTP from the cluster's job folder: stdout, stderr, the
timestamped journal that stream_logs follows by offset, and get_all_logs."""

from __future__ import annotations

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster
from runyard.plugins import plugin_manager
from runyard_slurm.logs import SlurmLogSource


def test_the_log_source_of_slurm_tasks_reads_the_cluster(cluster: Cluster) -> None:
    assert isinstance(plugin_manager().log_source(cluster.executor()), SlurmLogSource)


@pytest.mark.alone
def test_logs_come_from_the_cluster(cluster: Cluster) -> None:
    exp = run.Experiment("logs")
    exp.add(run.Config(taskdefs.fail, "oops"), executor=cluster.executor(), name="t")
    exp.run()
    local_attempt = exp.store.task_dir(exp.experiment_id, "t") + "/attempt-1"

    logs = exp.get_logs("t")

    assert (logs.exit_code, logs.stdout) == (1, "about to fail\n")
    assert logs.stderr.rstrip().endswith("RuntimeError: oops")
    import os

    assert not os.path.exists(local_attempt + "/stdout.log")  # read remotely, never copied here


def test_stream_logs_follows_a_running_task(cluster: Cluster) -> None:
    exp = run.Experiment("stream")
    exp.add(run.Config(taskdefs.print_lines, 8, 0.25), executor=cluster.executor(), name="t")
    exp.run(detach=True)

    entries = []
    seen_running = False
    for entry in exp.stream_logs("t"):
        entries.append(entry)
        seen_running = seen_running or exp.tasks[0].status == "RUNNING"

    assert [e.message for e in entries] == [f"line {i}" for i in range(8)]
    assert {e.stream for e in entries} == {"stdout"}
    assert [e.timestamp for e in entries] == sorted(e.timestamp for e in entries)
    assert entries[-1].timestamp > entries[0].timestamp
    assert seen_running  # lines arrived while the job still ran
    assert exp.tasks[0].status == "SUCCEEDED"


def test_get_all_logs_reads_every_task(cluster: Cluster) -> None:
    exp = run.Experiment("all-logs")
    exp.add([run.Config(taskdefs.hello, n) for n in ("a", "b")], executor=cluster.executor(), name="g")
    exp.run()

    logs = exp.get_all_logs()

    assert {name: (log.exit_code, log.stdout) for name, log in logs.items()} == {
        "g-0": (0, "hello a\n"),
        "g-1": (0, "hello b\n"),
    }
