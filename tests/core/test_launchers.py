"""``launcher=`` on every executor: what it accepts, how it is stored, and what the job is told
(``RUNYARD_LAUNCHER``). Real torchrun runs are in tests/plugins/local/test_torchrun.py and the
Slurm and Docker tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
import runyard as run
import taskdefs
from runyard import serialization


def launcher_of(exp: run.Experiment, task_id: str) -> dict[str, Any]:
    spec = exp._engine.task(task_id).spec()
    return json.loads(spec.env["RUNYARD_LAUNCHER"])


def test_the_string_torchrun_is_a_torchrun_launcher_with_its_defaults() -> None:
    executor = run.LocalExecutor(launcher="torchrun")
    assert executor.launcher == run.Torchrun(
        nproc_per_node=None, rdzv_backend="c10d", rdzv_port=None, max_restarts=0
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mpirun", "launcher must be None, 'torchrun' or run.Torchrun(...), got 'mpirun'"),
        (3, "launcher must be None, 'torchrun' or run.Torchrun(...), got 3"),
    ],
)
def test_another_launcher_is_refused_when_the_executor_is_made(value: Any, message: str) -> None:
    with pytest.raises(
        run.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        run.LocalExecutor(launcher=value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nproc_per_node": 0}, "Torchrun.nproc_per_node must be an integer >= 1 or None, got 0"),
        ({"rdzv_port": 70000}, "Torchrun.rdzv_port must be a TCP port (1-65535) or None, got 70000"),
        ({"rdzv_backend": "static"}, "Torchrun.rdzv_backend must be one of c10d, got 'static'"),
        ({"max_restarts": -1}, "Torchrun.max_restarts must be an integer >= 0, got -1"),
    ],
)
def test_torchrun_fields_are_checked(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(run.ConfigError) as caught:
        run.Torchrun(**fields)
    assert str(caught.value) == message


def test_a_launcher_is_stored_with_its_executor_and_comes_back() -> None:
    executor = run.LocalExecutor(launcher=run.Torchrun(nproc_per_node=4, rdzv_port=29511, max_restarts=2))
    data = json.loads(json.dumps(serialization.unstructure_executor(executor)))
    assert data["launcher"] == {
        "nproc_per_node": 4,
        "rdzv_backend": "c10d",
        "rdzv_port": 29511,
        "max_restarts": 2,
    }
    assert serialization.structure_executor(data) == executor


def test_an_executor_stored_before_launchers_has_none() -> None:
    data = serialization.unstructure_executor(run.LocalExecutor())
    del data["launcher"]
    assert serialization.structure_executor(data).launcher is None


def test_the_job_is_told_the_launcher_and_processes_default_to_the_executors_gpus() -> None:
    exp = run.Experiment("launchers")
    plain = exp.add(run.Config(taskdefs.hello), executor=run.LocalExecutor(launcher="torchrun"), name="plain")
    gpus = exp.add(
        run.Config(taskdefs.hello), executor=run.LocalExecutor(launcher="torchrun", gpus=2), name="gpus"
    )
    given = exp.add(
        run.Config(taskdefs.hello),
        executor=run.LocalExecutor(launcher=run.Torchrun(nproc_per_node=3, rdzv_port=29600), gpus=2),
        name="given",
    )
    assert launcher_of(exp, plain) == {
        "kind": "torchrun", "nproc_per_node": 1, "nnodes": 1, "rdzv_backend": "c10d",
        "rdzv_endpoint": "127.0.0.1:0", "rdzv_id": f"{exp.id}_plain_1", "max_restarts": 0,
    }  # fmt: skip
    assert launcher_of(exp, gpus)["nproc_per_node"] == 2
    assert (launcher_of(exp, given)["nproc_per_node"], launcher_of(exp, given)["rdzv_endpoint"]) == (
        3,
        "127.0.0.1:29600",
    )


def test_without_a_launcher_the_job_is_told_none() -> None:
    exp = run.Experiment("launchers")
    task_id = exp.add(run.Config(taskdefs.hello), name="t")
    assert "RUNYARD_LAUNCHER" not in exp._engine.task(task_id).spec().env


def test_under_a_launcher_a_script_runs_under_the_python_runner_too() -> None:
    """runner.py starts torchrun, which runs the script once per rank; runner.sh cannot."""
    exp = run.Experiment("launchers")
    exp.add(run.Script(inline="echo hi"), executor=run.LocalExecutor(launcher="torchrun"), name="t")
    text = exp.dry_run()["t"]
    assert "runner.py" in text and "runner.sh" not in text and "RUNYARD_LAUNCHER=" in text
