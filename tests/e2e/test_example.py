"""examples/ml_pipeline.py runs as a user runs it: a script, its task targets in __main__."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import runyard as run

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ml_pipeline.py"


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], run.Experiment]:
    """The example, run once for this module in a subprocess with its own RUNYARD_HOME, and
    the experiment it made."""
    home = str(tmp_path_factory.mktemp("example") / "runyard-home")
    env = dict(os.environ, RUNYARD_HOME=home, RUNYARD_PLAIN="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc, run.Experiment.from_title("ml-pipeline", base_dir=home)


def test_the_pipeline_succeeds_and_prints_progress_and_a_summary(pipeline):
    proc, exp = pipeline
    out = proc.stdout
    for task in exp.tasks:  # live progress: each task's state changes, as they happen
        assert re.search(rf"^\d\d:\d\d:\d\d {task.id} +RUNNING$", out, re.MULTILINE)
        assert re.search(rf"^\d\d:\d\d:\d\d {task.id} +SUCCEEDED", out, re.MULTILINE)
    assert "\nfinal status: SUCCEEDED\n" in out
    assert "best learning rate: 0.5\n" in out
    assert re.search(r"^  0\.01 +\d+\.\d{4} +\d+\.\d{4}$", out, re.MULTILINE)


def test_the_sweep_fans_out_after_data_and_in_to_evaluation(pipeline):
    _, exp = pipeline
    tasks = {t.id: t for t in exp.tasks}
    training = ["training-0", "training-1", "training-2"]
    assert list(tasks) == ["data-preparation", *training, "evaluation", "deployment"]
    assert all(t.status == "SUCCEEDED" for t in tasks.values())
    assert all(tasks[t].dependencies == ["data-preparation"] for t in training)
    assert tasks["evaluation"].dependencies == training
    assert tasks["evaluation"].start_time >= max(tasks[t].end_time for t in training)
    assert tasks["deployment"].dependencies == ["evaluation"]


def test_each_variant_trains_with_its_learning_rate_and_reports_its_loss(pipeline):
    _, exp = pipeline
    final_losses = {}
    for task_id, lr in [("training-0", 0.01), ("training-1", 0.1), ("training-2", 0.5)]:
        stdout = exp.get_logs(task_id).stdout
        assert f"learning rate {lr} " in stdout
        losses = [float(v) for v in re.findall(r"loss: (\d+\.\d+)", stdout)]
        assert len(losses) == 31 and losses == sorted(losses, reverse=True)  # initial + every epoch
        final_losses[lr] = losses[-1]
    assert final_losses[0.5] < final_losses[0.1] < final_losses[0.01]


def test_the_best_model_is_recorded_as_an_artifact_and_deployed(pipeline):
    _, exp = pipeline
    artifact = exp.get_artifacts()["best_model"]
    data = Path(artifact.path).read_bytes()
    assert (artifact.size, artifact.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert json.loads(data)["learning_rate"] == 0.5
    assert Path(artifact.path).is_relative_to(exp.directory)  # written under the experiment
    metadata = exp.get_metadata()
    assert metadata["best_learning_rate"] == 0.5 and metadata["learning_rates"] == [0.01, 0.1, 0.5]
    deployed = Path(exp.directory, "work", "deployed")
    assert (deployed / "model.json").read_bytes() == data
    assert (deployed / "deployed").read_text().startswith(f"{artifact.path} deployed at ")
