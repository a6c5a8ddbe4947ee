"""Snapshots: save, load, reproduce; secrets never written; versions and git state recorded."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata

import pytest
import runyard as run
import taskdefs
from _core_helpers import task

SECRETS = {
    "HF_TOKEN": "tok-7c1f0e9a",
    "DB_PASSWORD": "pw-51d2b8e3",
    "MY_SECRET": "sec-0a9b8c7d",
    "AWS_ACCESS_KEY_ID": "key-AKIA4F2E",
    "wandb_api_key": "lower-key-3e4f",
}


class BF16(run.Plugin):
    """A plugin applied at add(): what the snapshot stores is the task after it."""

    def modify_task(self, task):
        if hasattr(task, "precision"):
            task.precision = "bf16"
        return task


def _git(repo, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def git_repo(tmp_path, monkeypatch):
    """A committed git work tree, as the current directory."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print('train')\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "initial")
    monkeypatch.chdir(repo)
    return repo


def _pipeline() -> run.Experiment:
    exp = run.Experiment(
        "snap",
        description="a pipeline",
        tags=["llama3", "8b"],
        metadata={"dataset": "wikitext-103", "trials": 2},
        log_level="DEBUG",
        max_retries=2,
        timeout=600,
        checkpoint_interval=30,
    )
    prep = exp.add(
        run.Config(taskdefs.hello, name="prep"),
        name="prep",
        executor=run.LocalExecutor(env_vars={"STAGE": "prep"}),
    )
    ids = exp.add(
        [run.Config(taskdefs.add, a=1), run.Config(taskdefs.add, a=2, b=3)],
        name="variants",
        dependencies=[prep],
    )
    exp.add(run.Config(taskdefs.Trainer, model_size="70b"), name="train", dependencies=ids, plugins=[BF16()])
    exp.add(
        run.Script(inline="echo evaluated"),
        name="eval",
        dependencies=["train"],
        executor=run.LocalExecutor(cancel_grace=1.0),
    )
    return exp


def test_reproduce_gives_a_new_not_launched_experiment_with_the_same_everything(tmp_path) -> None:
    exp = _pipeline()
    path = exp.create_snapshot().save(str(tmp_path / "snapshot.json"))
    again = run.ExperimentSnapshot.load(path).reproduce()

    assert again.experiment_id != exp.experiment_id
    assert again.store.experiment(again.experiment_id).launched_at is None
    assert again.status() == "CREATED"
    assert [(t.id, t.status, t.attempts) for t in again.tasks] == [(t.id, "PENDING", 0) for t in exp.tasks]
    assert [t.dependencies for t in again.tasks] == [t.dependencies for t in exp.tasks]
    assert [t.executor for t in again.tasks] == [t.executor for t in exp.tasks]
    assert (again.title, again.description, again.tags) == ("snap", "a pipeline", ["llama3", "8b"])
    assert again.get_metadata() == exp.get_metadata()
    for key in ("log_level", "max_retries", "timeout", "checkpoint_interval"):
        assert again.settings[key] == exp.settings[key]
    original, copy = exp.create_snapshot(), again.create_snapshot()
    assert copy.tasks == original.tasks  # configs (after plugins), executors, deps, plugins applied


def test_the_snapshot_stores_tasks_after_their_plugins_ran(tmp_path) -> None:
    exp = _pipeline()
    snap = exp.create_snapshot()
    train = next(t for t in snap.tasks if t["id"] == "train")
    assert train["task"]["kwargs"]["precision"] == "bf16"
    assert [p["plugin"] for p in train["plugins"]] == [f"{__name__}:BF16"]


def test_a_reproduced_experiment_runs_and_succeeds(tmp_path) -> None:
    exp = _pipeline()
    path = exp.create_snapshot().save(str(tmp_path / "snapshot.json"))
    again = run.ExperimentSnapshot.load(path).reproduce()
    assert again.run() == "SUCCEEDED"
    assert again.get_logs("train").stdout == "training 70b lr=0.001 precision=bf16\n"
    assert again.get_logs("eval").stdout == "evaluated\n"
    assert exp.status() == "CREATED"  # the original was not launched by reproducing it


def test_secret_env_vars_are_never_written_to_the_snapshot_file(tmp_path) -> None:
    exp = run.Experiment("secrets")
    exp.add(
        run.Config(taskdefs.hello),
        executor=run.LocalExecutor(env_vars={**SECRETS, "PLAIN_SETTING": "plain-value-1"}),
    )
    exp.add(run.Script(inline="true", env={"GITHUB_TOKEN": "ghp-9f8e7d6c", "MODE": "plain-value-2"}))
    path = exp.create_snapshot().save(str(tmp_path / "snapshot.json"))
    text = open(path).read()
    for value in [*SECRETS.values(), "ghp-9f8e7d6c"]:
        assert value not in text, f"secret value {value!r} was written to the snapshot"
    assert "plain-value-1" in text and "plain-value-2" in text
    for name in [*SECRETS, "GITHUB_TOKEN"]:
        assert name in text  # the names are listed, so reproduce() knows what to take


def test_reproduce_takes_secret_env_vars_from_the_environment(tmp_path, monkeypatch) -> None:
    from runyard import redact

    exp = run.Experiment("secrets-env")
    t = exp.add(
        run.Config(taskdefs.print_env, "HF_TOKEN", "PLAIN_SETTING"),
        executor=run.LocalExecutor(env_vars={"HF_TOKEN": "tok-original", "PLAIN_SETTING": "plain"}),
    )
    path = exp.create_snapshot().save(str(tmp_path / "snapshot.json"))
    monkeypatch.setenv("HF_TOKEN", "tok-from-environment")
    again = run.ExperimentSnapshot.load(path).reproduce()
    monkeypatch.delenv("HF_TOKEN")  # the task must get it from what reproduce() kept, not from here
    # stored as a marker (never the value); this process keeps the value for the task
    assert task(again, t).executor.env_vars == {"HF_TOKEN": redact.MARKER, "PLAIN_SETTING": "plain"}
    assert again.run() == "SUCCEEDED"
    assert again.get_logs(t).stdout == "HF_TOKEN=tok-from-environment\nPLAIN_SETTING=plain\n"


def test_reproduce_warns_about_secrets_missing_from_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    exp = run.Experiment("secrets-missing")
    exp.add(run.Config(taskdefs.hello), executor=run.LocalExecutor(env_vars={"DB_PASSWORD": "pw"}))
    path = exp.create_snapshot().save(str(tmp_path / "snapshot.json"))
    with pytest.warns(UserWarning, match="DB_PASSWORD"):
        again = run.ExperimentSnapshot.load(path).reproduce()
    assert "DB_PASSWORD" not in again.tasks[0].executor.env_vars


def test_the_snapshot_records_runyard_plugin_and_python_versions(tmp_path) -> None:
    exp = _pipeline()
    path = exp.create_snapshot().save(str(tmp_path / "snapshot.json"))
    env = json.loads(open(path).read())["environment"]
    assert env["runyard"] == metadata.version("runyard") == run.__version__
    assert env["packages"]["runyard-local"] == metadata.version("runyard-local")
    assert env["python"] == platform.python_version()


def test_the_snapshot_records_the_git_commit_of_a_clean_work_tree(git_repo, tmp_path) -> None:
    exp = _pipeline()
    path = exp.create_snapshot().save(str(tmp_path / "snapshot.json"))
    git = json.loads(open(path).read())["environment"]["git"]
    assert git["commit"] == _git(git_repo, "rev-parse", "HEAD")
    assert git["dirty"] is False


def test_the_snapshot_records_a_dirty_work_tree_and_its_diff(git_repo, tmp_path) -> None:
    exp = _pipeline()
    (git_repo / "train.py").write_text("print('train, changed')\n")
    path = exp.create_snapshot().save(str(tmp_path / "snapshot.json"))
    git = json.loads(open(path).read())["environment"]["git"]
    assert git["commit"] == _git(git_repo, "rev-parse", "HEAD")
    assert git["dirty"] is True
    assert "train, changed" in git["diff"]
