"""Every code block of the experiment guide runs, as written, against runyard.

The guide is vendored beside this file (experiment-guide.md) so the suite stands alone; a
test keeps it equal to the spec's copy when that is present. Each block runs in its own
namespace with ``import nemo_run as run`` read as ``import runyard as run``. Only two
other changes are made to what a block runs, both spelled out where they happen:

- ``run.SlurmExecutor`` is the real one, on the test bed's one-node Slurm cluster reached
  over SSH, with the guide's resources scaled to what that cluster has (:meth:`GuideRun.
  slurm_executor`): the guide asks for ``nodes=2``/``4`` and ``gpus_per_node=4``/``8``, the
  cluster has one node with 2 (fake) GPUs, so ``nodes`` becomes at most 1 and
  ``gpus_per_node`` at most 2; the guide's arguments are recorded as written and checked
  (``requested``). The cluster defaults (``RUNYARD_SLURM_*``) point at the test cluster, so
  the guide's calls need no tunnel argument, as the guide writes them; the executor ships
  tests/ as the task's code (``code=``), where the guide's task classes live;
- ``run.DockerExecutor`` is the real one, on the test bed's Docker engine: the image of a
  ``run.DockerExecutor()`` (``$RUNYARD_DOCKER_IMAGE``) is the test bed's Python image, as
  there is no registry to pull the default from (the scenarios that use it set it);
- absolute paths the guide writes to or reads from (``/checkpoints/best_model.pt``,
  ``/logs/training.log``, ``/path/to/snapshot.json``) are rewritten under the test's
  temporary folder (:meth:`GuideRun.run`'s ``paths``).

The names the guide leaves undefined come from tests/guide_tasks.py; a block that uses an
``experiment`` from earlier blocks gets a real one, prepared so the block is meaningful.
After each block the test checks what the block did. Blocks that only define functions
have those functions called here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import guide_tasks
import pytest
import runyard
from guide_tasks import BrokenTask, EvaluateModel, FlakyTraining, LongTraining, TrainModel, fit_line
from runyard.store import open_store, pid_alive

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GUIDE = HERE / "experiment-guide.md"
SPEC_GUIDE = REPO.parent / "shared" / "spec" / "experiment-guide.md"
EXPECTED_BLOCKS = 23
NEMO_IMPORT = "import nemo_run as run"
RUNYARD_IMPORT = "import runyard as run"


# ----------------------------------------------------------------------------- the guide
@dataclass(frozen=True)
class GuideBlock:
    heading: str  # the nearest heading above the block, without its #'s
    line: int  # line number (1-based) of the block's first code line in the guide
    code: str


def read_blocks(path: Path) -> list[GuideBlock]:
    """Every ```python block of a Markdown file, in order, with its section heading."""
    blocks: list[GuideBlock] = []
    heading = ""
    fence: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if fence is None:
            if line.startswith("```"):
                fence, start, body = line[3:].strip(), number + 1, []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.strip() == "```":
            if fence == "python":
                blocks.append(GuideBlock(heading, start, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    if fence is not None:
        raise ValueError(f"{path}: the code block opened at line {start - 1} is never closed")
    return blocks


BLOCKS = read_blocks(GUIDE)


def test_the_guide_has_every_python_block():
    assert len(BLOCKS) == EXPECTED_BLOCKS
    assert BLOCKS[0].heading == "Basic Experiment Creation"
    assert BLOCKS[0].code.startswith(NEMO_IMPORT)
    assert BLOCKS[-1].heading == "Resource Management"


def test_block_headings_are_unique():
    headings = [b.heading for b in BLOCKS]
    assert len(set(headings)) == len(headings)


def test_vendored_guide_equals_the_spec():
    if not SPEC_GUIDE.exists():
        pytest.skip(f"no spec beside the repository ({SPEC_GUIDE})")
    assert GUIDE.read_text() == SPEC_GUIDE.read_text()


def test_every_block_has_a_scenario():
    assert sorted(SCENARIOS) == sorted(b.heading for b in BLOCKS)


# ----------------------------------------------------------------------------- running a block
class LocalStandIns:
    """``run`` for a guide block: the real ``runyard`` module, with the executors' arguments
    recorded in ``requested``.

    ``DockerExecutor(...)`` is the real one. ``SlurmExecutor(...)`` is the real one with its
    resources scaled to the test cluster by ``scale`` (:meth:`GuideRun.scaled_executor`).
    Names in ``STOOD_IN`` (none now) would return ``run.LocalExecutor()`` instead.
    """

    STOOD_IN: tuple[str, ...] = ()
    RECORDED = ("DockerExecutor",)  # real, and its arguments recorded too
    SCALED = ("SlurmExecutor",)  # real, arguments recorded, resources scaled by ``scale``

    def __init__(self, module: Any) -> None:
        self._module = module
        self.requested: list[tuple[str, dict[str, Any]]] = []
        self.scale: Callable[[str, dict[str, Any]], Any] | None = None  # set by GuideRun

    def __getattr__(self, name: str) -> Any:
        if name in self.SCALED:

            def scaled(**kwargs: Any) -> Any:
                self.requested.append((name, dict(kwargs)))
                assert self.scale is not None
                return self.scale(name, kwargs)

            return scaled
        if name in self.RECORDED:

            def recorded(**kwargs: Any) -> Any:
                self.requested.append((name, kwargs))
                return getattr(self._module, name)(**kwargs)

            return recorded
        if name in self.STOOD_IN:

            def stand_in(**kwargs: Any) -> Any:
                self.requested.append((name, kwargs))
                return self._module.LocalExecutor()

            return stand_in
        return getattr(self._module, name)


@dataclass
class GuideRun:
    """Runs one guide block and keeps what it printed."""

    block: GuideBlock
    tmp_path: Path
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch
    run: LocalStandIns = field(default_factory=lambda: LocalStandIns(runyard))
    output: str = ""
    request: pytest.FixtureRequest | None = None  # for fixtures only some scenarios need

    def __post_init__(self) -> None:
        self.run.scale = self.scaled_executor

    def scaled_executor(self, name: str, kwargs: dict[str, Any]) -> Any:
        """A real ``run.SlurmExecutor`` for the guide's arguments, on the test cluster.

        The test cluster has one node with 2 GPUs: ``nodes`` is clamped to 1 and
        ``gpus_per_node`` to 2 (the guide's values are recorded in ``requested`` first).
        Every other argument is the guide's. The cluster comes from the defaults
        (``RUNYARD_SLURM_*``), as for any user: no tunnel argument is added.
        """
        assert name == "SlurmExecutor" and self.request is not None
        cluster = self.request.getfixturevalue("slurm_cluster")
        job_dir = f"{cluster.job_dir}/guide-{os.getpid()}-{id(self)}"
        for var, value in {"HOST": cluster.host, "PORT": str(cluster.port), "USER": cluster.user,
                           "KEY": cluster.key, "KNOWN_HOSTS": cluster.known_hosts, "JOB_DIR": job_dir,
                           "CONFIG": str(self.tmp_path / "no-slurm.toml"),
                           "POLL_MAX": str(cluster.poll_max)}.items():  # fmt: skip
            self.monkeypatch.setenv(f"RUNYARD_SLURM_{var}", value)
        if not getattr(self, "_cleanup", False):
            self._cleanup = True
            self.request.addfinalizer(lambda: _remove_remote(cluster, job_dir))
        scaled = dict(kwargs)
        scaled["nodes"] = min(int(kwargs.get("nodes", 1)), 1)
        if kwargs.get("gpus_per_node") is not None:
            scaled["gpus_per_node"] = min(int(kwargs["gpus_per_node"]), cluster.gpus)
        return runyard.SlurmExecutor(**scaled, code=str(HERE.parent))

    def docker_engine(self) -> Any:
        """The test bed's Docker engine; ``run.DockerExecutor()`` then uses its image."""
        assert self.request is not None
        engine = self.request.getfixturevalue("docker_engine")
        self.monkeypatch.setenv("RUNYARD_DOCKER_IMAGE", engine.image)
        return engine

    def run_block(self, *, paths: dict[str, str] | None = None, **names: Any) -> dict[str, Any]:
        """Execute the block in a fresh namespace: the guide's undefined names, ``run``
        (with the stand-ins), then ``names``. ``paths`` rewrites absolute paths of the
        block (each must occur in it). Returns the namespace; ``output`` gets the block's
        stdout."""
        code = self.block.code.replace(NEMO_IMPORT, RUNYARD_IMPORT)
        for old, new in (paths or {}).items():
            assert old in code, f"{old!r} is no longer in the block {self.block.heading!r}"
            code = code.replace(old, new)
        namespace = {"__name__": "__guide__", **guide_tasks.undefined_names(), "run": self.run, **names}
        self.capsys.readouterr()  # what the preparation printed is not the block's
        # padded so that a traceback points at the guide's own line numbers
        exec(compile("\n" * (self.block.line - 1) + code, str(GUIDE), "exec"), namespace)
        self.output = self.capsys.readouterr().out
        return namespace

    def tmp(self, *parts: str) -> str:
        path = self.tmp_path.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)


SCENARIOS: dict[str, Callable[[GuideRun], None]] = {}


def scenario(heading: str) -> Callable[[Callable[[GuideRun], None]], Callable[[GuideRun], None]]:
    def register(fn: Callable[[GuideRun], None]) -> Callable[[GuideRun], None]:
        SCENARIOS[heading] = fn
        return fn

    return register


@pytest.fixture
def no_process_left() -> Iterator[None]:
    """After the test: cancel what is still running in this test's home, wait for drivers."""
    yield
    store = open_store()
    for record in store.experiments():
        exp = runyard.Experiment.from_id(record.id)
        exp.cancel_all()
        pid = store.experiment(record.id).driver_pid
        if pid is not None and pid != os.getpid():
            wait_for(lambda pid=pid: not pid_alive(pid), f"the driver {pid} of {record.id} to exit")


def _param(block: GuideBlock) -> Any:
    """A block with the markers of the services its scenario asks for at run time."""
    services = {"SlurmExecutor": pytest.mark.slurm, "DockerExecutor": pytest.mark.docker}
    return pytest.param(block, id=block.heading, marks=[m for n, m in services.items() if n in block.code])


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_guide_block(
    block: GuideBlock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_process_left: None,
    request: pytest.FixtureRequest,
) -> None:
    SCENARIOS[block.heading](GuideRun(block, tmp_path, capsys, monkeypatch, request=request))


# ----------------------------------------------------------------------------- helpers
def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def docker_containers(engine: Any, experiment_id: str) -> list[Any]:
    """The containers of an experiment on the test bed's engine, found by their label."""
    import docker

    client = docker.DockerClient(base_url=engine.docker_host)
    try:
        label = f"runyard.experiment={experiment_id}"
        return client.containers.list(all=True, sparse=True, filters={"label": label})
    finally:
        client.close()


def _remove_remote(cluster: Any, job_dir: str) -> None:
    """Remove a guide scenario's job folder from the test cluster (over SSH)."""
    import shlex

    from runyard_slurm.tunnel import session_for

    tunnel = runyard.SSHTunnel(cluster.host, cluster.user, port=cluster.port, identity=cluster.key,
                               known_hosts=cluster.known_hosts, job_dir=job_dir)  # fmt: skip
    session_for(tunnel).run(f"rm -rf {shlex.quote(job_dir)}")


def on_slurm(exp: Any, task_id: str) -> Any:
    """The executor of a task that ran as a Slurm job (checked against the cluster's answer)."""
    task = {t.id: t for t in exp.tasks}[task_id]
    assert task.executor.kind == "slurm" and task.job_id.replace("_", "").isdigit()
    return task.executor


def states(exp: Any) -> dict[str, str]:
    return {t.id: t.status for t in exp.tasks}


def finished_experiment(title: str, tasks: dict[str, Any], deps: dict[str, list[str]] | None = None) -> Any:
    """An experiment with ``tasks`` (name -> config; ``deps``: name -> its dependencies),
    run attached to its end."""
    exp = runyard.Experiment(title)
    for name, config in tasks.items():
        exp.add(config, name=name, dependencies=(deps or {}).get(name))
    exp.run()
    assert all(t.status in ("SUCCEEDED", "FAILED", "CANCELLED") for t in exp.tasks)
    return exp


def wait_until_driver_exits(exp: Any) -> None:
    pid = exp.store.experiment(exp.experiment_id).driver_pid
    wait_for(lambda: exp.store.experiment(exp.experiment_id).driver_pid is None, "the driver to let go")
    if pid is not None:
        wait_for(lambda: not pid_alive(pid), f"the driver {pid} to exit")


def ran_in_order(exp: Any, ids: list[str]) -> bool:
    """Each task started after the one before it ended."""
    tasks = {t.id: t for t in exp.tasks}
    return all(tasks[a].end_time <= tasks[b].start_time for a, b in itertools.pairwise(ids))


def expected_losses(learning_rate: float, steps: int = 5) -> list[float]:
    return [float(f"{loss:.4f}") for _, _, loss in fit_line(learning_rate, steps)]


# ----------------------------------------------------------------------------- scenarios
@scenario("Basic Experiment Creation")
def _basic_creation(guide: GuideRun) -> None:
    ns = guide.run_block()
    exp = ns["experiment"]
    assert isinstance(exp, runyard.Experiment)
    assert exp.title == "llama3-pretraining"
    assert "llama3-pretraining" in exp.experiment_id
    assert exp.description == "Pre-training Llama3 8B model on custom dataset"
    assert exp.tags == ["llama3", "pretraining", "8b"]
    assert exp.get_metadata() == {"dataset": "wikitext-103", "model_size": "8B", "framework": "NeMo"}
    assert [r.title for r in open_store().experiments()].count("transformer-finetuning") == 1


@scenario("Experiment Configuration")
def _configuration(guide: GuideRun) -> None:
    exp = guide.run_block()["experiment"]
    settings = exp.settings
    assert (settings["log_level"], settings["max_retries"], settings["timeout"]) == ("INFO", 3, 3600)
    assert settings["checkpoint_interval"] == 300
    assert exp.get_metadata() == {"project": "ml-research", "team": "ai-team", "priority": "high"}


@scenario("Adding Individual Tasks")
def _individual_tasks(guide: GuideRun) -> None:
    ns = guide.run_block()
    exp = ns["exp"]
    assert (ns["training_id"], ns["data_id"]) == ("model-training", "data-preprocessing")
    assert states(exp) == {"model-training": "PENDING", "data-preprocessing": "PENDING"}
    assert guide.run.requested == [("SlurmExecutor", {"partition": "gpu", "nodes": 2, "gpus_per_node": 4})]
    # leaving the `with` block launched nothing; the tasks run when asked
    assert exp.run() == "SUCCEEDED"
    assert "batch_size=32" in exp.get_logs("model-training").stdout
    assert "/data/raw -> /data/processed" in exp.get_logs("data-preprocessing").stdout
    training = on_slurm(exp, "model-training")  # scaled to the test cluster: 1 node, 2 GPUs
    assert (training.partition, training.nodes, training.gpus_per_node) == ("gpu", 1, 2)


@scenario("Adding Task Groups")
def _task_groups(guide: GuideRun) -> None:
    ns = guide.run_block()
    exp, task_ids = ns["exp"], ns["task_ids"]
    assert task_ids == ["model-variants-0", "model-variants-1", "model-variants-2"]
    evaluation = {t.id: t for t in exp.tasks}["model-evaluation"]
    assert evaluation.dependencies == task_ids
    assert exp.run() == "SUCCEEDED"
    tasks = {t.id: t for t in exp.tasks}
    assert tasks["model-evaluation"].start_time >= max(tasks[i].end_time for i in task_ids)
    assert "lr=0.0001" in exp.get_logs("model-variants-1").stdout
    assert "model_size=70b" in exp.get_logs("model-variants-2").stdout
    assert guide.run.requested == [("SlurmExecutor", {"partition": "gpu", "nodes": 1, "gpus_per_node": 8})]
    assert [on_slurm(exp, i).gpus_per_node for i in task_ids] == [2, 2, 2]
    array = {tasks[i].job_id.split("_")[0] for i in task_ids}
    assert len(array) == 1  # the group went to Slurm as one job array


@scenario("Task Dependencies and Workflows")
def _dependencies(guide: GuideRun) -> None:
    engine = guide.docker_engine()
    ns = guide.run_block()
    pipeline = ns["pipeline"]
    chain = ["data-preparation", "model-training", "model-evaluation", "model-deployment"]
    assert [t.id for t in pipeline.tasks] == chain
    assert [t.dependencies for t in pipeline.tasks] == [[], *[[c] for c in chain[:-1]]]
    assert guide.run.requested == [
        ("SlurmExecutor", {"partition": "gpu", "nodes": 4}),
        ("DockerExecutor", {}),
    ]
    assert pipeline.run() == "SUCCEEDED"
    assert ran_in_order(pipeline, chain)
    assert "accuracy: 0.9100" in pipeline.get_logs("model-evaluation").stdout
    assert on_slurm(pipeline, "model-training").nodes == 1
    deployment = {t.id: t for t in pipeline.tasks}["model-deployment"]
    assert deployment.executor.image == engine.image
    assert pipeline.get_logs("model-deployment").stdout == "deployed /checkpoints/best\n"
    wait_for(lambda: not docker_containers(engine, pipeline.experiment_id), "its container to be removed")


@scenario("Using Plugins")
def _plugins(guide: GuideRun) -> None:
    exp = guide.run_block()["exp"]
    [task] = exp.tasks
    assert task.id == "training-with-mixed-precision"
    assert task.executor.env_vars == {
        "NCCL_P2P_DISABLE": "1",
        "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128",
    }
    assert exp.run() == "SUCCEEDED"
    assert "precision=bf16-mixed" in exp.get_logs(task.id).stdout
    assert on_slurm(exp, task.id).partition == "gpu"


@scenario("Launching Experiments")
def _launching(guide: GuideRun) -> None:
    # the block adds no task ("# Add tasks..."): runyard says so and ends the experiment
    with pytest.warns(UserWarning, match="has no tasks"):
        exp = guide.run_block()["exp"]
    record = exp.store.experiment(exp.experiment_id)
    assert record.run_options == {"detach": False, "sequential": False, "tail_logs": True, "direct": False}
    assert record.launched_at is not None and record.ended_at is not None


@scenario("Attached Execution (Default)")
def _attached(guide: GuideRun) -> None:
    exp = guide.run_block()["exp"]
    [task] = exp.tasks
    assert task.status == "SUCCEEDED"
    # tail_logs: task output live, each line prefixed by the task's name
    assert f"{task.id}: step 5 loss: {expected_losses(0.001)[-1]:.4f}" in guide.output
    assert guide.output.rstrip().endswith("Experiment completed with status: SUCCEEDED")


@scenario("Detached Execution")
def _detached(guide: GuideRun) -> None:
    ns = guide.run_block()
    experiment_id, retrieved = ns["experiment_id"], ns["retrieved_exp"]
    assert "long-running-experiment" in experiment_id
    assert retrieved.experiment_id == experiment_id
    assert f"Experiment launched with ID: {experiment_id}" in guide.output
    assert retrieved.wait(timeout=60) == "SUCCEEDED"
    assert "step 5 loss:" in retrieved.get_logs(retrieved.tasks[0].id).stdout
    wait_until_driver_exits(retrieved)


@scenario("Sequential Execution")
def _sequential(guide: GuideRun) -> None:
    exp = guide.run_block()["exp"]
    ids = [t.id for t in exp.tasks]
    assert len(ids) == 3 and set(states(exp).values()) == {"SUCCEEDED"}
    assert ran_in_order(exp, ids)


@scenario("Direct Execution")
def _direct(guide: GuideRun) -> None:
    exp = guide.run_block()["exp"]
    [task] = exp.tasks
    assert task.status == "SUCCEEDED"
    assert task.job_id == f"direct:{os.getpid()}"  # ran in this very process
    assert "step 5 loss:" in guide.output  # shown as it ran
    assert "step 5 loss:" in exp.get_logs(task.id).stdout  # and recorded


@scenario("Checking Experiment Status")
def _checking_status(guide: GuideRun) -> None:
    experiment = finished_experiment(
        "status-check", {"train": runyard.Config(TrainModel), "broken": runyard.Config(BrokenTask)}
    )
    guide.run_block(experiment=experiment)
    out = guide.output
    assert "Experiment status: FAILED" in out
    assert "Task train: SUCCEEDED" in out and "Task broken: FAILED" in out
    for task in experiment.tasks:
        assert f"  - Job ID: {task.job_id}" in out and task.job_id.isdigit()
        assert f"  - Directory: {task.local_directory}" in out and os.path.isdir(task.local_directory)
        assert f"  - Start time: {task.start_time}" in out and task.start_time is not None
        assert f"  - End time: {task.end_time}" in out and task.end_time >= task.start_time
    assert "  - Executor: LocalExecutor(" in out


@scenario("Real-Time Monitoring")
def _monitoring(guide: GuideRun) -> None:
    ns = guide.run_block()
    exp = ns["exp"]
    # the block's own usage: monitor a finished experiment, which returns at once
    assert states(exp) == {exp.tasks[0].id: "SUCCEEDED"}
    assert guide.output.count("Experiment completed!") == 1
    # and while one runs: snapshots every check_interval until every task has ended
    running = runyard.Experiment("monitored-while-running")
    running.add(runyard.Config(LongTraining, seconds=1.0), name="long-training")
    running.run(detach=True)
    guide.capsys.readouterr()
    ns["monitor_experiment"](running, check_interval=0.05)
    out = guide.capsys.readouterr().out
    assert out.startswith(f"Monitoring experiment: {running.experiment_id}")
    assert "  long-training: RUNNING" in out
    assert out.rstrip().endswith("long-training: SUCCEEDED\n\nExperiment completed!")
    wait_until_driver_exits(running)


@scenario("Task Control")
def _task_control(guide: GuideRun) -> None:
    # two long tasks running; the block cancels "task_id", then all the others, retries
    # "task_id" (an ended task), and pauses and resumes it as it starts again
    experiment = runyard.Experiment("task-control")
    experiment.add(runyard.Config(LongTraining, seconds=60), name="task_id")
    experiment.add(runyard.Config(LongTraining, seconds=60), name="other-task")
    experiment.run(detach=True)
    wait_for(lambda: set(states(experiment).values()) == {"RUNNING"}, "both tasks to run")

    guide.run_block(experiment=experiment)

    history = [
        data["to"]
        for _, task, _, kind, data in experiment.store.events(experiment.experiment_id)
        if kind == "state" and task == "task_id"
    ]
    cancelled = history.index("CANCELLED")
    assert history[cancelled + 1] == "PENDING"  # retry
    paused = history.index("PAUSED", cancelled)
    assert history[paused + 1] in ("PENDING", "RUNNING")  # resumed
    tasks = {t.id: t for t in experiment.tasks}
    assert (tasks["other-task"].status, tasks["other-task"].reason) == ("CANCELLED", "cancelled by user")
    assert tasks["task_id"].status in ("PENDING", "SUBMITTED", "RUNNING")
    wait_for(lambda: states(experiment)["task_id"] == "RUNNING", "task_id to run again")
    assert {t.id: t for t in experiment.tasks}["task_id"].attempts == 2


@scenario("Accessing Task Logs")
def _accessing_logs(guide: GuideRun) -> None:
    experiment = finished_experiment(
        "logs",
        {"task_id": runyard.Config(TrainModel, learning_rate=0.05), "broken": runyard.Config(BrokenTask)},
    )
    guide.run_block(experiment=experiment)
    out = guide.output
    logs = experiment.get_logs("task_id")
    assert "Exit code: 0" in out
    assert f"Stdout: {logs.stdout}" in out and "step 5 loss: " in logs.stdout
    assert "Stderr: warning: learning rate 0.05 is high" in out
    # stream_logs: every line of stdout and stderr, each with its timestamp
    streamed = re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+00:00: (.*)$", out, re.MULTILINE)
    assert sorted(streamed) == sorted(logs.stdout.splitlines() + logs.stderr.splitlines())
    assert "\n=== task_id ===\nExit code: 0\nErrors: warning: learning rate 0.05 is high" in out
    assert "\n=== broken ===\nExit code: 1\nErrors: Traceback" in out
    assert "RuntimeError: out of memory" in out


@scenario("Log Analysis")
def _log_analysis(guide: GuideRun) -> None:
    experiment = finished_experiment(
        "log-analysis",
        {
            "training": runyard.Config(TrainModel, learning_rate=0.001),
            "evaluation": runyard.Config(EvaluateModel),
            "broken": runyard.Config(BrokenTask),
        },
    )
    analysis = guide.run_block(experiment=experiment)["analysis"]
    assert set(analysis) == {"training", "evaluation", "broken"}
    training = analysis["training"]
    assert training["metrics"]["losses"] == expected_losses(0.001)
    assert training["metrics"]["final_loss"] == expected_losses(0.001)[-1]
    assert (training["status"], training["exit_code"], training["errors"]) == ("SUCCEEDED", 0, [])
    assert isinstance(training["duration"], dt.timedelta) and training["duration"] >= dt.timedelta(0)
    assert analysis["evaluation"]["metrics"]["accuracies"] == list(EvaluateModel.ACCURACIES)
    assert analysis["evaluation"]["metrics"]["final_accuracy"] == 0.91
    broken = analysis["broken"]
    assert (broken["status"], broken["exit_code"], broken["metrics"]) == ("FAILED", 1, {})
    assert "RuntimeError: out of memory" in broken["errors"]
    assert f"Final loss: {expected_losses(0.001)[-1]}" in guide.output
    assert "Final accuracy: 0.91" in guide.output
    assert "=== broken Analysis ===\nStatus: FAILED\nExit code: 1\nErrors:" in guide.output


@scenario("Metadata Management")
def _metadata(guide: GuideRun) -> None:
    before = time.time()
    ns = guide.run_block()
    metadata = ns["experiment"].get_metadata()
    completed_at = metadata.pop("completed_at")
    assert before <= completed_at <= time.time()
    assert metadata == {
        "dataset": "wikitext-103", "model_family": "llama", "sweep_type": "learning_rate",
        "num_trials": 10, "best_accuracy": 0.95, "best_model_path": "/checkpoints/best",
    }  # fmt: skip
    assert "Dataset: wikitext-103\nBest accuracy: 0.95\n" in guide.output


@scenario("Artifact Management")
def _artifacts(guide: GuideRun) -> None:
    checkpoint, training_log = guide.tmp("checkpoints", "best_model.pt"), guide.tmp("logs", "training.log")
    experiment = finished_experiment(
        "artifacts", {"training": runyard.Config(TrainModel, checkpoint_path=checkpoint)}
    )
    Path(training_log).write_text(experiment.get_logs("training").stdout)

    guide.run_block(
        experiment=experiment,
        paths={"/checkpoints/best_model.pt": checkpoint, "/logs/training.log": training_log},
    )

    artifacts = experiment.get_artifacts()
    assert list(artifacts) == ["best_model", "training_logs"]
    for name, path, description in [
        ("best_model", checkpoint, "Best performing model checkpoint"),
        ("training_logs", training_log, "Complete training logs"),
    ]:
        data = Path(path).read_bytes()
        artifact = artifacts[name]
        assert (artifact.path, artifact.description) == (path, description)
        assert (artifact.size, artifact.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert f"{name}: {path}\n  Description: {description}\n  Size: {len(data)} bytes" in guide.output
    assert json.loads(Path(checkpoint).read_text())["model_size"] == "8b"


@scenario("Experiment Snapshots")
def _snapshots(guide: GuideRun) -> None:
    experiment = finished_experiment(
        "snapshot-source",
        {
            "prepare": runyard.Config(guide_tasks.PrepareData, dataset="tiny"),
            "train": runyard.Config(TrainModel, learning_rate=0.01),
            "evaluate": runyard.Config(EvaluateModel),
        },
        deps={"train": ["prepare"], "evaluate": ["train"]},
    )
    experiment.add_metadata({"purpose": "snapshot"})
    snapshot_path = guide.tmp("path", "to", "snapshot.json")

    ns = guide.run_block(experiment=experiment, paths={"/path/to/snapshot.json": snapshot_path})

    saved = json.loads(Path(snapshot_path).read_text())
    assert saved["source_experiment_id"] == experiment.experiment_id
    assert [t["id"] for t in saved["tasks"]] == ["prepare", "train", "evaluate"]
    reproduced = ns["reproduced_experiment"]
    assert reproduced.experiment_id != experiment.experiment_id
    assert reproduced.title == "snapshot-source"
    assert reproduced.get_metadata() == {"purpose": "snapshot"}
    assert states(reproduced) == dict.fromkeys(["prepare", "train", "evaluate"], "PENDING")
    assert [t.dependencies for t in reproduced.tasks] == [t.dependencies for t in experiment.tasks]
    assert reproduced.run() == "SUCCEEDED"
    assert ran_in_order(reproduced, ["prepare", "train", "evaluate"])
    assert reproduced.get_logs("train").stdout == experiment.get_logs("train").stdout


@scenario("Configuration Tracking")
def _config_tracking(guide: GuideRun) -> None:
    experiment = runyard.Experiment("config-tracking")
    ns = guide.run_block(experiment=experiment)
    history = experiment.get_config_history("model_config")
    assert sorted(history) == [1, 2]
    assert history[1].description == "Initial model configuration"
    assert history[2].description == "Updated learning rate"
    assert history[1].config.learning_rate == 0.001  # stored before the change, kept as it was
    assert history[2].config.learning_rate == 0.0005
    assert history[2].config == ns["model_config"]
    assert history[1].created_at <= history[2].created_at
    assert "Version 1: Initial model configuration\nVersion 2: Updated learning rate\n" in guide.output


@scenario("Experiment Organization")
def _organization(guide: GuideRun) -> None:
    guide.monkeypatch.delenv("NEMO_ENV", raising=False)
    before = time.time()
    exp = guide.run_block()["exp"]
    assert exp.title == "llama-finetuning-supervised-8b"
    metadata = exp.get_metadata()
    assert before <= metadata.pop("created_at") <= time.time()
    assert metadata == {
        "project": "llama-finetuning", "experiment_type": "supervised", "model_size": "8b",
        "created_by": os.getenv("USER", "unknown"), "git_commit": guide_tasks.get_git_commit_hash(),
        "environment": "development",
    }  # fmt: skip


@scenario("Error Handling and Recovery")
def _recovery(guide: GuideRun) -> None:
    ns = guide.run_block()
    run_experiment_with_recovery = ns["run_experiment_with_recovery"]

    # a task that always fails: three experiments, then the error
    with pytest.raises(Exception, match="Max retries exceeded"):
        run_experiment_with_recovery(runyard.Config(BrokenTask), max_retries=3)
    out = guide.capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("Attempt")] == [
        "Attempt 1 failed with 1 failed tasks",
        "Attempt 2 failed with 1 failed tasks",
        "Attempt 3 failed with 1 failed tasks",
        "Attempt 3 failed: Max retries exceeded",
    ]
    assert out.count("Retrying...") == 2
    tried = [r for r in open_store().experiments() if r.title == "recovery-experiment"]
    assert len(tried) == 3
    assert all(runyard.Experiment.from_id(r.id).status() == "FAILED" for r in tried)

    # a task that fails once (a flaky node) and then succeeds: the second attempt returns
    marker = guide.tmp("flaky-runs.txt")
    exp = run_experiment_with_recovery(runyard.Config(FlakyTraining, marker_path=marker, failures=1))
    out = guide.capsys.readouterr().out
    assert exp.status() == "SUCCEEDED"
    assert "Attempt 1 failed with 1 failed tasks\nRetrying...\n" in out
    assert out.rstrip().endswith("Experiment completed successfully!")
    assert Path(marker).read_text() == "run\nrun\n"


@scenario("Resource Management")
def _resources(guide: GuideRun) -> None:
    ns = guide.run_block()
    create_resource_aware_experiment = ns["create_resource_aware_experiment"]

    guide.monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible
    with pytest.raises(ValueError, match="Insufficient GPU resources"):
        create_resource_aware_experiment({"min_gpus": 1, "max_nodes": 2})
    assert guide.run.requested == []

    guide.monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(8))))
    exp = create_resource_aware_experiment({"min_gpus": 1, "max_nodes": 2})
    assert guide.run.requested == [("SlurmExecutor", {"partition": "gpu", "nodes": 1, "gpus_per_node": 8})]
    assert exp.run() == "SUCCEEDED"
    assert len(exp.tasks) == 1
    assert on_slurm(exp, exp.tasks[0].id).gpus_per_node == 2
