"""Metrics of a task in a container (of the test image, which has no runyard): what it logged
with ``runyard.job.log_metrics`` and the ``loss:`` lines it printed come back through
``exp.get_metrics``, read beside its logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import metrictasks
import pytest
import runyard as run
from helpers import assert_trained


@pytest.mark.alone
def test_logged_and_printed_metrics_of_a_container_task_come_back(
    docker_executor: Callable[..., Any],
) -> None:
    exp = run.Experiment("docker-metrics")
    t = exp.add(run.Config(metrictasks.train, steps=2, lr=0.5), executor=docker_executor(), name="train")
    assert exp.run() == "SUCCEEDED", exp.tasks[0].reason

    points = exp.get_metrics(t)

    assert_trained(points)
    assert exp.get_all_metrics() == {t: points}
