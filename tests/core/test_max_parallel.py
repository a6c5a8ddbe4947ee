"""``Experiment(max_parallel=N)`` and what PENDING tasks say they wait for, with real local
processes: at most N of an experiment's tasks live at once; a task that cannot launch says
why in its ``reason`` (a slot, its dependencies, held), written without a transition."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import runyard as run
from _core_helpers import task, wait_until
from helpers import ChildProcessBackend
from runyard.executor import Executor, JobSpec, Launched
from runyard.hookspecs import hookimpl
from runyard.plugins import ExecutorRegistry
from runyard.store import Store
from runyard.testing import registered_plugin
from test_cli import here


def _traced(log: Path, seconds: float = 0.3) -> run.Script:
    """A task that appends ``<time> start|end <its pid>`` lines to ``log`` around a sleep."""
    line = f'printf "%s %s $$\\n" "$(date +%s.%N)" "$1" >> {log}'
    return run.Script(inline=f"{line.replace('$1', 'start')}; sleep {seconds}; {line.replace('$1', 'end')}")


def _intervals(log: Path) -> dict[str, tuple[float, float]]:
    """When each task ran, by its pid."""
    starts: dict[str, float] = {}
    out: dict[str, tuple[float, float]] = {}
    for raw in log.read_text().splitlines():
        when, what, pid = raw.split()
        if what == "start":
            starts[pid] = float(when)
        else:
            out[pid] = (starts[pid], float(when))
    return out


def _most_at_once(intervals: dict[str, tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals.values()] + [(e, -1) for _, e in intervals.values()])
    live = most = 0
    for _, step in edges:  # (an end sorts before a start at the same instant)
        live += step
        most = max(most, live)
    return most


def _state_events(exp: run.Experiment, task_id: str) -> list[str]:
    """The states the task went to, as its events in the store tell."""
    events = exp.store.events(exp.experiment_id)
    return [data["to"] for _, task, _, kind, data in events if task == task_id and kind == "state"]


def test_no_more_than_max_parallel_tasks_run_at_once(tmp_path: Path) -> None:
    log = tmp_path / "trace"
    exp = run.Experiment("limited", max_parallel=2)
    exp.add([_traced(log) for _ in range(7)], name="t")
    assert exp.run() == "SUCCEEDED"
    intervals = _intervals(log)
    assert len(intervals) == 7
    assert _most_at_once(intervals) == 2  # never more (and the two slots were used)


def test_a_task_waiting_for_a_slot_says_so_and_status_shows_it(tmp_path: Path) -> None:
    """The reason is written without a transition: a task that waited has the same state
    events as one that never did, and the reason goes once it launches."""
    exp = run.Experiment("slots", max_parallel=1)
    first = exp.add(run.Script(inline=f"until [ -e {tmp_path}/go ]; do sleep 0.05; done"), name="first")
    second = exp.add(run.Script(inline="true"), name="second")
    exp.run(detach=True)
    wait_until(lambda: task(exp, first).status == "RUNNING", what="the first task to run")
    reason = "waiting: max_parallel=1 tasks running"
    wait_until(lambda: task(exp, second).reason == reason, what="the second task's reason")
    assert task(exp, second).status == "PENDING"
    status = here("status", exp.experiment_id)
    assert status.returncode == 0
    assert any(line.startswith("second") and line.endswith(reason) for line in status.stdout.splitlines())
    (tmp_path / "go").touch()
    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert task(exp, second).reason is None
    assert _state_events(exp, second) == _state_events(exp, first)


def test_a_task_waiting_for_its_dependencies_names_them(tmp_path: Path) -> None:
    gate = f"until [ -e {tmp_path}/go ]; do sleep 0.05; done"
    exp = run.Experiment("deps-reason")
    a = exp.add(run.Script(inline=gate), name="a")
    b = exp.add(run.Script(inline=gate), name="b")
    c = exp.add(run.Script(inline="true"), name="c", dependencies=[a, b])
    exp.run(detach=True)
    wait_until(lambda: task(exp, c).reason == "waiting for a, b", what="c's reason")
    (tmp_path / "go").touch()
    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert task(exp, c).reason is None


def test_a_held_task_says_it_is_held_until_it_is_released(tmp_path: Path) -> None:
    exp = run.Experiment("held")
    first = exp.add(run.Script(inline=f"until [ -e {tmp_path}/go ]; do sleep 0.05; done"), name="first")
    later = exp.add(run.Script(inline="true"), name="later", dependencies=[first])
    exp.pause(later)
    exp.run(detach=True)
    assert (task(exp, later).status, task(exp, later).reason) == ("PAUSED", "held")
    exp.resume(later)
    wait_until(lambda: task(exp, later).reason == "waiting for first", what="the reason after the release")
    (tmp_path / "go").touch()
    assert exp.wait(timeout=60) == "SUCCEEDED"


def test_reasons_of_many_queued_tasks_are_written_once_each_in_few_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not one write per waiting task and turn: each reason is written when it changes, many
    tasks in one transaction."""
    calls: list[dict[str, str | None]] = []
    original = Store.set_reasons

    def counted(self: Store, experiment_id: str, reasons: dict[str, str | None], lease: Any = None) -> None:
        calls.append(dict(reasons))
        original(self, experiment_id, reasons, lease)

    monkeypatch.setattr(Store, "set_reasons", counted)
    exp = run.Experiment("many", max_parallel=2)
    ids = exp.add([run.Script(inline="sleep 0.05") for _ in range(30)], name="q")
    assert exp.run() == "SUCCEEDED"
    written = [task_id for changes in calls for task_id, why in changes.items() if why is not None]
    assert sorted(set(written)) == sorted(ids[2:])  # each task that had to wait...
    assert len(written) == len(set(written))  # ...said so once
    assert len(calls[0]) == 28  # all of them in one transaction


def test_max_parallel_keeps_sequential_and_direct_runs_one_at_a_time(tmp_path: Path) -> None:
    for mode in ("sequential", "direct"):
        log = tmp_path / mode
        exp = run.Experiment(mode, max_parallel=3)
        exp.add([_traced(log, 0.1) for _ in range(3)], name="t")
        assert exp.run(**{mode: True}) == "SUCCEEDED"
        assert _most_at_once(_intervals(log)) == 1


# --- a backend that throttles a group of jobs itself (Slurm: a job array's %N) ------------------
@attrs.define
class GroupExecutor(Executor):
    kind: ClassVar[str] = "test-group"


class GroupBackend(ChildProcessBackend):
    """Real processes; records each launch_many call's jobs and their max_parallel."""

    throttles_groups = True
    calls: ClassVar[list[list[tuple[str, int | None]]]] = []

    def launch_many(self, jobs: Any) -> list[Launched | Exception]:
        GroupBackend.calls.append([(job.task_id, job.max_parallel) for job in jobs])
        return super().launch_many(jobs)

    def _launch(self, job: JobSpec) -> Launched:
        assert job.max_parallel is not None
        return super()._launch(job)


class GroupPlugin:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(GroupExecutor, GroupBackend)


def test_a_backend_that_throttles_groups_gets_the_ready_tasks_at_once_with_the_slots_left(
    runyard_plugins: Any,
) -> None:
    """The local task takes one of the three slots; the group's 70 tasks go in one call (not
    LAUNCH_BATCH at a time), each job with max_parallel=2."""
    GroupBackend.calls.clear()
    with registered_plugin(GroupPlugin(), name="group"):
        exp = run.Experiment("group", max_parallel=3)
        local = exp.add(run.Script(inline="sleep 0.2"), name="local")
        group = exp.add([run.Script(inline="true") for _ in range(70)], name="g", executor=GroupExecutor())
        assert exp.run() == "SUCCEEDED"
    assert task(exp, local).status == "SUCCEEDED"
    assert GroupBackend.calls == [[(g, 2) for g in group]]
