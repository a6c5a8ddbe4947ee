"""A cluster that cannot be reached for a while, on the real bed: the network between runyard
and the test sshd is a relay (helpers.Relay) cut on cue; sshd, Slurm and the jobs go on.

- The supervisor keeps its heartbeat through the outage: nothing says it died, and no second
  driver can take the experiment over.
- A task that becomes ready during the outage waits for the cluster (no attempt used) and
  runs when it is back.
- `runyard status` answers from the store in seconds, saying the states are the last recorded."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from helpers import Relay, end_everything, until
from runyard.errors import ExperimentStateError
from runyard.scheduler import STALE_AFTER

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cut(slurm_cluster: Any, runyard_home: str, tmp_path: Path) -> Iterator[tuple[Relay, Any]]:
    """A relay in front of the test sshd, and ``executor(**fields)``: a SlurmExecutor that
    reaches the cluster through it. Its experiments are cancelled and their folders removed
    afterwards."""
    relay = Relay((slurm_cluster.host, slurm_cluster.port))
    relay.start()
    line = Path(slurm_cluster.known_hosts).read_text().split(maxsplit=1)[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{relay.port} {line}")
    job_dir = f"{slurm_cluster.job_dir}/outage-{os.getpid()}"

    def executor(**fields: Any) -> Any:
        tunnel = run.SSHTunnel(
            host="127.0.0.1", port=relay.port, user=slurm_cluster.user, identity=slurm_cluster.key,
            known_hosts=str(known_hosts), job_dir=job_dir, retry_for=0.5,
        )  # fmt: skip
        return run.SlurmExecutor(tunnel=tunnel, code=TESTS, **fields)

    yield relay, executor  # (each test brings the relay back before it ends)
    end_everything(runyard_home)
    relay.stop()
    from runyard_slurm.tunnel import close_sessions, session_for

    session_for(run.SlurmExecutor(tunnel=run.SSHTunnel(
        host=slurm_cluster.host, port=slurm_cluster.port, user=slurm_cluster.user, identity=slurm_cluster.key,
        known_hosts=slurm_cluster.known_hosts,
    )).tunnel).run(f"rm -rf {shlex.quote(job_dir)}")  # fmt: skip
    close_sessions()


def test_the_supervisor_beats_through_an_outage_and_no_second_driver_takes_over(cut) -> None:
    relay, executor = cut
    exp = run.Experiment("outage-supervisor", max_retries=1)  # retries to enforce: a supervisor drives it
    exp.add(run.Config(taskdefs.sleep_then_print, 14, "survived"), executor=executor(), name="t")
    exp.run(detach=True)
    until(lambda: exp.tasks[0].status == "RUNNING", "the task to run", timeout=60)
    supervisor = exp.store.experiment(exp.experiment_id).driver_pid
    assert supervisor
    relay.stop()
    try:
        cut_until = time.monotonic() + STALE_AFTER + 1  # longer than a dead driver's heartbeat lasts
        while time.monotonic() < cut_until:
            record = exp.store.experiment(exp.experiment_id)
            assert record.driver_pid == supervisor
            assert record.driver_heartbeat and time.time() - record.driver_heartbeat < STALE_AFTER
            time.sleep(0.5)
        assert exp.driver_alive()
        with pytest.raises(ExperimentStateError, match="still driven"):
            exp.takeover()
    finally:
        relay.start()
    assert exp.wait(timeout=120) == "SUCCEEDED"
    assert (exp.tasks[0].attempts, exp.get_logs("t").stdout) == (1, "survived\n")


def test_a_task_ready_during_an_outage_waits_for_the_cluster_and_uses_no_attempt(cut, tmp_path: Path) -> None:
    relay, executor = cut
    gate = tmp_path / "go"
    exp = run.Experiment("outage-launch", max_retries=1)
    first = exp.add(
        run.Script(inline=f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done"),
        executor=run.LocalExecutor(), name="first",
    )  # fmt: skip
    then = exp.add(
        run.Config(taskdefs.hello, "cluster"), executor=executor(), name="then", dependencies=[first]
    )
    exp.run(detach=True)
    until(lambda: exp.tasks[0].status == "RUNNING", "the local task to run")
    relay.stop()
    try:
        gate.touch()  # the local task ends: its dependent is ready while the cluster is away
        waiting = until(  # (`waiting: <why the cluster cannot be reached>`, not `waiting for first`)
            lambda: (v := exp.tasks[1]).reason and v.reason.startswith("waiting:") and v,
            "the launch to wait",
            timeout=60,
        )
        assert (waiting.status, waiting.attempts, waiting.job_id) == ("PENDING", 0, None)
        away_until = time.monotonic() + 3
        while time.monotonic() < away_until:  # however long: it waits, and no attempt is used
            v = exp.tasks[1]  # (a launch tried again is SUBMITTED for a moment: an attempt is
            # recorded before its job starts, and taken back when the cluster does not answer)
            assert (v.status, v.attempts, v.job_id) in {("PENDING", 0, None), ("SUBMITTED", 1, None)}
            time.sleep(0.05)
    finally:
        relay.start()
    assert exp.wait(timeout=120) == "SUCCEEDED"
    view = exp.tasks[1]
    assert (view.id, view.attempts, exp.get_logs(then).stdout) == ("then", 1, "hello cluster\n")


def test_runyard_status_answers_from_the_store_while_the_cluster_is_unreachable(cut) -> None:
    relay, executor = cut
    exp = run.Experiment("outage-status")  # all on Slurm, no retries: no supervisor, reads sync
    exp.add(run.Config(taskdefs.sleep_then_print, 30, "x"), executor=executor(), name="t")
    exp.run(detach=True)
    until(lambda: exp.tasks[0].status == "RUNNING", "the task to run", timeout=60)
    relay.stop()
    try:
        started = time.monotonic()
        shown = subprocess.run(
            [sys.executable, "-m", "runyard", "status", exp.experiment_id], capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        took = time.monotonic() - started
    finally:
        relay.start()
    assert took < 30  # a guard against the old ~48 s, not a timing: it answers in seconds
    assert shown.returncode == 0, shown.stderr
    assert f"{exp.experiment_id}: RUNNING" in shown.stdout
    assert "the states shown are the last recorded" in shown.stderr
    assert "Traceback" not in shown.stderr
