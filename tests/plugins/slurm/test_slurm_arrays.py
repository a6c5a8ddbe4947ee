"""A task group on identical executors is one Slurm job array; each element is still its
own task: its own status, logs, cancel and retry."""

from __future__ import annotations

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster, until


@pytest.mark.alone
def test_a_task_group_becomes_one_job_array(cluster: Cluster) -> None:
    exp = run.Experiment("array")
    ids = exp.add(
        [run.Config(taskdefs.hello, str(i)) for i in range(3)], executor=cluster.executor(), name="v"
    )

    assert exp.run() == "SUCCEEDED"

    tasks = {t.id: t for t in exp.tasks}
    array = tasks["v-0"].job_id.split("_")[0]
    assert [tasks[i].job_id for i in ids] == [f"{array}_0", f"{array}_1", f"{array}_2"]
    assert [exp.get_logs(i).stdout for i in ids] == ["hello 0\n", "hello 1\n", "hello 2\n"]
    assert cluster.job(f"{array}_0")["JobName"] == "v"


def test_each_element_has_its_own_status(cluster: Cluster) -> None:
    exp = run.Experiment("array-status")
    exp.add([run.Config(taskdefs.exit_with, code) for code in (0, 5)], executor=cluster.executor(), name="v")

    assert exp.run() == "FAILED"

    tasks = {t.id: t for t in exp.tasks}
    assert (tasks["v-0"].status, tasks["v-1"].status, tasks["v-1"].exit_code) == ("SUCCEEDED", "FAILED", 5)


def test_different_executors_in_a_group_are_separate_jobs(cluster: Cluster) -> None:
    exp = run.Experiment("no-array")
    exp.add(run.Config(taskdefs.hello), executor=cluster.executor(), name="a")
    exp.add(run.Config(taskdefs.hello), executor=cluster.executor(env_vars={"X": "1"}), name="b")
    exp.add(run.Config(taskdefs.hello), executor=cluster.executor(array=False), name="c")
    exp.add(run.Config(taskdefs.hello), executor=cluster.executor(array=False), name="d")

    assert exp.run() == "SUCCEEDED"

    assert all(t.job_id.isdigit() for t in exp.tasks)


def test_one_element_is_cancelled_alone(cluster: Cluster) -> None:
    exp = run.Experiment("array-cancel")
    exp.add(
        [run.Config(taskdefs.sleep_then_print, s) for s in (1, 60)], executor=cluster.executor(), name="v"
    )
    exp.run(detach=True)

    exp.cancel("v-1")
    until(lambda: all(t.status.is_final for t in exp.tasks), "the array to end")

    tasks = {t.id: t for t in exp.tasks}
    assert (tasks["v-0"].status, tasks["v-1"].status) == ("SUCCEEDED", "CANCELLED")
    # out of the queue: a pending element cancelled leaves no record, a running one is CANCELLED
    assert cluster.state(tasks["v-1"].job_id) in ("", "CANCELLED")


def test_a_retried_element_is_resubmitted_as_a_job_of_its_own(cluster: Cluster) -> None:
    exp = run.Experiment("array-retry")
    exp.add([run.Config(taskdefs.hello, str(i)) for i in range(2)], executor=cluster.executor(), name="v")
    exp.run()
    before = {t.id: t.job_id for t in exp.tasks}

    exp.retry("v-1")
    assert exp.wait(timeout=60) == "SUCCEEDED"

    after = {t.id: t for t in exp.tasks}
    assert after["v-0"].job_id == before["v-0"]
    assert after["v-1"].attempts == 2 and after["v-1"].job_id.isdigit()
    assert exp.get_logs("v-1").stdout == "hello 1\n"
