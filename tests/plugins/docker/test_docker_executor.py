"""DockerExecutor's fields: what each accepts, what it refuses (with what message), its
defaults, and the container spec that a dry run shows and a launch uses. No engine needed."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from runyard import serialization
from runyard.errors import ConfigError, ExecutorFieldError


def spec_of(exp: run.Experiment, task_id: str) -> dict[str, Any]:
    """The container spec of a task, parsed from the experiment's dry run."""
    text = exp.dry_run(file=io.StringIO())[task_id]
    return json.loads(text[text.index("{") : text.rindex("}") + 1])


def dry_spec(executor: Any, task: Any = None) -> dict[str, Any]:
    exp = run.Experiment("docker-spec")
    exp.add(task or run.Config(taskdefs.hello), executor=executor, name="t")
    return spec_of(exp, "t")


# ----------------------------------------------------------------------------- defaults
def test_the_default_image_comes_from_RUNYARD_DOCKER_IMAGE(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_DOCKER_IMAGE", "registry.example/team/trainer:2.1")
    assert run.DockerExecutor().image == "registry.example/team/trainer:2.1"
    assert run.DockerExecutor(image=None).image == "registry.example/team/trainer:2.1"


def test_without_RUNYARD_DOCKER_IMAGE_the_default_image_is_python_slim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RUNYARD_DOCKER_IMAGE", raising=False)
    assert run.DockerExecutor().image == "python:3.11-slim"


@pytest.mark.alone
def test_an_executor_round_trips_through_the_store_format() -> None:
    for executor in (
        run.DockerExecutor(image="img:1", gpus="all", shm_size="2g", volumes=["/data:/data:ro"]),
        run.DockerExecutor(
            image="img:1", gpus=2, shm_size=1 << 30, run_kwargs={"ulimits": [{"Name": "nofile"}]}
        ),
    ):
        data = json.loads(json.dumps(serialization.unstructure_executor(executor)))
        assert serialization.structure_executor(data) == executor


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("/data", "not of the form"),
        ("/a:/b:/c:/d", "not of the form"),
        ("/data:/data:rx", "mode must be 'ro' or 'rw'"),
        ("/data:data", "container path must be absolute"),
        ("/data:/runyard/data", "reserved"),
        ("my volume:/data", "is not a volume name"),
        (7, "must be strings"),
    ],
)
def test_a_malformed_volume_is_refused_naming_it(entry: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run.DockerExecutor(image="img", volumes=[entry])


def test_two_volumes_on_one_container_path_are_refused() -> None:
    with pytest.raises(ConfigError, match="two entries mount on '/data'"):
        run.DockerExecutor(image="img", volumes=["/a:/data", "/b:/data/"])


@pytest.mark.parametrize("gpus", [0, -1, True, "two", 1.5])
def test_gpus_must_be_a_count_or_all(gpus: Any) -> None:
    with pytest.raises(ConfigError, match="gpus must be a number of GPUs >= 1, 'all' or None"):
        run.DockerExecutor(image="img", gpus=gpus)


@pytest.mark.parametrize(
    ("key", "field"), [("environment", "env_vars"), ("device_requests", "gpus"), ("mounts", "volumes")]
)
def test_run_kwargs_that_runyard_sets_are_refused_naming_the_field_to_use(key: str, field: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' is set by the field {field}"):
        run.DockerExecutor(image="img", run_kwargs={key: {}})


@pytest.mark.parametrize("code", ["", 5, ["git"]])
def test_code_must_be_git_a_directory_or_none(code: Any) -> None:
    with pytest.raises(ConfigError, match=r"DockerExecutor.code must be 'git', a directory or None, got "):
        run.DockerExecutor(image="img", code=code)


def test_fields_are_checked_when_changed_too() -> None:
    executor = run.DockerExecutor(image="img")
    with pytest.raises(ConfigError, match="workdir must be an absolute container path"):
        executor.workdir = "relative/dir"


def test_an_unknown_field_is_refused_listing_the_fields() -> None:
    with pytest.raises(ExecutorFieldError, match=r"DockerExecutor has no field 'container_image'.*image"):
        run.DockerExecutor(container_image="img")


# ----------------------------------------------------------------------------- the spec
def test_the_container_carries_labels_that_name_experiment_task_and_attempt() -> None:
    exp = run.Experiment("docker-labels")
    exp.add(run.Config(taskdefs.hello), executor=run.DockerExecutor(image="img"), name="greet")
    spec = spec_of(exp, "greet")
    assert spec["labels"] == {
        "runyard.experiment": exp.experiment_id,
        "runyard.task": "greet",
        "runyard.attempt": "1",
    }
    assert spec["name"] == f"runyard-{exp.experiment_id}-greet-1"


def test_a_python_task_runs_the_python_runner_on_the_bind_mounted_task_folder() -> None:
    spec = dry_spec(run.DockerExecutor(image="img", python="/usr/bin/python3.11"))
    assert spec["command"] == ["/usr/bin/python3.11", "/runyard/runner.py", "/runyard/task", "1"]
    targets = {m["Target"]: m for m in spec["mounts"]}
    assert targets["/runyard/runner.py"]["ReadOnly"] is True
    assert targets["/runyard/task/task.json"]["ReadOnly"] is True
    assert targets["/runyard/task/attempt-1"]["ReadOnly"] is False
    assert targets["/runyard/task/attempt-1"]["Source"].endswith("/tasks/t/attempt-1")
    assert spec["environment"]["RUNYARD_TASK_DIR"] == "/runyard/task"


def test_a_bash_script_runs_under_the_bash_runner_and_another_under_the_python_runner() -> None:
    bash = dry_spec(run.DockerExecutor(image="img"), run.Script(inline="echo hi"))
    assert bash["command"][:4] == ["bash", "/runyard/runner.sh", "/runyard/task", "1"]
    assert bash["command"][4:] == ["bash", "-c", "echo hi", "runyard-script"]
    sh = dry_spec(run.DockerExecutor(image="img"), run.Script(inline="echo hi", entrypoint="sh"))
    assert sh["command"] == ["python3", "/runyard/runner.py", "/runyard/task", "1"]


def test_the_git_work_tree_is_mounted_read_only_and_is_the_working_directory() -> None:
    spec = dry_spec(run.DockerExecutor(image="img"))
    code = next(m for m in spec["mounts"] if m["Target"] == "/runyard/code")
    assert code["ReadOnly"] is True and "/code/" in code["Source"]
    assert spec["working_dir"].startswith("/runyard/code")


def test_with_code_none_nothing_is_shipped() -> None:
    spec = dry_spec(run.DockerExecutor(image="img", code=None))
    assert "/runyard/code" not in {m["Target"] for m in spec["mounts"]}
    assert "working_dir" not in spec


def test_gpus_become_a_gpu_device_request() -> None:
    assert dry_spec(run.DockerExecutor(image="img", gpus=2))["device_requests"] == [
        {"count": 2, "capabilities": [["gpu"]]}
    ]
    assert dry_spec(run.DockerExecutor(image="img", gpus="all"))["device_requests"] == [
        {"count": -1, "capabilities": [["gpu"]]}
    ]
    assert "device_requests" not in dry_spec(run.DockerExecutor(image="img"))


def test_the_gpu_request_is_what_the_docker_sdk_sends_as_docker_run_gpus() -> None:
    from docker.types import DeviceRequest, HostConfig

    [request] = dry_spec(run.DockerExecutor(image="img", gpus="all"))["device_requests"]
    sent = HostConfig(version="1.41", device_requests=[request])["DeviceRequests"]
    assert sent == [DeviceRequest(count=-1, capabilities=[["gpu"]])]


def test_engine_options_and_run_kwargs_are_in_the_spec(tmp_path: Path) -> None:
    executor = run.DockerExecutor(
        image="img", network="none", shm_size="256m", ipc_mode="host", user="1000:1000",
        workdir="/work", volumes=[f"{tmp_path}:/data:ro", "cache:/cache"],
        run_kwargs={"mem_limit": "1g", "labels": {"team": "ml"}, "init": False},
    )  # fmt: skip
    spec = dry_spec(executor)
    assert (spec["network"], spec["shm_size"], spec["ipc_mode"]) == ("none", "256m", "host")
    assert (spec["user"], spec["working_dir"], spec["mem_limit"], spec["init"]) == (
        "1000:1000",
        "/work",
        "1g",
        False,
    )
    assert spec["labels"]["team"] == "ml" and spec["labels"]["runyard.task"] == "t"
    mounts = {m["Target"]: m for m in spec["mounts"]}
    assert mounts["/data"] == {"Type": "bind", "Source": str(tmp_path), "Target": "/data", "ReadOnly": True}
    assert mounts["/cache"] == {"Type": "volume", "Source": "cache", "Target": "/cache", "ReadOnly": False}


def test_a_relative_volume_source_is_taken_from_the_experiments_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = dry_spec(run.DockerExecutor(image="img", volumes=["./data:/data"], code=None))
    assert {"Type": "bind", "Source": str(tmp_path / "data"), "Target": "/data", "ReadOnly": False} in spec[
        "mounts"
    ]


def test_the_dry_run_masks_secrets_and_warns_of_a_missing_volume_source(tmp_path: Path) -> None:
    executor = run.DockerExecutor(
        image="img", env_vars={"HF_TOKEN": "hf_secret", "LR": "0.1"}, volumes=[f"{tmp_path}/nope:/data"]
    )
    exp = run.Experiment("docker-dry")
    exp.add(run.Config(taskdefs.hello), executor=executor, name="t")
    text = exp.dry_run(file=io.StringIO())["t"]
    assert "hf_secret" not in text
    spec = spec_of(exp, "t")
    assert (spec["environment"]["HF_TOKEN"], spec["environment"]["LR"]) == ("***", "0.1")
    assert f"! volume source {tmp_path}/nope does not exist: the launch would fail" in text
    assert all(t.status == "PENDING" and t.attempts == 0 for t in exp.tasks)
