"""A Docker dry run shows exactly the container a launch creates: the engine's own record of
the running container (``docker inspect``) has the command, environment, mounts, working
directory, labels and name the dry run shows (secret values aside)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
import runyard as run
import taskdefs
from _docker_helpers import task, until

LAUNCH = "runyard.launch"  # label and variable (RUNYARD_LAUNCH_ID) of each launch: not in a dry run


def mount(entry: dict[str, Any]) -> tuple[str, str, str, bool]:
    return entry["Type"], entry["Source"], entry["Target"], bool(entry.get("ReadOnly", False))


@pytest.mark.parametrize(
    "work",
    [run.Config(taskdefs.sleep_then_print, 600), run.Script(inline="sleep 600")],
    ids=["python", "script"],
)
def test_the_dry_run_shows_the_container_the_launch_creates(
    work: Any, docker_executor: Callable[..., Any], client: Any, tasks_dir: str
) -> None:
    executor = docker_executor(
        env_vars={"HF_TOKEN": "hf_secret", "LR": "0.1"}, volumes=[f"{tasks_dir}:/shared:ro"]
    )
    exp = run.Experiment("docker-dry-run")
    exp.add(work, executor=executor, name="t")
    text = exp.dry_run(file=io.StringIO())["t"]
    spec = json.loads(text[text.index("{") : text.rindex("}") + 1])

    exp.run(detach=True)
    until(lambda: task(exp, "t").status == "RUNNING", "the container to run")
    info = client.api.inspect_container(task(exp, "t").job_id)
    exp.cancel_all()

    config, host = info["Config"], info["HostConfig"]
    assert config["Cmd"] == spec["command"]
    assert config["WorkingDir"] == spec["working_dir"]
    assert config["Image"] == spec["image"] and info["Name"] == "/" + spec["name"]
    ours = {k: v for k, v in config["Labels"].items() if k.startswith("runyard.") and k != LAUNCH}
    assert ours == spec["labels"]  # (the image's labels aside)
    assert sorted(map(mount, host["Mounts"])) == sorted(map(mount, spec["mounts"]))
    assert ("bind", tasks_dir, "/shared", True) in map(mount, spec["mounts"])
    assert host["Init"] is spec["init"] is True
    env = dict(entry.split("=", 1) for entry in config["Env"])
    shown = spec["environment"]
    assert (shown["HF_TOKEN"], env["HF_TOKEN"]) == ("***", "hf_secret")  # masked only where shown
    assert {name: env.get(name) for name in shown if name != "HF_TOKEN"} == {
        name: value for name, value in shown.items() if name != "HF_TOKEN"
    }
    assert "RUNYARD_LAUNCH_ID" in env and "hf_secret" not in text
