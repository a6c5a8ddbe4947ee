"""Running containers found by their labels and controlled from any process: cancel
(SIGTERM, then SIGKILL after the grace period), pause and resume, live logs; containers
that end behind runyard's back; and the clear errors of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from _docker_helpers import LABEL, containers_of, task, until
from runyard.plugins import Plugins

Executor = Callable[..., Any]
Start = Callable[..., tuple[run.Experiment, Any]]


@pytest.fixture
def start(docker_executor: Executor, client: Any) -> Iterator[Start]:
    """``start(task, **executor_fields)``: one task, detached, running; returns the experiment
    and its container (found by label). The docker_executor fixture cleans up after."""

    def _start(job: Any, **fields: Any) -> tuple[run.Experiment, Any]:
        exp = run.Experiment("docker-control")
        exp.add(job, executor=docker_executor(**fields), name="t")
        exp.run(detach=True)
        until(lambda: task(exp, "t").status == "RUNNING", "the task to run")
        [container] = until(lambda: containers_of(client, exp.experiment_id), "its container")
        return exp, client.containers.get(container.id)

    yield _start


def journal_lines(exp: run.Experiment) -> int:
    path = Path(task(exp, "t").local_directory, "attempt-1", "journal.log")
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def in_another_process(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ----------------------------------------------------------------------------- finding containers
def test_a_running_container_carries_the_experiment_task_and_attempt_labels(
    start: Start, client: Any
) -> None:
    exp, container = start(run.Config(taskdefs.sleep_then_print, 60))
    assert container.labels["runyard.experiment"] == exp.experiment_id
    assert (container.labels["runyard.task"], container.labels["runyard.attempt"]) == ("t", "1")
    assert container.id.startswith(task(exp, "t").job_id)
    found = client.containers.list(filters={"label": ["runyard.task=t", f"{LABEL}={exp.experiment_id}"]})
    assert [c.id for c in found] == [container.id]


# ----------------------------------------------------------------------------- cancel
def test_cancel_stops_the_container_gracefully_and_removes_it(start: Start, client: Any) -> None:
    exp, _ = start(run.Config(taskdefs.sleep_then_print, 60))
    attempt = Path(task(exp, "t").local_directory, "attempt-1")
    # the runner has started (its heartbeat beats): a SIGTERM now is the runner's to handle
    until(lambda: (attempt / "heartbeat").exists(), "the runner to start")
    exp.cancel("t")
    t = task(exp, "t")
    assert (t.status, t.reason) == ("CANCELLED", "cancelled by user")
    until(lambda: not containers_of(client, exp.experiment_id), "the container to be removed")
    # the runner got SIGTERM and wrote its result before the container ended
    result = json.loads(Path(t.local_directory, "attempt-1", "result.json").read_text())
    assert (result["exit_code"], result["error"]) == (143, "terminated (SIGTERM)")


def test_cancel_kills_a_task_that_ignores_sigterm_after_the_grace_period(start: Start, client: Any) -> None:
    exp, container = start(run.Config(taskdefs.ignore_sigterm_then_sleep, 60), cancel_grace=1)
    until(lambda: b"ready" in container.logs() or journal_lines(exp), "the task to ignore SIGTERM")
    exp.cancel("t")
    until(lambda: not containers_of(client, exp.experiment_id), "the container to be killed and removed")
    t = task(exp, "t")
    assert t.status == "CANCELLED"
    result = json.loads(Path(t.local_directory, "attempt-1", "result.json").read_text())
    assert (result["exit_code"], result["error"]) == (137, "killed by signal 9 (SIGKILL)")  # by the runner


def test_cancel_from_another_process_finds_the_container_by_its_handle(start: Start, client: Any) -> None:
    exp, _ = start(run.Config(taskdefs.sleep_then_print, 60))
    in_another_process(f"import runyard; runyard.Experiment.from_id({exp.experiment_id!r}).cancel('t')")
    assert task(exp, "t").status == "CANCELLED"
    until(lambda: not containers_of(client, exp.experiment_id), "the container to be removed")


# ----------------------------------------------------------------------------- pause and resume
def test_pause_freezes_the_container_and_resume_continues_it(start: Start) -> None:
    exp, container = start(run.Config(taskdefs.print_lines, 600, delay=0.05))
    until(lambda: journal_lines(exp) > 0, "the first lines")
    exp.pause("t")
    container.reload()
    assert (task(exp, "t").status, container.status) == ("PAUSED", "paused")
    frozen = journal_lines(exp)
    until(lambda: journal_lines(exp) == frozen, "the output to stay still", timeout=1)
    exp.resume("t")
    container.reload()
    assert (task(exp, "t").status, container.status) == ("RUNNING", "running")
    until(lambda: journal_lines(exp) > frozen, "the output to go on")


def test_pause_and_resume_work_from_another_process(start: Start) -> None:
    exp, container = start(run.Config(taskdefs.sleep_then_print, 60))
    in_another_process(f"import runyard; runyard.Experiment.from_id({exp.experiment_id!r}).pause('t')")
    container.reload()
    assert (task(exp, "t").status, container.status) == ("PAUSED", "paused")
    in_another_process(f"import runyard; runyard.Experiment.from_id({exp.experiment_id!r}).resume('t')")
    container.reload()
    assert (task(exp, "t").status, container.status) == ("RUNNING", "running")


def test_a_paused_task_can_be_cancelled(start: Start, client: Any) -> None:
    exp, _ = start(run.Config(taskdefs.sleep_then_print, 60))
    exp.pause("t")
    exp.cancel("t")
    assert task(exp, "t").status == "CANCELLED"
    until(lambda: not containers_of(client, exp.experiment_id), "the container to be removed")


def freeze_fails(monkeypatch: pytest.MonkeyPatch, times: int) -> list[str]:
    """Make the engine's pause fail ``times`` times as runc does when the kernel cannot
    finish freezing the container (a real engine cannot be made to do this on cue); returns
    the ids of every pause asked for."""
    import docker.api.client
    import docker.errors

    real = docker.api.client.APIClient.pause
    asked: list[str] = []

    def pause(api: Any, container: str) -> None:
        asked.append(container)
        if len(asked) <= times:
            raise docker.errors.APIError(
                "500 Server Error", explanation="OCI runtime pause failed: unable to freeze: unknown"
            )
        real(api, container)

    monkeypatch.setattr(docker.api.client.APIClient, "pause", pause)
    return asked


def test_a_pause_the_kernel_could_not_finish_is_tried_again(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp, container = start(run.Config(taskdefs.sleep_then_print, 60))
    asked = freeze_fails(monkeypatch, times=2)
    exp.pause("t")
    container.reload()
    assert (len(asked), task(exp, "t").status, container.status) == (3, "PAUSED", "paused")
    exp.cancel("t")


def test_a_pause_that_never_freezes_says_so_and_the_task_runs_on(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp, container = start(run.Config(taskdefs.sleep_then_print, 60))
    freeze_fails(monkeypatch, times=100)
    with pytest.raises(run.BackendError, match=r"cannot pause task container .*unable to freeze"):
        exp.pause("t")
    container.reload()
    assert (task(exp, "t").status, container.status) == ("RUNNING", "running")
    exp.cancel("t")


# ----------------------------------------------------------------------------- logs
def test_stream_logs_follows_a_running_container_to_its_end(start: Start) -> None:
    exp, _ = start(run.Config(taskdefs.print_lines, 20, delay=0.05))
    lines = [entry.message for entry in exp.stream_logs("t", follow=True)]
    assert lines == [f"line {i}" for i in range(20)]
    assert task(exp, "t").status == "SUCCEEDED"


# ----------------------------------------------------------------------------- behind runyard's back
def test_a_container_removed_by_hand_is_failed_as_lost(start: Start) -> None:
    exp, container = start(run.Config(taskdefs.sleep_then_print, 60))
    # the supervisor held still meanwhile, so that its next look finds the container gone (not
    # killed and not yet removed: a moment of `docker rm -f` that the next test is about)
    supervisor = exp.store.experiment(exp.experiment_id).driver_pid
    assert supervisor
    os.kill(supervisor, signal.SIGSTOP)
    try:
        container.remove(force=True)
    finally:
        os.kill(supervisor, signal.SIGCONT)
    assert exp.wait(timeout=60) == "FAILED"
    t = task(exp, "t")
    assert t.reason == f"lost: its container {t.job_id} is gone (removed by hand?) and left no result"


def test_a_container_killed_before_the_runner_wrote_its_result_is_failed_with_its_exit_code(
    start: Start, client: Any
) -> None:
    exp, container = start(run.Config(taskdefs.sleep_then_print, 60))
    container.kill()
    assert exp.wait(timeout=60) == "FAILED"
    t = task(exp, "t")
    assert t.exit_code == 137
    assert t.reason == "lost: the container exited with code 137 before the runner wrote a result"
    until(lambda: not containers_of(client, exp.experiment_id), "the container to be removed")


# ----------------------------------------------------------------------------- bad input
def run_failing(executor: Any) -> Any:
    exp = run.Experiment("docker-bad")
    exp.add(run.Config(taskdefs.hello), executor=executor, name="t")
    assert exp.run() == "FAILED"
    return task(exp, "t")


def test_an_image_that_is_missing_and_cannot_be_pulled_fails_the_launch_naming_it(
    docker_executor: Executor,
) -> None:
    t = run_failing(docker_executor(image="runyard-test/no-such-image:0.0"))
    assert t.reason.startswith(
        "launch failed: image 'runyard-test/no-such-image:0.0' is not on the Docker engine at"
    )
    assert "cannot be pulled" in t.reason and "docker load" in t.reason


def test_a_missing_volume_source_fails_the_launch_naming_it(
    docker_executor: Executor, tmp_path: Path
) -> None:
    t = run_failing(docker_executor(volumes=[f"{tmp_path}/nope:/data"]))
    assert t.reason.startswith(f"launch failed: volume source {tmp_path}/nope does not exist on this machine")


def test_an_image_without_the_interpreter_fails_the_launch_saying_so(docker_executor: Executor) -> None:
    t = run_failing(docker_executor(python="python9"))
    assert t.reason.startswith("the in-job runner did not start in the container (exit code 127")
    assert t.reason.endswith("does image 'runyard-test/python:3.11' have 'python9'? (DockerExecutor.python)")


def test_a_daemon_that_does_not_run_keeps_the_launch_waiting_saying_how_to_start_it(
    runyard_plugins: Plugins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreachable daemon fails no task: it waits, PENDING, no attempt used, saying why."""
    socket = f"unix://{tmp_path}/no-daemon.sock"
    monkeypatch.setenv("DOCKER_HOST", socket)  # nothing listens there: the real engine is left alone
    exp = run.Experiment("docker-no-daemon")
    exp.add(run.Config(taskdefs.hello), executor=run.DockerExecutor(image="img", code=None), name="t")
    exp.run(detach=True)
    t = until(
        lambda: (v := task(exp, "t")).reason and v.reason.startswith("waiting") and v, "the launch to wait"
    )
    assert (t.status, t.attempts) == ("PENDING", 0)
    assert t.reason.startswith(f"waiting: cannot reach the Docker daemon at {socket} (")
    assert "is it running? start it with `sudo systemctl start docker` (or run `sudo dockerd &`)" in t.reason
    exp.cancel_all()
    exp.wait(timeout=30)
    assert task(exp, "t").status == "CANCELLED"


def test_without_an_init_process_the_engine_refuses_to_start_an_image_without_the_interpreter(
    docker_executor: Executor,
) -> None:
    t = run_failing(docker_executor(python="python9", run_kwargs={"init": False}))
    assert t.reason.startswith(
        "launch failed: the container of task t did not start: the Docker engine said:"
    )
    assert t.reason.endswith("does image 'runyard-test/python:3.11' have 'python9'? (DockerExecutor.python)")
