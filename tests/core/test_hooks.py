"""Every hook in runyard.hookspecs, exercised through a real registered plugin.

Test functions are named ``test_<hookname>_...``: the meta-test at the bottom checks that
every hookspec has at least one, and that docs/plugins.md documents it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import os
import re
import shutil
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import runyard as run
import taskdefs
from helpers import ChildProcessBackend
from runyard import hookspecs
from runyard.artifacts import (
    Artifact,
    ArtifactStore,
    ArtifactStoreRegistry,
    ExperimentInfo,
    StoredFile,
    digest,
)
from runyard.errors import ConfigError
from runyard.executor import Executor, JobRef
from runyard.hookspecs import hookimpl
from runyard.logs import LogSource
from runyard.plugins import ExecutorRegistry, TaskSpec
from runyard.testing import registered_plugin

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_plugins(runyard_plugins: Any) -> Any:
    """Each test starts from a freshly loaded plugin manager."""
    return runyard_plugins


# ------------------------------------------------------------------------------ executors
@attrs.define
class ChildProcessExecutor(Executor):
    """A test executor kind: each task a child process of the driver."""

    kind: ClassVar[str] = "test-child-process"

    label: str = "plain"


class ChildProcessPlugin:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(ChildProcessExecutor, ChildProcessBackend)


def test_runyard_register_executors_runs_an_experiment_end_to_end_on_the_new_kind() -> None:
    with registered_plugin(ChildProcessPlugin(), name="child-process"):
        exp = run.Experiment("through-a-plugin-backend")
        ok = exp.add(
            run.Config(taskdefs.print_env, "LAUNCHED_BY", "FROM_EXECUTOR"),
            executor=ChildProcessExecutor(label="mine", env_vars={"FROM_EXECUTOR": "yes"}),
            name="ok",
        )
        bad = exp.add(run.Config(taskdefs.exit_with, 3), executor=ChildProcessExecutor(), name="bad")

        assert exp.run() == "FAILED"

        tasks = {t.id: t for t in exp.tasks}
        assert tasks[ok].status == "SUCCEEDED"
        assert exp.get_logs(ok).stdout == "LAUNCHED_BY=ChildProcessBackend\nFROM_EXECUTOR=yes\n"
        assert tasks[bad].status == "FAILED"
        assert tasks[bad].exit_code == 3
        # the executor round-trips through the store, structured by its registered kind
        again = run.Experiment.from_id(exp.experiment_id).tasks
        assert again[0].executor == ChildProcessExecutor(label="mine", env_vars={"FROM_EXECUTOR": "yes"})


def test_runyard_register_executors_kind_is_unknown_once_its_plugin_is_gone() -> None:
    exp = run.Experiment("no-such-backend")
    with pytest.raises(ConfigError, match="test-child-process"):
        exp.add(run.Config(taskdefs.hello), executor=ChildProcessExecutor())


# ------------------------------------------------------------------------------ task modifiers
class RenamesAndAddsEnv:
    """Sets the task's ``name`` argument and adds a variable to the executor's env_vars."""

    @hookimpl
    def runyard_modify_task(self, spec: TaskSpec) -> None:
        spec.task.name = "from-hook"
        spec.executor.env_vars["ADDED_BY_HOOK"] = "yes"


def test_runyard_modify_task_changes_copies_of_the_task_and_executor_at_add() -> None:
    cfg = run.Config(taskdefs.hello, name="caller")
    executor = run.LocalExecutor(env_vars={"MINE": "1"})
    exp = run.Experiment("modify-task")
    with registered_plugin(RenamesAndAddsEnv(), name="renamer"):
        task_id = exp.add(cfg, executor=executor)

    # applied at add(): the plugin is gone by the time the task runs
    assert exp.run() == "SUCCEEDED"
    assert exp.get_logs(task_id).stdout == "hello from-hook\n"
    assert exp.tasks[0].executor.env_vars == {"MINE": "1", "ADDED_BY_HOOK": "yes"}
    # the caller's objects are untouched
    assert cfg.name == "caller"
    assert executor.env_vars == {"MINE": "1"}


class Recorder(run.Plugin):
    """A guide-style plugin object that records what it saw and leaves its mark."""

    def __init__(self, label: str, log: list[tuple[str, Any]]) -> None:
        self.label = label
        self.log = log

    def modify_task(self, task: Any) -> Any:
        self.log.append((f"{self.label}.modify_task", task.name))
        task.name = self.label
        return task

    def modify_executor(self, executor: Executor) -> Executor:
        self.log.append((f"{self.label}.modify_executor", executor.env_vars.get("LAST")))
        executor.env_vars["LAST"] = self.label
        return executor


def test_runyard_modify_task_runs_before_the_plugin_objects_which_run_in_list_order() -> None:
    log: list[tuple[str, Any]] = []

    class Hook:
        @hookimpl
        def runyard_modify_task(self, spec: TaskSpec) -> None:
            log.append(("hook", spec.task.name))
            spec.task.name = "hook"
            spec.executor.env_vars["LAST"] = "hook"

    exp = run.Experiment("modifier-order")
    with registered_plugin(Hook(), name="order-hook"):
        exp.add(
            run.Config(taskdefs.hello, name="caller"),
            plugins=[Recorder("first", log), Recorder("second", log)],
        )

    assert log == [
        ("hook", "caller"),
        ("first.modify_task", "hook"),
        ("first.modify_executor", "hook"),
        ("second.modify_task", "first"),
        ("second.modify_executor", "first"),
    ]
    assert exp.tasks[0].executor.env_vars["LAST"] == "second"


def test_runyard_modify_task_sees_each_task_of_a_list_with_its_id() -> None:
    seen: list[tuple[str, str, str]] = []

    class Hook:
        @hookimpl
        def runyard_modify_task(self, spec: TaskSpec) -> None:
            seen.append((spec.experiment_id, spec.task_id, spec.task.name))

    exp = run.Experiment("modifier-ids")
    with registered_plugin(Hook(), name="id-hook"):
        ids = exp.add(
            [run.Config(taskdefs.hello, name="a"), run.Config(taskdefs.hello, name="b")], name="pair"
        )

    assert seen == [(exp.experiment_id, ids[0], "a"), (exp.experiment_id, ids[1], "b")]


# ------------------------------------------------------------------------------ log sources
FIXED_TIME = 1_700_000_000.5


class RemoteLogs(LogSource):
    """Serves a task's files as if fetched from elsewhere (here: fixed content)."""

    def __init__(self) -> None:
        self.refs: list[tuple[str, int, str]] = []

    def read(self, ref: JobRef, name: str, offset: int = 0) -> bytes:
        self.refs.append((ref.task_dir, ref.attempt, name))
        files = {
            "stdout.log": b"from the remote copy\n",
            "stderr.log": b"a remote warning\n",
            "journal.log": b"%.6f o from the remote copy\n%.6f e a remote warning\n"
            % (FIXED_TIME, FIXED_TIME),
        }
        return files.get(name, b"")[offset:]


class RemoteLogsPlugin:
    """Answers only for executors marked ``LOGS=remote``: others fall through to core's source."""

    def __init__(self) -> None:
        self.source = RemoteLogs()

    @hookimpl
    def runyard_log_source(self, executor: Executor) -> LogSource | None:
        return self.source if executor.env_vars.get("LOGS") == "remote" else None


def test_runyard_log_source_output_is_what_get_logs_and_stream_logs_return() -> None:
    plugin = RemoteLogsPlugin()
    with registered_plugin(plugin, name="remote-logs"):
        exp = run.Experiment("log-source")
        remote = exp.add(run.Config(taskdefs.hello), executor=run.LocalExecutor(env_vars={"LOGS": "remote"}))
        assert exp.run() == "SUCCEEDED"

        logs = exp.get_logs(remote)
        entries = list(exp.stream_logs(remote, follow=False))

    assert (logs.stdout, logs.stderr, logs.exit_code) == ("from the remote copy\n", "a remote warning\n", 0)
    when = dt.datetime.fromtimestamp(FIXED_TIME, tz=dt.timezone.utc)
    assert [(e.timestamp, e.stream, e.message) for e in entries] == [
        (when, "stdout", "from the remote copy"),
        (when, "stderr", "a remote warning"),
    ]
    assert (exp.tasks[0].local_directory, 1, "stdout.log") in plugin.source.refs


def test_runyard_log_source_none_falls_back_to_the_task_directory() -> None:
    with registered_plugin(RemoteLogsPlugin(), name="remote-logs"):
        exp = run.Experiment("log-source-fallback")
        task_id = exp.add(run.Config(taskdefs.hello, name="local"))
        assert exp.run() == "SUCCEEDED"

        assert exp.get_logs(task_id).stdout == "hello local\n"
        assert [e.message for e in exp.stream_logs(task_id, follow=False)] == ["hello local"]


# ------------------------------------------------------------------------------ artifact stores
class CopyingStore(ArtifactStore):
    """Copies each artifact into its own folder, so it survives the original."""

    name = "test-copy"

    def __init__(self, root: str) -> None:
        self.root = root

    def put(self, experiment: ExperimentInfo, name: str, path: str) -> StoredFile:
        dest = os.path.join(self.root, experiment.id, name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.isdir(path):
            shutil.copytree(path, dest)
        else:
            shutil.copy2(path, dest)
        size, sha256 = digest(dest)
        return StoredFile(dest, size, sha256)

    def get(self, artifact: Artifact, dest: str | None = None) -> str:
        if dest is None:
            return artifact.path
        if os.path.isdir(artifact.path):
            shutil.copytree(artifact.path, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(artifact.path, dest)
        return dest

    def list(self, artifact: Artifact) -> list[str]:
        if os.path.isdir(artifact.path):
            return sorted(os.listdir(artifact.path))
        return [""]


class CopyingStorePlugin:
    def __init__(self, root: str) -> None:
        self.store = CopyingStore(root)

    @hookimpl
    def runyard_register_artifact_stores(self, registry: ArtifactStoreRegistry) -> None:
        registry.add(self.store)


def test_runyard_register_artifact_stores_store_keeps_and_returns_artifacts(tmp_path: Path) -> None:
    original = tmp_path / "model.bin"
    original.write_bytes(b"weights")
    kept = tmp_path / "kept"
    with registered_plugin(CopyingStorePlugin(str(kept)), name="copying-store"):
        exp = run.Experiment("artifact-store")
        added = exp.add_artifact("model", str(original), description="final weights", store="test-copy")
        original.unlink()  # the store has its own copy

        artifact = exp.get_artifacts()["model"]
        fetched = exp.fetch_artifact("model")
        copied = exp.fetch_artifact("model", dest=str(tmp_path / "out.bin"))

    assert artifact == added
    assert artifact.store == "test-copy"
    assert artifact.path.startswith(str(kept))
    assert (artifact.description, artifact.size) == ("final weights", 7)
    assert artifact.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert Path(fetched).read_bytes() == b"weights"
    assert copied == str(tmp_path / "out.bin")
    assert Path(copied).read_bytes() == b"weights"


def test_runyard_register_artifact_stores_unknown_store_name_lists_the_installed_ones(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("a")
    exp = run.Experiment("no-such-store")
    with pytest.raises(ConfigError, match=r"'test-copy'.*installed: local"):
        exp.add_artifact("a", str(path), store="test-copy")


# ------------------------------------------------------------------------------ meta-tests
HOOKS = sorted(
    name for name, obj in vars(hookspecs).items() if name.startswith("runyard_") and inspect.isfunction(obj)
)


def test_hookspecs_are_found() -> None:
    assert "runyard_register_executors" in HOOKS  # the collection above is not vacuous


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_here(hook: str) -> None:
    tests = [name for name in globals() if name.startswith(f"test_{hook}")]
    assert tests, f"tests/core/test_hooks.py has no test_{hook}_... function"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_in_the_plugin_guide(hook: str) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    headings = [line for line in guide.splitlines() if line.startswith("#")]
    assert any(f"`{hook}(" in line for line in headings), f"docs/plugins.md has no heading for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_states_its_contract(hook: str) -> None:
    assert inspect.getdoc(getattr(hookspecs, hook)), f"{hook} has no docstring"


def test_the_plugin_guide_documents_no_hook_that_does_not_exist() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    headings = [line for line in guide.splitlines() if line.startswith("#")]
    documented = {name for line in headings for name in re.findall(r"`(runyard_\w+)\(", line)}
    assert documented - set(HOOKS) == set()
