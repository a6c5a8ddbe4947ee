"""``RayExecutor``: where it goes when given no address, the clear errors of bad fields, what a
dry run shows (secrets masked), and the plugin found through its entry points. No cluster needed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import runyard as run
import taskdefs
from runyard.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_address_from_outside(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RUNYARD_RAY_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNYARD_RAY_CONFIG", str(tmp_path / "no-ray.toml"))


@pytest.mark.alone
def test_the_executor_is_found_through_the_plugin_and_describes_its_cluster() -> None:
    executor = run.RayExecutor(address="http://head:8265")
    assert (executor.kind, executor.describe()) == ("ray", "ray@head:8265")
    assert run.RayExecutor is __import__("runyard_ray").RayExecutor


@pytest.mark.alone
def test_with_no_address_the_environment_then_the_config_file_then_the_local_head_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert run.RayExecutor().address == "http://127.0.0.1:8265"
    config = tmp_path / "ray.toml"
    config.write_text('address = "head-from-file:8265"\n')
    monkeypatch.setenv("RUNYARD_RAY_CONFIG", str(config))
    assert run.RayExecutor().address == "http://head-from-file:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://ray-address:8265/")
    assert run.RayExecutor().address == "http://ray-address:8265"
    monkeypatch.setenv("RUNYARD_RAY_ADDRESS", "https://runyard-address")
    assert run.RayExecutor().address == "https://runyard-address"
    assert run.RayExecutor(address="given:1").address == "http://given:1"


def test_a_config_file_with_an_unknown_key_or_bad_toml_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "ray.toml"
    monkeypatch.setenv("RUNYARD_RAY_CONFIG", str(config))
    config.write_text('adress = "x"\n')
    with pytest.raises(ConfigError, match=r"ray.toml: unknown key\(s\) adress; the only key is: address"):
        run.RayExecutor()
    config.write_text("address = \n")
    with pytest.raises(ConfigError, match="cannot read the Ray config file"):
        run.RayExecutor()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"address": "ray://head:10001"}, "that is a Ray Client address"),
        ({"address": "http://"}, "must be the HTTP address of the Ray head's dashboard"),
        ({"runtime_env": {"working_dir": "."}}, "'working_dir' is set by runyard"),
        ({"runtime_env": {"env_vars": {}}}, "'env_vars' is set by the field env_vars"),
        ({"runtime_env": ["pip"]}, "runtime_env must be a dict"),
        ({"num_cpus": -1}, "num_cpus must be a number >= 0"),
        ({"num_gpus": "1"}, "num_gpus must be a number >= 0"),
        ({"resources": {"GPU": 1}}, "ask for 'GPU' with num_gpus"),
        ({"resources": {"TPU": 0}}, r"resources\['TPU'\] must be a number > 0"),
        ({"python": "python 3"}, "python must be the name or path of python3"),
        ({"max_jobs": 0}, "max_jobs must be a number of jobs >= 1"),
        ({"code": ""}, "RayExecutor.code must be 'git', a directory or None"),
        ({"num_gpus": 0.5, "launcher": "torchrun"}, "each rank needs a whole GPU"),
        ({"num_gpus": 1, "launcher": run.Torchrun(nproc_per_node=2)}, "give num_gpus=2 or nproc_per_node=1"),
        ({"gpus": 2}, "RayExecutor has no field 'gpus'"),
    ],
)
def test_bad_fields_are_clear_errors_when_the_executor_is_made(fields: dict, message: str) -> None:
    with pytest.raises(run.RunyardError, match=message):
        run.RayExecutor(**fields)


def test_gpus_and_a_launcher_map_onto_the_job(runyard_home: str) -> None:
    executor = run.RayExecutor(num_gpus=2, launcher="torchrun", num_cpus=4, resources={"TPU": 1})
    assert executor.default_nproc() == 2
    request = dry_run_request(executor)
    assert (request["entrypoint_num_gpus"], request["entrypoint_num_cpus"]) == (2, 4)
    assert request["entrypoint_resources"] == {"TPU": 1}


def dry_run_request(executor: run.RayExecutor, **add: object) -> dict:
    exp = run.Experiment("ray-dry")
    exp.add(run.Config(taskdefs.hello), executor=executor, name="t", **add)
    text = exp.dry_run(file=io.StringIO())["t"]
    start = text.index("{")
    request, _ = json.JSONDecoder().raw_decode(text[start:])
    return request


@pytest.mark.alone
def test_a_dry_run_shows_the_job_submission_with_secrets_masked(runyard_home: str) -> None:
    executor = run.RayExecutor(
        address="http://head:8265", env_vars={"WANDB_API_KEY": "k-123", "MODE": "fast"},
        runtime_env={"pip": ["numpy"]},
    )  # fmt: skip
    exp = run.Experiment("ray-dry")
    exp.add(run.Config(taskdefs.hello, "ray"), executor=executor, name="t")
    text = exp.dry_run(file=io.StringIO())["t"]
    assert "k-123" not in text
    assert text.startswith("ray: would submit this job for task t to the Ray head at http://head:8265")
    request = dry_run_request(executor)
    assert request["entrypoint"] == "python3 ray_job.py"
    assert request["runtime_env"]["pip"] == ["numpy"]
    assert request["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")
    env = request["runtime_env"]["env_vars"]
    assert (env["WANDB_API_KEY"], env["MODE"]) == ("***", "fast")
    assert request["metadata"]["runyard_task"] == "t"
    assert "ray_job.py runs there" in text and '"attempt": 1' in text


def test_the_python_of_the_cluster_is_quoted_in_the_entrypoint(runyard_home: str) -> None:
    request = dry_run_request(run.RayExecutor(python="/opt/my;env/bin/python3"))
    assert request["entrypoint"] == "'/opt/my;env/bin/python3' ray_job.py"
