"""``LocalExecutor(mem=...)``: each attempt in a memory cgroup of its own, so that a task killed
by the kernel at its limit is told apart from any other failure (failure ``oom``), and
``retry_on`` decides whether it runs again. Real cgroups: the test machine runs as root."""

from __future__ import annotations

import os

import pytest
import runyard as run
import taskdefs
from runyard_local import cgroups


def run_one(task: object, executor: run.LocalExecutor, **options: object) -> run.Experiment:
    exp = run.Experiment("memory", **options)
    exp.add(task, executor=executor, name="t")
    exp.run()
    return exp


def test_a_task_over_its_memory_limit_is_killed_and_fails_with_failure_oom() -> None:
    exp = run_one(run.Config(taskdefs.use_memory, 400), run.LocalExecutor(mem="64M"))
    [t] = exp.tasks
    assert (t.status, t.failure, t.exit_code, t.attempts) == ("FAILED", "oom", 137, 1)
    assert t.reason == "out of memory: killed by the kernel at its memory limit (LocalExecutor.mem='64M')"
    assert "allocated" not in exp.get_logs("t").stdout
    launch = exp.attempts("t")[0]
    assert launch.failure == "oom"


def test_oom_is_retried_by_default_but_not_when_retry_on_leaves_it_out() -> None:
    task = run.Config(taskdefs.use_memory, 400)
    retried = run_one(task, run.LocalExecutor(mem=64), max_retries=1)
    assert [(a.status, a.failure) for a in retried.attempts("t")] == [("FAILED", "oom"), ("FAILED", "oom")]
    kept = run_one(task, run.LocalExecutor(mem=64), max_retries=1, retry_on=["error"])
    assert [(a.status, a.failure) for a in kept.attempts("t")] == [("FAILED", "oom")]


def test_a_task_within_its_limit_succeeds_and_its_cgroup_is_removed() -> None:
    exp = run_one(run.Config(taskdefs.use_memory, 20), run.LocalExecutor(mem="256M"))
    [t] = exp.tasks
    assert (t.status, exp.get_logs("t").stdout) == ("SUCCEEDED", "allocated 20\n")
    cgroup = exp.store.task(exp.id, "t").handle["cgroup"]
    assert cgroup.startswith(os.path.dirname(cgroups.path_for("0")) + "/")
    assert not os.path.exists(cgroup)


def test_a_plain_error_under_a_memory_limit_is_still_an_error() -> None:
    exp = run_one(run.Config(taskdefs.exit_with, 3), run.LocalExecutor(mem="64M"))
    [t] = exp.tasks
    assert (t.status, t.failure, t.exit_code) == ("FAILED", "error", 3)


@pytest.mark.parametrize("value", [0, -5, "lots", "12X", True, 1.5])
def test_a_memory_limit_that_is_not_a_size_is_refused_at_once(value: object) -> None:
    with pytest.raises(run.ConfigError, match=r"LocalExecutor.mem must be megabytes .* got"):
        run.LocalExecutor(mem=value)


@pytest.mark.parametrize(
    ("value", "size"), [(512, 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("64m", 64 << 20)]
)
def test_sizes_are_read_as_users_write_them(value: object, size: int) -> None:
    assert cgroups.parse_size(value) == size  # type: ignore[arg-type]


def test_the_dry_run_shows_the_task_starting_in_its_memory_cgroup() -> None:
    exp = run.Experiment("memory")
    exp.add(run.Config(taskdefs.hello), executor=run.LocalExecutor(mem="1G"), name="t")
    text = exp.dry_run()["t"]
    assert "runyard-cgroup" in text and "cgroup.procs" in text
