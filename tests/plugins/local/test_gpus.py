"""``LocalExecutor(gpus=N)``: each task leases N of this machine's GPUs (machine-wide within
one runyard home, through the store) and sees them as ``CUDA_VISIBLE_DEVICES``; a task waits
PENDING, saying so, while too few are free; a crashed driver's leases come back; more GPUs
than the machine has is an error at ``run()``. The machine's GPUs come from
``RUNYARD_LOCAL_GPUS`` here (this machine has none)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import runyard as run
from _local_helpers import task
from helpers import until
from runyard.errors import ConfigError
from runyard.store import pid_alive
from runyard_local.gpus import nvidia_smi_gpus, parse_gpus


@pytest.fixture(autouse=True)
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has GPUs 0 and 1 (for this process, and the supervisors it starts)."""
    monkeypatch.setenv("RUNYARD_LOCAL_GPUS", "0,1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _traced(log: Path, gate: Path | None = None, seconds: float = 0.0) -> run.Script:
    """Appends ``<time> start|end <CUDA_VISIBLE_DEVICES> <pid>`` to ``log`` around its work
    (waiting for ``gate`` to exist, then a sleep)."""
    line = f'printf "%s %s %s $$\\n" "$(date +%s.%N)" "$1" "${{CUDA_VISIBLE_DEVICES-unset}}" >> {log}'
    wait = f"until [ -e {gate} ]; do sleep 0.05; done; " if gate else ""
    return run.Script(
        inline=f"{line.replace('$1', 'start')}; {wait}sleep {seconds}; {line.replace('$1', 'end')}"
    )


def _runs(log: Path) -> list[tuple[str, float, float]]:
    """(devices, start, end) of each task that ran."""
    starts: dict[str, tuple[str, float]] = {}
    out = []
    for raw in log.read_text().splitlines():
        when, what, devices, pid = raw.split()
        if what == "start":
            starts[pid] = (devices, float(when))
        else:
            out.append((starts[pid][0], starts[pid][1], float(when)))
    return out


def _state_events(exp: run.Experiment, task_id: str) -> list[str]:
    events = exp.store.events(exp.experiment_id)
    return [data["to"] for _, t, _, kind, data in events if t == task_id and kind == "state"]


def test_gpus_is_a_whole_number_of_at_least_zero() -> None:
    assert run.LocalExecutor().gpus == 0
    assert run.LocalExecutor(gpus=2).resource_request() == {"gpu": 2}
    assert run.LocalExecutor().resource_request() == {}
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=r"LocalExecutor.gpus must be a whole number of GPUs >= 0"):
            run.LocalExecutor(gpus=bad)


def test_a_task_sees_the_gpus_it_holds_and_one_without_gpus_sees_none_set(tmp_path: Path) -> None:
    log = tmp_path / "trace"
    exp = run.Experiment("gpus")
    exp.add(_traced(log), name="two", executor=run.LocalExecutor(gpus=2))
    exp.add(_traced(log), name="none")
    assert exp.run() == "SUCCEEDED"
    assert sorted(devices for devices, _, _ in _runs(log)) == ["0,1", "unset"]
    assert exp.store.unit_leases() == []  # given back once the task ended


def test_a_task_waits_pending_while_too_few_gpus_are_free_saying_how_many(tmp_path: Path) -> None:
    """While it waits it costs no transition: its state events are those of a task that never
    waited; the GPUs are held in the store while the first one runs."""
    log, gate = tmp_path / "trace", tmp_path / "go"
    exp = run.Experiment("wait-gpus")
    gpus = run.LocalExecutor(gpus=2)
    first = exp.add(_traced(log, gate), name="first", executor=gpus)
    second = exp.add(_traced(log), name="second", executor=gpus)
    exp.run(detach=True)
    until(lambda: task(exp, second).reason == "waiting for 2 free GPUs", "the second task's reason")
    assert (task(exp, first).status, task(exp, second).status) == ("RUNNING", "PENDING")
    held = [(r, u, e, t, a) for r, u, e, t, a, _ in exp.store.unit_leases()]
    assert held == [("gpu", "0", exp.experiment_id, first, 1), ("gpu", "1", exp.experiment_id, first, 1)]
    gate.touch()
    assert exp.wait(timeout=60) == "SUCCEEDED"
    (a_devices, _, a_end), (b_devices, b_start, _) = sorted(_runs(log), key=lambda r: r[1])
    assert (a_devices, b_devices) == ("0,1", "0,1") and a_end <= b_start
    assert _state_events(exp, second) == _state_events(exp, first)
    assert task(exp, second).reason is None


EXPERIMENT = r"""
import sys
import runyard as run
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_gpus import _traced
exp = run.Experiment(sys.argv[2])
exp.add([_traced(Path(sys.argv[1]), seconds=0.2) for _ in range(5)], executor=run.LocalExecutor(gpus=1))
print(exp.run())
"""


def test_two_experiments_in_one_home_never_hold_the_same_gpu_at_once(tmp_path: Path) -> None:
    """Two drivers in two processes, each with tasks of one GPU: every GPU runs one task at a
    time, whichever experiment it belongs to."""
    log = tmp_path / "trace"
    here = os.path.dirname(os.path.abspath(__file__))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EXPERIMENT, str(log), name, here],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("left", "right")
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(out.strip().endswith("SUCCEEDED") for out, _ in outputs), outputs
    runs = _runs(log)
    assert len(runs) == 10 and {devices for devices, _, _ in runs} <= {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((start, end) for devices, start, end in runs if devices == gpu)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, f"two tasks held GPU {gpu} at once"


def test_the_gpus_of_a_crashed_driver_come_back_to_other_experiments(tmp_path: Path) -> None:
    """The supervisor of an experiment is killed (-9) while its task holds both GPUs; the task
    ends afterwards, unseen. Another experiment asking for those GPUs brings the dead one's
    tasks up to date, and gets them."""
    log, gate = tmp_path / "trace", tmp_path / "go"
    crashed = run.Experiment("crashed")
    held = crashed.add(_traced(log, gate), name="held", executor=run.LocalExecutor(gpus=2))
    crashed.run(detach=True)
    until(lambda: task(crashed, held).status == "RUNNING", "the task to run")
    supervisor = crashed.store.experiment(crashed.experiment_id).driver_pid
    assert supervisor is not None
    os.kill(supervisor, signal.SIGKILL)
    until(lambda: not pid_alive(supervisor), "the supervisor to die")
    gate.touch()
    until(lambda: len(_runs(log)) == 1, "the task to end")
    stored = crashed.store.task  # (the store as it is: reading exp.tasks would bring it up to date)
    assert stored(crashed.experiment_id, held).status == "RUNNING"  # nobody saw it end

    later = run.Experiment("later")
    wants = later.add(_traced(log), name="wants", executor=run.LocalExecutor(gpus=2))
    later.run(detach=True)
    assert later.wait(timeout=60) == "SUCCEEDED"
    assert stored(crashed.experiment_id, held).status == "SUCCEEDED"  # by the driver of "later"
    assert [devices for devices, _, _ in _runs(log)] == ["0,1", "0,1"]
    assert task(later, wants).status == "SUCCEEDED"


def test_asking_for_more_gpus_than_the_machine_has_fails_at_run_before_anything_launches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for listed, has in (("0", "1 (0)"), ("", "none")):
        monkeypatch.setenv("RUNYARD_LOCAL_GPUS", listed)
        exp = run.Experiment("too-many")
        big = exp.add(run.Script(inline="true"), name="big", executor=run.LocalExecutor(gpus=2))
        message = f"task 'big' asks for 2 GPUs, but the local backend's machine has {has}: ask for at most"
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            exp.run()
        assert exp.store.experiment(exp.experiment_id).launched_at is None  # not launched: nothing ran
        assert task(exp, big).attempts == 0


def test_gpus_listed_by_hand_must_be_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_gpus("0, 1,3,1") == ["0", "1", "3"]
    assert parse_gpus("") == []
    monkeypatch.setenv("RUNYARD_LOCAL_GPUS", "0;1")
    exp = run.Experiment("bad-list")
    exp.add(run.Script(inline="true"), executor=run.LocalExecutor(gpus=1))
    with pytest.raises(ConfigError, match=r"RUNYARD_LOCAL_GPUS must list GPU indices separated by commas"):
        exp.run()


def test_nvidia_smi_listing_gives_the_gpu_indices(tmp_path: Path) -> None:
    """(A stand-in for ``nvidia-smi``, which this machine has not: its output, as it prints it.)"""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'echo "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-1b2c)"\n'
        'echo "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-3d4e)"\n'
    )
    smi.chmod(0o755)
    assert nvidia_smi_gpus(str(smi)) == ["0", "1"]
    assert nvidia_smi_gpus(str(tmp_path / "missing")) == []


def test_a_dry_run_shows_that_the_gpus_are_leased_at_launch() -> None:
    exp = run.Experiment("dry")
    exp.add(run.Script(inline="true"), name="t", executor=run.LocalExecutor(gpus=2))
    with open(os.devnull, "w") as devnull:
        text = exp.dry_run(file=devnull)["t"]
    assert "CUDA_VISIBLE_DEVICES='<2 GPUs of this machine, the free ones at launch>'" in text
