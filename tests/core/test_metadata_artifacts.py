"""Experiment metadata and artifacts, and that they survive rebuilding the experiment."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys

import runyard as run

CREATION = {"dataset": "wikitext-103", "model_size": "8B", "num_trials": 10}


def _in_fresh_process(code: str) -> str:
    """Run ``code`` in a new Python process (same RUNYARD_HOME); return its stdout."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


# --- metadata ---------------------------------------------------------------------------------
def test_metadata_given_at_creation_is_returned() -> None:
    exp = run.Experiment("meta", metadata=CREATION)
    assert exp.get_metadata() == CREATION


def test_add_metadata_merges_with_what_is_there() -> None:
    exp = run.Experiment("meta-merge", metadata=CREATION)
    exp.add_metadata({"best_accuracy": 0.95, "num_trials": 12})
    exp.add_metadata({"tags": ["a", "b"], "nested": {"x": [1, None, True]}})
    assert exp.get_metadata() == {
        "dataset": "wikitext-103",
        "model_size": "8B",
        "num_trials": 12,
        "best_accuracy": 0.95,
        "tags": ["a", "b"],
        "nested": {"x": [1, None, True]},
    }


def test_metadata_survives_from_id_in_the_same_process() -> None:
    exp = run.Experiment("meta-same", metadata=CREATION)
    exp.add_metadata({"best_accuracy": 0.95})
    again = run.Experiment.from_id(exp.experiment_id)
    assert again.get_metadata() == {**CREATION, "best_accuracy": 0.95}
    again.add_metadata({"from_again": True})
    assert exp.get_metadata()["from_again"] is True


def test_metadata_survives_from_id_in_a_fresh_process() -> None:
    exp = run.Experiment("meta-fresh", metadata=CREATION)
    exp.add_metadata({"best_accuracy": 0.95})
    out = _in_fresh_process(
        "import json, runyard as run\n"
        f"exp = run.Experiment.from_id({exp.experiment_id!r})\n"
        "exp.add_metadata({'written_by': 'child'})\n"
        "print(json.dumps(exp.get_metadata()))\n"
    )
    assert json.loads(out) == {**CREATION, "best_accuracy": 0.95, "written_by": "child"}
    assert exp.get_metadata()["written_by"] == "child"


def test_from_title_returns_the_newest_experiment_with_that_title() -> None:
    run.Experiment("same-title", metadata={"n": 1})
    newest = run.Experiment("same-title", metadata={"n": 2})
    found = run.Experiment.from_title("same-title")
    assert found.experiment_id == newest.experiment_id
    assert found.get_metadata() == {"n": 2}


# --- artifacts -------------------------------------------------------------------------------------
def test_a_file_artifact_records_its_size_and_sha256(tmp_path) -> None:
    data = os.urandom(3000) + b"model weights"
    path = tmp_path / "best_model.pt"
    path.write_bytes(data)
    exp = run.Experiment("artifact-file")
    exp.add_artifact("best_model", str(path), description="Best checkpoint")
    a = exp.get_artifacts()["best_model"]
    assert a.path == str(path)
    assert a.description == "Best checkpoint"
    assert a.size == len(data)
    assert a.sha256 == hashlib.sha256(data).hexdigest()


def test_a_folder_artifact_size_is_the_sum_of_its_files(tmp_path) -> None:
    folder = tmp_path / "logs"
    (folder / "sub").mkdir(parents=True)
    (folder / "train.log").write_bytes(b"loss: 0.5\n" * 7)
    (folder / "sub" / "eval.log").write_bytes(b"accuracy: 0.9\n" * 3)
    exp = run.Experiment("artifact-folder")
    exp.add_artifact("training_logs", str(folder))
    a = exp.get_artifacts()["training_logs"]
    assert a.size == 70 + 42
    assert len(a.sha256) == 64 and int(a.sha256, 16) >= 0


def test_a_folder_artifact_sha256_covers_its_file_names_and_contents(tmp_path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"alpha")
    (folder / "b.bin").write_bytes(b"beta")
    exp = run.Experiment("artifact-folder-sha")
    exp.add_artifact("v1", str(folder))
    exp.add_artifact("v1-again", str(folder))
    (folder / "b.bin").write_bytes(b"BETA")
    exp.add_artifact("content-changed", str(folder))
    (folder / "b.bin").rename(folder / "c.bin")
    exp.add_artifact("renamed", str(folder))
    sha = {name: a.sha256 for name, a in exp.get_artifacts().items()}
    assert sha["v1"] == sha["v1-again"]
    assert len({sha["v1"], sha["content-changed"], sha["renamed"]}) == 3


def test_artifact_created_at_is_timezone_aware(tmp_path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("x")
    exp = run.Experiment("artifact-time")
    before = dt.datetime.now(dt.timezone.utc)
    exp.add_artifact("f", str(path))
    created = exp.get_artifacts()["f"].created_at
    assert created.tzinfo is not None and created.utcoffset() is not None
    assert before - dt.timedelta(seconds=1) <= created <= dt.datetime.now(dt.timezone.utc)


def test_artifacts_survive_from_id_in_a_fresh_process(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"payload")
    exp = run.Experiment("artifact-fresh")
    exp.add_artifact("f", str(path), description="d")
    out = _in_fresh_process(
        "import json, runyard as run\n"
        f"a = run.Experiment.from_id({exp.experiment_id!r}).get_artifacts()['f']\n"
        "print(json.dumps([a.path, a.description, a.size, a.sha256]))\n"
    )
    assert json.loads(out) == [str(path), "d", 7, hashlib.sha256(b"payload").hexdigest()]
