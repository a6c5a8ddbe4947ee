"""The Docker daemon going away under runyard (stopped, restarting): no call fails with a raw
error, the driver survives and waits for it, and containers its shutdown stopped say so.

Two ways to make the daemon go away without stopping the engine other tests use:
- ``relay``: a unix-socket relay in front of the engine's socket (``SocketRelay``), stopped
  and started: every call fails exactly as against a stopped daemon (its socket is gone);
- ``own_dockerd``: a Docker daemon of this module's own (``Dockerd``), really SIGTERMed and
  started again: its shutdown stops the containers it runs.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from _docker_helpers import Dockerd, SocketRelay, containers_of, until
from runyard.errors import UnreachableError
from runyard.plugins import reset_plugin_manager
from runyard.states import State
from runyard_docker.backend import DockerBackend

Executor = Callable[..., Any]

# the script of a task whose runner is killed (SIGKILL) under it: its container ends with
# exit code 137 and no result (the runner is the child of the container's init, PID 1)
KILL_RUNNER = """
for p in /proc/[0-9]*; do read -r _ _ _ ppid _ < "$p/stat" && [ "$ppid" = 1 ] && kill -KILL "${p#/proc/}"; done
sleep 30
"""


def short_dir() -> Path:
    """A folder with a short path (a unix socket's path has at most 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="ry-", dir="/tmp"))


@pytest.fixture
def relay(docker_engine: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SocketRelay]:
    """runyard talks to the engine through a relay (``$DOCKER_HOST``) the test stops and starts."""
    folder = short_dir()
    r = SocketRelay(docker_engine.docker_host.removeprefix("unix://"), str(folder / "docker.sock"))
    r.start()
    monkeypatch.setenv("DOCKER_HOST", r.docker_host)
    reset_plugin_manager()  # a backend of this process made before would keep the engine's socket
    try:
        yield r
    finally:
        r.stop()
        reset_plugin_manager()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def own_dockerd(docker_engine: Any) -> Iterator[Dockerd]:
    """A second Docker daemon, with the test image, for this module's tests to stop."""
    folder = short_dir()
    daemon = Dockerd(folder, docker_engine.image, docker_engine.docker_host)
    daemon.start()
    try:
        daemon.load_image()
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def on_own_dockerd(own_dockerd: Dockerd, runyard_home: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """runyard uses the second daemon; afterwards it is running again and holds no container
    of the test's (its client, to look at it from the test's side)."""
    import docker

    if own_dockerd.process is None or own_dockerd.process.poll() is not None:
        own_dockerd.start()
    monkeypatch.setenv("DOCKER_HOST", own_dockerd.docker_host)
    reset_plugin_manager()
    client = docker.DockerClient(base_url=own_dockerd.docker_host)
    try:
        yield client
    finally:
        reset_plugin_manager()
        if own_dockerd.process is None or own_dockerd.process.poll() is not None:
            own_dockerd.start()
        left = client.containers.list(all=True, filters={"label": "runyard.experiment"})
        for c in left:
            c.remove(force=True)
        client.close()
        assert not left, f"containers left behind on the second daemon: {[c.name for c in left]}"


def start_again_after(
    stopped: threading.Event, start: Callable[[], None], seconds: float
) -> threading.Thread:
    """Start the daemon again ``seconds`` after it was stopped (in a thread)."""

    def later() -> None:
        if stopped.wait(120):
            threading.Event().wait(seconds)
            start()

    thread = threading.Thread(target=later, daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- the relay
def test_the_daemon_going_away_while_a_finished_container_is_removed_leaves_the_driver_waiting(
    relay: SocketRelay, docker_executor: Executor, client: Any
) -> None:
    """The daemon stops just as runyard removes a container that ended without a result: the
    attached driver does not crash with the SDK's ConnectionError; it waits for the daemon,
    then records the task and removes its container."""
    relay.stop_on(b"DELETE ")  # the removal is the call the daemon never answers
    back = start_again_after(relay.stopped, relay.start, 1.0)
    exp = run.Experiment("docker-daemon-gone")
    exp.add(run.Script(inline=KILL_RUNNER), executor=docker_executor(), name="t")
    assert exp.run() == "FAILED"
    back.join(timeout=5)
    t = exp.tasks[0]
    assert relay.stops == 1 and not relay.stopped.is_set()  # the daemon went away, and came back
    assert (t.status, t.exit_code) == ("FAILED", 137)
    assert t.failure != "node_failure"  # it ended by itself, before the daemon went away
    assert t.reason.startswith("lost: the container exited with code 137 before the runner wrote a result")
    until(lambda: not containers_of(client, exp.experiment_id), "the container to be removed", timeout=30)


def test_every_call_to_a_daemon_that_cannot_be_reached_raises_unreachable_and_the_supervisor_waits(
    relay: SocketRelay, docker_executor: Executor
) -> None:
    """With the daemon away, polling, launching, cancelling and pausing raise
    UnreachableError (since when), never a raw error; the supervisor driving the task
    outlives the outage and records its end once the daemon is back."""
    exp = run.Experiment("docker-daemon-away")
    exp.add(run.Config(taskdefs.sleep_then_print, 6.0), executor=docker_executor(), name="t")
    exp.run(detach=True)
    until(lambda: exp.tasks[0].status == "RUNNING", "the task to run")
    handle = exp._engine.handles()[0]
    backend = DockerBackend()
    try:
        assert backend.poll([handle.ref()])[handle.record.job_id].state is State.RUNNING  # it has a client
        relay.stop()
        calls: dict[str, Callable[[], object]] = {
            "poll": lambda: backend.poll([handle.ref()]),
            "cancel": lambda: backend.cancel(handle.ref()),
            "pause": lambda: backend.pause(handle.ref()),
            "launch": lambda: backend.launch(handle.spec(with_secrets=True)),
        }
        for name, call in calls.items():
            with pytest.raises(UnreachableError, match="cannot reach the Docker daemon at unix://") as caught:
                call()
            assert caught.value.since is not None, name
        relay.start()
        assert backend.poll([handle.ref()])[handle.record.job_id].state in (State.RUNNING, State.SUCCEEDED)
    finally:
        if relay.stopped.is_set():
            relay.start()
        backend.close()
    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert exp.get_logs("t").stdout == "done\n"


# ----------------------------------------------------------------------------- a real daemon stop
@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detached"])
def test_containers_stopped_by_the_daemons_shutdown_fail_with_node_failure(
    own_dockerd: Dockerd, on_own_dockerd: Any, docker_engine: Any, detach: bool
) -> None:
    """dockerd SIGTERMed while a task runs (as `systemctl stop docker` does), started again a
    moment later: the driver (attached, or the supervisor) survives and records the task
    FAILED "node_failure", saying the daemon stopped, not "lost" nor the task's own error."""
    exp = run.Experiment("docker-daemon-restart")
    executor = run.DockerExecutor(image=docker_engine.image)
    exp.add(run.Config(taskdefs.sleep_then_print, 60.0), executor=executor, name="t")
    runner = threading.Thread(target=exp.run, kwargs={"detach": detach}, daemon=True)
    runner.start()
    until(lambda: exp.tasks[0].status == "RUNNING", "the task to run")
    own_dockerd.stop()
    own_dockerd.start()
    assert exp.wait(timeout=60) == "FAILED"
    runner.join(timeout=30)
    assert not runner.is_alive()
    t = exp.tasks[0]
    assert (t.status, t.exit_code, t.failure) == ("FAILED", 143, "node_failure")
    assert t.reason.startswith(
        f"node_failure: the Docker daemon at {own_dockerd.docker_host} stopped or restarted"
    )
    until(
        lambda: (
            not on_own_dockerd.containers.list(
                all=True, filters={"label": f"runyard.experiment={exp.experiment_id}"}
            )
        ),
        "the container to be removed",
        timeout=30,
    )
