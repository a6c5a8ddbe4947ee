"""Helpers of the tests in tests/plugins/docker (imported as ``_docker_helpers``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers
import runyard as run

LABEL = "runyard.experiment"
HOST_BRIDGE = "/sys/class/net/docker0"  # the shared engine's bridge network


def until(predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.05) -> Any:
    """``helpers.until`` with this folder's longer default timeout (a container or a job takes time)."""
    return helpers.until(predicate, what, timeout, interval)


def task(exp: run.Experiment, task_id: str) -> Any:
    return next(t for t in exp.tasks if t.id == task_id)


def containers_of(client: Any, experiment_id: str) -> list[Any]:
    """Every container (running or not) of an experiment, by its label."""
    return client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL}={experiment_id}"})


# the Docker engine's socket, made to go away on cue (helpers.Relay, at a unix socket)
SocketRelay = helpers.Relay


class Dockerd:
    """A Docker daemon of the test's own (its own data and exec roots and socket), with the
    test image loaded: one to SIGTERM and start again while the shared engine serves other
    tests. It runs in a network namespace of its own, where its ``docker0`` bridge is its own
    (beside the shared engine's it would delete that one, with ``--bridge=none`` too)."""

    def __init__(self, root: Path, image: str, main_host: str) -> None:
        self.root, self.image, self.main_host = root, image, main_host
        self.socket = str(root / "docker.sock")
        self.pidfile = root / "dockerd.pid"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60.0) -> None:
        argv = [
            "unshare", "--net", "dockerd", "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"), "--pidfile", str(self.pidfile), "-H", self.docker_host,
            "--iptables=false", "--ip-masq=false", "--ip6tables=false",
        ]  # fmt: skip
        bridge = os.path.exists(HOST_BRIDGE)
        with open(self.root / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        env = {**os.environ, "DOCKER_HOST": self.docker_host}
        deadline = time.monotonic() + timeout
        while subprocess.run(["docker", "info"], env=env, capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "dockerd.log").read_text()[-2000:]
                raise AssertionError(f"a second dockerd did not start ({argv}):\n{tail}")
            time.sleep(0.2)
        assert os.path.exists(HOST_BRIDGE) == bridge, "the second dockerd changed the host's docker0"

    def load_image(self) -> None:
        save = subprocess.Popen(["docker", "-H", self.main_host, "save", self.image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", self.docker_host, "load"], stdin=save.stdout, check=True,
                       capture_output=True)  # fmt: skip
        assert save.wait() == 0

    def stop(self) -> None:
        """SIGTERM, as `systemctl stop docker` does; waits for it to end."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
