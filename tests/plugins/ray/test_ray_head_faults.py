"""A Ray head that dies under a running experiment (a head of the test's own, killed with
SIGKILL as in a crash): a clear error, nothing marked FAILED by the outage alone; a head that
comes back without the job (a restarted cluster forgets its jobs) leaves the task lost, never
RUNNING for ever; one that never answered keeps a launch waiting."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from typing import Any

import helpers
import pytest
import runyard as run
import taskdefs
from runyard.errors import UnreachableError
from runyard.store import open_store


def task(exp: run.Experiment, task_id: str) -> Any:
    return next(t for t in exp.tasks if t.id == task_id)


@pytest.fixture(autouse=True)
def _nothing_left_driving(runyard_home: str) -> Iterator[None]:
    """A test that fails half-way leaves no supervisor waiting for a head that is gone."""
    yield
    for record in open_store().experiments():
        exp = run.Experiment.from_id(record.id)
        if any(not t.status.is_final for t in exp.tasks):
            with contextlib.suppress(run.RunyardError):
                exp.cancel_all()


def test_a_dead_head_is_an_outage_and_a_restarted_one_that_forgot_the_job_leaves_it_lost(
    own_ray_head: Any, runyard_home: str
) -> None:
    exp = run.Experiment("ray-dead-head")
    exp.add(
        run.Config(taskdefs.print_lines, 600, delay=0.1),
        executor=run.RayExecutor(address=own_ray_head.address),
        name="t",
    )
    exp.run(detach=True)
    helpers.until(lambda: "line 2" in exp.get_logs("t").stdout, "the task's output", timeout=120)

    own_ray_head.kill()
    handle = exp._engine.task("t")
    with pytest.raises(UnreachableError, match=r"cannot reach the Ray head .*is the Ray head running\?"):
        handle.backend.poll([handle.ref()])  # what the supervisor meets at each look now
    time.sleep(5)  # its looks, once a second
    assert task(exp, "t").status == "RUNNING"  # the outage alone fails nothing
    assert exp.get_logs("t").stdout.startswith("line 0\n")  # what came home before stays readable

    own_ray_head.start()  # a new cluster on the same address: it knows nothing of the job
    t = helpers.until(lambda: (v := task(exp, "t")).status == "FAILED" and v, "the task to be found lost", 60)
    assert t.reason.startswith(f"lost: the Ray head at {own_ray_head.address} has no job {t.job_id}")


def test_a_launch_on_a_head_that_does_not_answer_waits_and_uses_no_attempt(
    own_ray_head: Any, runyard_home: str
) -> None:
    address = own_ray_head.address
    own_ray_head.kill()
    exp = run.Experiment("ray-no-head")
    exp.add(run.Config(taskdefs.hello), executor=run.RayExecutor(address=address), name="t")
    assert "would submit this job" in exp.dry_run(file=io.StringIO())["t"]  # a dry run needs no head
    exp.run(detach=True)
    t = helpers.until(lambda: (v := task(exp, "t")).reason and v, "the launch to wait", 60)
    assert (t.status, t.attempts) == ("PENDING", 0)
    assert t.reason.startswith(f"waiting: cannot reach the Ray head at {address}")
    own_ray_head.start()
    helpers.until(lambda: task(exp, "t").status == "SUCCEEDED", "the task to run once the head is back", 120)
    assert (task(exp, "t").attempts, exp.get_logs("t").stdout) == (1, "hello world\n")
