"""Bad input: each is refused with a runyard error that names the bad value, and nothing is
half-written (the store and the experiment folders are exactly as before the call)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import runyard as run
import taskdefs
from _core_helpers import task, wait_until
from runyard.errors import ArtifactError, ExecutorFieldError, SerializationError
from runyard.store import open_store


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


def _local_function_config() -> run.Config:
    def local_train() -> None:
        pass

    return run.Config(local_train)


@dataclass
class Scene:
    """What a case acts on. ``exp`` is "first" (fresh: pending; finished: SUCCEEDED), or
    "sleeper" (RUNNING) with "waiting" (PENDING, depends on sleeper)."""

    tmp: Any
    exp: run.Experiment | None = None


@dataclass
class Case:
    id: str
    scene: str  # "none", "fresh", "finished" or "running"
    call: Callable[[Scene], object]
    raises: tuple[type[BaseException], ...]
    names: tuple[str, ...]  # what the message must contain (the bad value)


def _existing_file(s: Scene) -> str:
    path = s.tmp / "model.pt"
    path.write_bytes(b"weights")
    return str(path)


def _fifo(path: Any, folder: bool = False) -> str:
    """A named pipe at ``path``; its folder when ``folder``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return str(path.parent if folder else path)


def _snapshot_file(s: Scene, text: str) -> str:
    path = s.tmp / "snapshot.json"
    path.write_text(text)
    return str(path)


CONFIG = (run.ConfigError, ValueError)
STATE = (run.TaskStateError,)

CASES = [
    # --- the constructor: no experiment is created ------------------------------------------
    Case("title-slash", "none", lambda s: run.Experiment("team/run"), CONFIG, ("'team/run'",)),
    Case("title-dotdot", "none", lambda s: run.Experiment(".."), CONFIG, ("'..'",)),
    Case("title-dotdot-inside", "none", lambda s: run.Experiment("a..b"), CONFIG, ("'a..b'",)),
    Case("title-nul", "none", lambda s: run.Experiment("bad\0title"), CONFIG, ("'bad\\x00title'",)),
    Case("title-empty", "none", lambda s: run.Experiment(""), CONFIG, ("empty",)),
    Case("title-spaces", "none", lambda s: run.Experiment("my run"), CONFIG, ("'my run'",)),
    Case("timeout-negative", "none", lambda s: run.Experiment("t", timeout=-5), CONFIG, ("timeout", "-5")),
    Case(
        "max-retries-negative",
        "none",
        lambda s: run.Experiment("t", max_retries=-1),
        CONFIG,
        ("max_retries", "-1"),
    ),
    Case(
        "max-retries-fraction",
        "none",
        lambda s: run.Experiment("t", max_retries=1.5),
        CONFIG,
        ("max_retries", "1.5"),
    ),
    Case("log-level-unknown", "none", lambda s: run.Experiment("t", log_level="LOUD"), CONFIG, ("'LOUD'",)),
    Case("timeout-nan", "none", lambda s: run.Experiment("t", timeout=math.nan), CONFIG, ("timeout", "nan")),
    Case(
        "timeout-infinite",
        "none",
        lambda s: run.Experiment("t", timeout=math.inf),
        CONFIG,
        ("timeout", "inf"),
    ),
    Case(
        "checkpoint-interval-nan",
        "none",
        lambda s: run.Experiment("t", checkpoint_interval=math.nan),
        CONFIG,
        ("checkpoint_interval", "nan"),
    ),
    Case(
        "checkpoint-interval-next-to-zero",  # the driver would write its heartbeat in a busy loop
        "none",
        lambda s: run.Experiment("t", checkpoint_interval=1e-9),
        CONFIG,
        ("checkpoint_interval", "at least 0.1", "1e-09"),
    ),
    Case("tags-none", "none", lambda s: run.Experiment("t", tags=None), CONFIG, ("tags", "None")),
    Case(
        "tags-generator",  # checking it would use it up: the experiment would get no tags
        "none",
        lambda s: run.Experiment("t", tags=(t for t in ["a"])),
        CONFIG,
        ("tags", "generator"),
    ),
    Case(
        "creation-metadata-set",
        "none",
        lambda s: run.Experiment("t", metadata={"seeds": {1, 2}}),
        CONFIG,
        ("seeds", "{1, 2}"),
    ),
    # --- add(): the task list is unchanged ----------------------------------------------------
    Case(
        "unknown-dependency",
        "fresh",
        lambda s: s.exp.add(run.Config(taskdefs.hello), dependencies=["first", "nope-0"]),
        CONFIG,
        ("'nope-0'",),
    ),
    Case("lambda-target", "fresh", lambda s: s.exp.add(run.Config(lambda: None)), CONFIG, ("lambda",)),
    Case(
        "local-function-target",
        "fresh",
        lambda s: s.exp.add(_local_function_config()),
        CONFIG,
        ("local_train",),
    ),
    Case(
        "lambda-second-in-a-list",
        "fresh",
        lambda s: s.exp.add([run.Config(taskdefs.hello), run.Config(lambda: None)], name="group"),
        CONFIG,
        ("lambda",),
    ),
    Case(
        "argument-not-json",
        "fresh",
        lambda s: s.exp.add(run.Config(taskdefs.hello, name=Opaque())),
        (SerializationError, ValueError),
        ("<Opaque thing>", "name"),
    ),
    Case("not-a-task", "fresh", lambda s: s.exp.add("train.py"), CONFIG, ("'train.py'",)),
    Case("empty-list", "fresh", lambda s: s.exp.add([]), CONFIG, ("empty list",)),
    Case(
        "task-name-slash",
        "fresh",
        lambda s: s.exp.add(run.Config(taskdefs.hello), name="a/b"),
        CONFIG,
        ("'a/b'",),
    ),
    Case(
        "add-after-run",
        "finished",
        lambda s: s.exp.add(run.Config(taskdefs.hello)),
        (run.ExperimentStateError,),
        (),
    ),
    # --- executors and scripts ------------------------------------------------------------------
    Case(
        "executor-unknown-field",
        "fresh",
        lambda s: run.LocalExecutor(foo=1),
        (ExecutorFieldError, TypeError),
        ("'foo'",),
    ),
    Case(
        "env-var-not-a-string",
        "fresh",
        lambda s: run.LocalExecutor(env_vars={"BATCH_SIZE": 32}),
        CONFIG,
        ("'BATCH_SIZE'", "32"),
    ),
    Case(
        "script-path-and-inline",
        "none",
        lambda s: run.Script(path="train.sh", inline="echo hi"),
        CONFIG,
        ("'train.sh'", "'echo hi'"),
    ),
    Case("script-neither", "none", lambda s: run.Script(), CONFIG, ("path=None", "inline=None")),
    # --- metadata: unchanged ---------------------------------------------------------------------
    Case(
        "metadata-set", "fresh", lambda s: s.exp.add_metadata({"seeds": {1, 2}}), CONFIG, ("seeds", "{1, 2}")
    ),
    Case(
        "metadata-object",
        "fresh",
        lambda s: s.exp.add_metadata({"model": Opaque()}),
        CONFIG,
        ("<Opaque thing>",),
    ),
    Case("metadata-nan", "fresh", lambda s: s.exp.add_metadata({"loss": math.nan}), CONFIG, ("loss", "nan")),
    Case(
        "metadata-key-not-str",
        "fresh",
        lambda s: s.exp.add_metadata({"ok": 1, ("tuple", "key"): 2}),
        CONFIG,
        ("('tuple', 'key')",),
    ),
    Case("metadata-not-a-dict", "fresh", lambda s: s.exp.add_metadata(["a"]), CONFIG, ("['a']",)),
    # --- artifacts: none recorded -------------------------------------------------------------------
    Case(
        "artifact-missing-path",
        "fresh",
        lambda s: s.exp.add_artifact("model", str(s.tmp / "missing" / "model.pt")),
        (ArtifactError,),
        ("missing/model.pt",),
    ),
    Case(
        "artifact-device",
        "fresh",
        lambda s: s.exp.add_artifact("zeros", "/dev/zero"),
        (ArtifactError,),
        ("'/dev/zero'", "a character device"),
    ),
    Case(
        "artifact-fifo",
        "fresh",
        lambda s: s.exp.add_artifact("pipe", _fifo(s.tmp / "pipe")),
        (ArtifactError,),
        ("pipe'", "a FIFO"),
    ),
    Case(
        "artifact-folder-with-a-fifo",  # reading it would block for ever
        "fresh",
        lambda s: s.exp.add_artifact("outputs", _fifo(s.tmp / "outputs" / "pipe", folder=True)),
        (ArtifactError,),
        ("outputs/pipe'", "a FIFO"),
    ),
    Case("artifact-empty-path", "fresh", lambda s: s.exp.add_artifact("cwd", ""), CONFIG, ("''",)),
    Case(
        "artifact-unknown-store",
        "fresh",
        lambda s: s.exp.add_artifact("model", _existing_file(s), store="s3-nope"),
        CONFIG,
        ("'s3-nope'",),
    ),
    # --- lookups ------------------------------------------------------------------------------------
    Case(
        "unknown-experiment-id",
        "fresh",
        lambda s: run.Experiment.from_id("20000101-000000-000000_ghost"),
        (run.UnknownExperimentError,),
        ("'20000101-000000-000000_ghost'",),
    ),
    Case(
        "unknown-experiment-title",
        "fresh",
        lambda s: run.Experiment.from_title("ghost-title"),
        (run.UnknownExperimentError,),
        ("'ghost-title'",),
    ),
    Case(
        "get-logs-unknown-task",
        "fresh",
        lambda s: s.exp.get_logs("ghost"),
        (run.UnknownTaskError,),
        ("'ghost'",),
    ),
    Case(
        "cancel-unknown-task", "fresh", lambda s: s.exp.cancel("ghost"), (run.UnknownTaskError,), ("'ghost'",)
    ),
    # --- calls that make no sense for the task's state: the state is unchanged ------------------
    Case("retry-running", "running", lambda s: s.exp.retry("sleeper"), STATE, ("'sleeper'", "RUNNING")),
    Case("retry-pending", "fresh", lambda s: s.exp.retry("first"), STATE, ("'first'", "PENDING")),
    Case(
        "retry-pending-in-a-run", "running", lambda s: s.exp.retry("waiting"), STATE, ("'waiting'", "PENDING")
    ),
    Case("pause-finished", "finished", lambda s: s.exp.pause("first"), STATE, ("'first'", "SUCCEEDED")),
    Case("resume-running", "running", lambda s: s.exp.resume("sleeper"), STATE, ("'sleeper'", "RUNNING")),
    Case("resume-pending", "fresh", lambda s: s.exp.resume("first"), STATE, ("'first'", "PENDING")),
    Case("cancel-finished", "finished", lambda s: s.exp.cancel("first"), STATE, ("'first'", "SUCCEEDED")),
    Case("run-twice", "finished", lambda s: s.exp.run(), (run.ExperimentStateError,), ()),
    Case(  # not "its supervisor died", ten seconds later
        "wait-never-launched",
        "fresh",
        lambda s: s.exp.wait(),
        (run.ExperimentStateError,),
        ("has not been launched", "run()"),
    ),
    Case(  # not launched by a supervisor behind the user's back
        "takeover-never-launched",
        "fresh",
        lambda s: s.exp.takeover(),
        (run.ExperimentStateError,),
        ("has not been launched", "run()"),
    ),
    # --- waiting and following: numbers that would never time out, or spin ---------------------
    Case("wait-timeout-nan", "running", lambda s: s.exp.wait(timeout=math.nan), CONFIG, ("timeout", "nan")),
    Case("wait-timeout-negative", "running", lambda s: s.exp.wait(timeout=-1), CONFIG, ("timeout", "-1")),
    Case("wait-interval-zero", "running", lambda s: s.exp.wait(interval=0), CONFIG, ("interval", "0")),
    Case(
        "stream-logs-interval-negative",
        "running",
        lambda s: next(s.exp.stream_logs("sleeper", interval=-1)),
        CONFIG,
        ("interval", "-1"),
    ),
    Case(
        "config-version-description-not-a-string",
        "fresh",
        lambda s: s.exp.track_config_version("model", {"layers": 2}, description=5),
        CONFIG,
        ("description", "5"),
    ),
    # --- snapshots ------------------------------------------------------------------------------------
    Case(
        "snapshot-missing-file",
        "none",
        lambda s: run.ExperimentSnapshot.load(str(s.tmp / "nowhere.json")),
        CONFIG,
        ("nowhere.json",),
    ),
    Case(
        "snapshot-invalid-json",
        "none",
        lambda s: run.ExperimentSnapshot.load(_snapshot_file(s, "{not json")),
        CONFIG,
        ("snapshot.json",),
    ),
    Case(
        "snapshot-not-a-snapshot",
        "none",
        lambda s: run.ExperimentSnapshot.load(_snapshot_file(s, '{"hello": 1}')),
        CONFIG,
        ("snapshot.json",),
    ),
]


def _scene(kind: str, tmp: Any) -> Scene:
    scene = Scene(tmp)
    if kind == "none":
        return scene
    exp = scene.exp = run.Experiment("bad-input", metadata={"kept": True})
    if kind == "running":
        exp.add(run.Config(taskdefs.sleep_then_print, seconds=60), name="sleeper")
        exp.add(run.Config(taskdefs.hello), name="waiting", dependencies=["sleeper"])
        exp.run(detach=True)
        wait_until(lambda: task(exp, "sleeper").status == "RUNNING" and task(exp, "sleeper").job_id)
        return scene
    exp.add(run.Config(taskdefs.hello), name="first")
    if kind == "finished":
        assert exp.run() == "SUCCEEDED"
    return scene


def _everything(home: str) -> Any:
    """What the store and the experiment folders hold (minus the driver's heartbeat)."""
    store = open_store(home)
    experiments = []
    for r in store.experiments():
        tasks = [
            (t.id, t.status, t.attempts, t.dependencies, t.task, t.executor, t.exit_code, t.reason, t.job_id)
            for t in store.tasks(r.id)
        ]
        experiments.append(
            (r.id, r.title, r.settings, r.launched_at, r.run_options, store.metadata(r.id),
             store.artifacts(r.id), tasks)
        )  # fmt: skip
    folders = sorted(root for root, _, _ in os.walk(os.path.join(home, "experiments")))
    return experiments, folders


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly_and_changes_nothing(case: Case, tmp_path, runyard_home: str) -> None:
    scene = _scene(case.scene, tmp_path)
    before = _everything(runyard_home)

    with pytest.raises(run.RunyardError) as info:
        case.call(scene)

    for cls in case.raises:
        assert isinstance(info.value, cls), f"{type(info.value).__name__} is not a {cls.__name__}"
    message = str(info.value)
    names = case.names or (scene.exp.experiment_id,)  # experiment-state errors name the experiment
    for name in names:
        assert name in message, f"{name!r} not in the message: {message}"
    assert _everything(runyard_home) == before, "the failed call changed the store or the folders"
    if scene.exp is not None and case.scene == "running":
        scene.exp.cancel_all()
        scene.exp.wait(timeout=30)


def test_there_are_at_least_25_bad_input_cases() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_nothing_changed_check_sees_a_change(tmp_path, runyard_home: str) -> None:
    """The harness above can fail: a call that does write is seen."""
    scene = _scene("fresh", tmp_path)
    before = _everything(runyard_home)
    scene.exp.add_metadata({"new": 1})
    assert _everything(runyard_home) != before
    before = _everything(runyard_home)
    run.Experiment("another")
    assert _everything(runyard_home) != before
