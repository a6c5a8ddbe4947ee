"""The fault suite: real processes SIGKILLed at random moments, the supervisor, the caller and
task runners, with moments inside launch waves (the driver has marked tasks SUBMITTED and
not yet recorded their job ids). Each task execution leaves a trace (tests/e2e/_faults.py);
after each experiment every task must have SUCCEEDED, finished exactly once, and, when only
drivers were killed, started exactly once; a task whose runner was killed is retried, never
beside its own earlier execution.

The moments are random: each scenario prints its seed, and $RUNYARD_FAULT_SEED replays its
choices. The scenarios share nothing, so that pytest-xdist runs them side by side.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import _faults
import pytest
import runyard as run
from _faults import Figures, Watcher, check, ended, kill, kill_driver, start_takeover, took_over
from runyard.states import State
from runyard.store import TaskRecord

pytestmark = pytest.mark.slow

E2E = os.path.dirname(os.path.abspath(__file__))
SUITE_KILLS = 30  # at least this many kills across the three scenarios


@dataclasses.dataclass
class Suite:
    seed: str

    def rng(self, scenario: str) -> random.Random:
        return random.Random(f"{self.seed}:{scenario}")

    def report(self, scenario: str, figures: Figures, started: float, kills: int) -> None:
        """The scenario made its share of the suite's kills, and nothing went wrong."""
        print(f"{scenario} (seed {self.seed}, {time.monotonic() - started:.0f} s): {figures}")
        assert not figures.problems, "\n".join(figures.problems)
        assert (figures.duplicates, figures.lost, figures.wrong_states, figures.overlaps) == (0, 0, 0, 0)
        assert figures.kills >= kills, f"only {figures.kills} kills, not {kills}"


@pytest.fixture
def suite() -> Suite:
    s = Suite(_faults.seed())
    print(f"fault suite seed {s.seed} (RUNYARD_FAULT_SEED={s.seed} replays it)")
    return s


def _effects(tmp_path: Path, figures: Figures) -> Path:
    path = tmp_path / f"effects-{figures.experiments}"
    path.mkdir()
    return path


def _driver_pid(watcher: Watcher) -> int | None:
    return watcher.store.experiment(watcher.experiment_id).driver_pid


def _running(proc: subprocess.Popen[bytes]) -> int | None:
    return proc.pid if proc.poll() is None else None


# --------------------------------------------------------------------------- 1. the supervisor
SUPERVISOR_KILLS = 20


def test_a_supervisor_killed_anywhere_even_inside_a_launch_wave_loses_and_repeats_no_task(
    tmp_path: Path, runyard_home: str, suite: Suite
) -> None:
    """A detached DAG of 30 tasks (a root, a fan-out of 12, a fan-in, a fan-out of 15, a last
    task) whose supervisor is killed again and again, each time taken over by `runyard
    takeover`; once the suite's share of kills is made, the last supervisor finishes it."""
    rng, figures, started = suite.rng("supervisor kills"), Figures(), time.monotonic()
    while figures.kills < SUPERVISOR_KILLS:
        effects = _effects(tmp_path, figures)
        exp = run.Experiment("supervisor-kills")
        names = _faults.add_waves(exp, effects, [1, 12, 1, 15, 1], seconds=0.3)
        exp.run(detach=True)
        watcher = Watcher(runyard_home, exp.experiment_id)
        try:
            takeover = None
            while not ended(watcher.tasks()) and figures.kills < SUPERVISOR_KILLS:
                # the supervisor a takeover starts is watched from its first moment: its own
                # first launch wave (the one that recovers a wave cut short) is a target too
                killed = kill_driver(watcher, functools.partial(_driver_pid, watcher), rng, figures,
                                     wave_delay=0.15, pause=1.0)  # fmt: skip
                if takeover is not None:
                    took_over(takeover, figures)
                takeover = start_takeover(exp.experiment_id) if killed else None
            if takeover is not None:
                took_over(takeover, figures)
            _faults.wait_for_end(watcher)
        finally:
            watcher.close()
        check(exp, effects, names, reruns=False, figures=figures)
    suite.report("supervisor kills", figures, started, SUPERVISOR_KILLS)


# ------------------------------------------------------------------------------- 2. the caller
CALLER = """\
import sys
from pathlib import Path

sys.path.insert(0, {e2e!r})
import _faults
import runyard as run

exp = run.Experiment("caller-kills")
print(exp.experiment_id, flush=True)
_faults.add_waves(exp, Path({effects!r}), {waves!r}, seconds=0.3)
exp.run(detach={detach})
"""
CALLER_WAVES = [6, 1, 6]
CALLER_KILLS = 5  # of each kind: detached and attached


def _start_caller(tmp_path: Path, effects: Path, detach: bool) -> tuple[subprocess.Popen[bytes], str]:
    """A child process that builds the experiment and runs it; returns it and the experiment id."""
    script = effects / "caller.py"
    script.write_text(CALLER.format(e2e=E2E, effects=str(effects), waves=CALLER_WAVES, detach=detach))
    out = effects / "caller.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    deadline = time.monotonic() + 60
    while not out.read_text().strip():
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, "the caller printed no experiment id"
        time.sleep(0.01)
    return proc, out.read_text().split()[0]


def test_a_caller_killed_while_it_launches_or_drives_loses_and_repeats_no_task(
    tmp_path: Path, runyard_home: str, suite: Suite
) -> None:
    """A child process builds a DAG (6 tasks, a fan-in, 6 tasks) and runs it, detached or
    attached; it is killed at a random moment of its run, often inside a launch wave (for a
    detached run: its first one), and `runyard takeover` drives the experiment to its end."""
    rng, figures, started = suite.rng("caller kills"), Figures(), time.monotonic()
    kills = {True: 0, False: 0}  # by detach
    while min(kills.values()) < CALLER_KILLS:
        detach = kills[True] <= kills[False]
        effects = _effects(tmp_path, figures)
        proc, experiment_id = _start_caller(tmp_path, effects, detach)
        watcher = Watcher(runyard_home, experiment_id)
        try:
            before = figures.kills
            kill_driver(
                watcher, functools.partial(_running, proc), rng, figures,
                wave_delay=0.1, pause=0.4 if detach else 2.5,
                begun=lambda ts: any(t.status is not State.PENDING for t in ts),
            )  # fmt: skip
            proc.wait(timeout=60)
            if figures.kills > before:
                kills[detach] += 1
                took_over(start_takeover(experiment_id), figures)
            _faults.wait_for_end(watcher)
        finally:
            watcher.close()
            if proc.poll() is None:  # the test failed before its kill
                proc.kill()
        names = [name for wave in _faults.task_names(CALLER_WAVES) for name in wave]
        check(run.Experiment.from_id(experiment_id), effects, names, reruns=False, figures=figures)
    suite.report("caller kills", figures, started, 2 * CALLER_KILLS)


# ------------------------------------------------------------------------------ 3. the runners
RUNNER_KILLS = 12
KILLS_PER_TASK = 2


def test_a_killed_runner_is_retried_never_beside_itself_and_every_task_succeeds(
    tmp_path: Path, runyard_home: str, suite: Suite
) -> None:
    """Two waves of 6 tasks, max_retries=2; the runners of random tasks (their job ids: the
    local backend's runner pids) are killed while the task works, at most twice per task.
    Each kill costs exactly one retry, which starts only once the killed execution is gone."""
    rng, figures, started = suite.rng("runner kills"), Figures(), time.monotonic()
    seconds = 1.5
    while figures.kills < RUNNER_KILLS:
        effects = _effects(tmp_path, figures)
        exp = run.Experiment("runner-kills", max_retries=KILLS_PER_TASK)
        names = _faults.add_waves(exp, effects, [6, 6], seconds=seconds)
        exp.run(detach=True)
        kills_of: collections.Counter[str] = collections.Counter()
        watcher = Watcher(runyard_home, exp.experiment_id)
        try:
            deadline = time.monotonic() + _faults.HANG_GUARD
            while not ended(tasks := watcher.tasks()):
                assert time.monotonic() < deadline, watcher.hung("not ended")
                victim = _working(tasks, effects, kills_of, seconds, rng)
                if victim is not None and figures.kills < RUNNER_KILLS and kill(int(victim.job_id or 0)):
                    figures.kills += 1
                    figures.killed.append((time.time(), int(victim.job_id or 0), victim.id))
                    kills_of[victim.id] += 1
                time.sleep(rng.uniform(0.05, 0.3))
        finally:
            watcher.close()
        check(exp, effects, names, reruns=True, figures=figures)
        for name in names:  # one execution per kill, plus the one that finished: no more
            runs = len(_faults.trace(effects, name).starts)
            if runs > kills_of[name] + 1:
                figures.duplicates += runs - kills_of[name] - 1
                figures.problems.append(f"{name}: {runs} executions for {kills_of[name]} runner kills")
    suite.report("runner kills", figures, started, RUNNER_KILLS)


def _working(
    tasks: list[TaskRecord],
    effects: Path,
    kills_of: collections.Counter[str],
    seconds: float,
    rng: random.Random,
) -> TaskRecord | None:
    """A random task whose runner may be killed now: its current attempt's execution has
    started and is far from its end, and it has retries left for this kill."""
    now, working = time.time(), []
    for t in tasks:
        tr = _faults.trace(effects, t.id)
        if (
            t.status is State.RUNNING and t.job_id and kills_of[t.id] < KILLS_PER_TASK
            and len(tr.starts) == t.attempts and not tr.ends and now - tr.starts[-1][0] < seconds - 0.5
            and t.handle.get("starttime") in (None, _faults.starttime(int(t.job_id)))  # still that runner
        ):  # fmt: skip
            working.append(t)
    return rng.choice(working) if working else None


def test_the_three_scenarios_make_at_least_the_suites_kills_between_them() -> None:
    """Each scenario asserts its share (report above); the shares add up to SUITE_KILLS."""
    assert SUPERVISOR_KILLS + 2 * CALLER_KILLS + RUNNER_KILLS >= SUITE_KILLS
