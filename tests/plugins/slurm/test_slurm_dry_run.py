"""A Slurm dry run shows exactly the script a launch submits: the job.sh that lands on the
cluster is the one shown (secret values aside), with the job folder resolved as launch
resolves it (``~`` is the home folder there)."""

from __future__ import annotations

import io
import shlex
import uuid
from typing import Any

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster


def script_lines(text: str) -> list[str]:
    """The script's lines but the launch id (each launch has its own; a dry run launches nothing)."""
    return [line for line in text.splitlines() if not line.startswith("export RUNYARD_LAUNCH_ID=")]


@pytest.mark.parametrize(
    "work",
    [run.Config(taskdefs.hello, "dry"), run.Script(inline='echo "$1"', args=["it's dry"])],
    ids=["python", "script"],
)
def test_the_dry_run_shows_the_job_script_the_launch_submits_with_the_home_folder_resolved(
    work: Any, cluster: Cluster
) -> None:
    job_dir = f"runyard-dry-run-{uuid.uuid4().hex[:12]}"  # in the home folder on the cluster
    executor = cluster.executor(
        tunnel=cluster.tunnel(job_dir=f"~/{job_dir}"), env_vars={"API_TOKEN": "s3cret", "LR": "0.1"}
    )
    exp = run.Experiment("slurm-dry-run")
    exp.add(work, executor=executor, name="t")
    home = cluster.sh('printf %s "$HOME"')
    job_sh = f"{home}/{job_dir}/{exp.experiment_id}/tasks/t/attempt-1/job.sh"

    shown = exp.dry_run(file=io.StringIO())["t"]
    try:
        assert exp.run() == "SUCCEEDED", exp.tasks[0].reason
        submitted = cluster.read(job_sh).decode()
    finally:
        cluster.sh(f"rm -rf {shlex.quote(f'{home}/{job_dir}')}")  # the code and runner shipped too

    what, _code, script = shown.split("\n", 2)  # two comment lines, then the script
    assert what.endswith(f": sbatch --parsable {job_sh}")
    assert "~" not in script and f"{home}/{job_dir}/{exp.experiment_id}/tasks/t" in script
    assert "export API_TOKEN='***'" in script and "s3cret" not in shown
    assert "export API_TOKEN=s3cret" in submitted  # masked where shown only
    assert script_lines(script) == script_lines(submitted.replace("API_TOKEN=s3cret", "API_TOKEN='***'"))
