"""The tools of the fault suite (test_faults.py): a DAG whose every task execution leaves a
trace, a killer that SIGKILLs a real process at a chosen moment (one of them: inside a launch
wave, as the store shows it), `runyard takeover` through the real CLI, and the figures.

A trace: each execution of task NAME appends ``<start time> <pid>`` to ``NAME.started`` when
it starts and ``<end time> <pid>`` to ``NAME.finished`` when it ends, and holds a lock on
``NAME.lock`` while it lives (a start line that ends ``overlap`` found it held by another
execution of the same task). Python tasks run ``taskdefs.record_execution``, Script tasks
the same in bash (SCRIPT).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import runyard as run
import taskdefs
from runyard.states import FINAL_STATES, State
from runyard.store import Store, TaskRecord
from runyard.store import pid_alive as alive  # the process exists and is no zombie

# record_execution, in bash: $1 the effects folder, $2 the task's name, $3 seconds of work
SCRIPT = """\
exec 9>>"$1/$2.lock"
if flock -n 9; then overlap=""; else overlap=" overlap"; fi
echo "$EPOCHREALTIME $$$overlap" >> "$1/$2.started"
sleep "$3"
echo "$EPOCHREALTIME $$" >> "$1/$2.finished"
"""

HANG_GUARD = 120.0  # seconds: an experiment that has not ended by then is hung
DRIVER_STARTS = 30.0  # seconds: a takeover whose supervisor does not drive by then is hung


def seed() -> str:
    """The suite's seed: $RUNYARD_FAULT_SEED replays a run, else a new one (printed)."""
    return os.environ.get("RUNYARD_FAULT_SEED") or str(random.SystemRandom().randrange(10**9))


def task_names(widths: Sequence[int]) -> list[list[str]]:
    """The names of the tasks of ``add_waves``, wave by wave: ``w<wave>-<index>``."""
    return [[f"w{w}-{i}" for i in range(width)] for w, width in enumerate(widths)]


def add_waves(exp: run.Experiment, effects: Path, widths: Sequence[int], seconds: float) -> list[str]:
    """Waves of tasks, each task after every task of the wave before it (a fan-out, then a
    fan-in of width 1, ...); Python and Script tasks alternate. Returns the task names."""
    before: list[str] = []
    names: list[str] = []
    for wave in task_names(widths):
        for name in wave:
            task: run.Config | run.Script
            if len(names) % 2:
                task = run.Script(inline=SCRIPT, args=(str(effects), name, str(seconds)))
            else:
                task = run.Config(taskdefs.record_execution, str(effects), name, seconds)
            exp.add(task, name=name, dependencies=before or None)
            names.append(name)
        before = wave
    return names


# ------------------------------------------------------------------------------------ traces
@dataclasses.dataclass
class Trace:
    """The executions of one task: (start time, pid, overlapped) and (end time, pid)."""

    starts: list[tuple[float, int, bool]]
    ends: list[tuple[float, int]]


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def trace(effects: Path, name: str) -> Trace:
    starts = [(float(w[0]), int(w[1]), w[2:] == ["overlap"]) for w in _lines(effects / f"{name}.started")]
    ends = [(float(w[0]), int(w[1])) for w in _lines(effects / f"{name}.finished")]
    return Trace(starts, ends)


# ----------------------------------------------------------------------------------- figures
@dataclasses.dataclass
class Figures:
    """What a scenario did (kills, takeovers) and what went wrong (the rest should be 0)."""

    kills: int = 0
    in_wave: int = 0  # kills that left tasks SUBMITTED with no job id: inside a launch wave
    recoveries: int = 0  # `runyard takeover` runs that drove the experiment on
    experiments: int = 0
    duplicates: int = 0  # executions beyond one per task
    lost: int = 0  # tasks that never finished an execution
    wrong_states: int = 0  # tasks that did not end SUCCEEDED
    overlaps: int = 0  # executions that started while another of the same task still lived
    problems: list[str] = dataclasses.field(default_factory=list)
    # (time, pid, whom): "driver", or the task whose runner it was
    killed: list[tuple[float, int, str]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.kills} kills ({self.in_wave} inside a launch wave), {self.recoveries} recoveries, "
            f"{self.experiments} experiments: {self.duplicates} duplicates, {self.lost} lost, "
            f"{self.wrong_states} wrong final states, {self.overlaps} overlapping executions"
        )


def check(exp: run.Experiment, effects: Path, names: Sequence[str], reruns: bool, figures: Figures) -> None:
    """Count into ``figures`` what went wrong with the ended experiment's tasks. ``reruns``:
    whether a task may have started more than once (its runner was killed: it is retried),
    never beside another execution of itself, and finished once."""
    figures.experiments += 1
    records = {t.id: t for t in exp.store.tasks(exp.experiment_id)}
    for name in names:
        rec, tr = records[name], trace(effects, name)
        runs = len(tr.ends) if reruns else max(len(tr.starts), len(tr.ends))
        wrong = []
        if rec.status is not State.SUCCEEDED:
            figures.wrong_states += 1
            wrong.append(f"ended {rec.status.value} ({rec.reason})")
        if not tr.ends:
            figures.lost += 1
            wrong.append("never finished an execution")
        if runs > 1:
            figures.duplicates += runs - 1
            wrong.append(f"ran {runs} times")
        overlaps = sum(o for _, _, o in tr.starts)
        if overlaps:
            figures.overlaps += overlaps
            wrong.append(f"{overlaps} executions started beside another one")
        if wrong:
            figures.problems.append(
                f"{exp.experiment_id} task {name}: {'; '.join(wrong)} (attempts {rec.attempts}, job "
                f"{rec.job_id})\n{story(exp, name, tr, figures.killed)}"
            )


def story(exp: run.Experiment, name: str, tr: Trace, killed: Sequence[tuple[float, int, str]]) -> str:
    """What happened to task ``name``, in time order: the drivers, the task's transitions,
    the kills, its executions; then its attempts' files (claims, runner logs)."""
    events = exp.store.events(exp.experiment_id)
    first = min((ts for _, _, ts, _, _ in events), default=0.0)
    lines = [(ts, f"{kind} {data}") for _, task, ts, kind, data in events if task in (None, name)]
    for t, pid, whom in killed:
        if t >= first and whom in ("driver", name):
            lines.append((t, f"KILLED the {'driver' if whom == 'driver' else 'runner'}, pid {pid}"))
    lines += [(t, f"execution pid {pid} starts{' (overlap)' if o else ''}") for t, pid, o in tr.starts]
    lines += [(t, f"execution pid {pid} finishes") for t, pid in tr.ends]
    out = [f"    {t:.3f} {text}" for t, text in sorted(lines)]
    task_dir = Path(exp.store.task_dir(exp.experiment_id, name))
    for attempt in sorted(task_dir.glob("attempt-*")):
        out.append(f"    {attempt.name}: {sorted(p.name for p in attempt.iterdir())}")
        for file in ("claim.json", "runner.log", "result.json"):
            if (attempt / file).exists():
                out.append(f"      {file}: {(attempt / file).read_text(errors='replace').strip()[-800:]}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ killing
def starttime(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def in_launch_wave(tasks: Sequence[TaskRecord]) -> bool:
    """A driver is launching some tasks: SUBMITTED, their job ids not recorded yet."""
    return any(t.status is State.SUBMITTED and t.job_id is None for t in tasks)


def ended(tasks: Sequence[TaskRecord]) -> bool:
    return bool(tasks) and all(t.status in FINAL_STATES for t in tasks)


class Watcher:
    """Reads the experiment's tasks every few milliseconds, from its own store connection
    (as fast as a launch wave goes), until ``condition`` holds for them."""

    def __init__(self, home: str, experiment_id: str) -> None:
        self.store = Store(home)
        self.experiment_id = experiment_id

    def tasks(self) -> list[TaskRecord]:
        return self.store.tasks(self.experiment_id)

    def until(
        self,
        condition: Callable[[list[TaskRecord]], bool],
        timeout: float,
        also: Callable[[], bool] = lambda: False,
    ) -> list[TaskRecord] | None:
        """The tasks once ``condition`` holds (or ``also()``), None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = self.tasks()
            if condition(tasks) or also():
                return tasks
            time.sleep(0.002)
        return None

    def hung(self, what: str) -> str:
        """``what`` did not happen: what the store and the supervisor's log say."""
        record = self.store.experiment(self.experiment_id)
        lines = [
            f"{self.experiment_id}: {what}; driver pid {record.driver_pid} ({record.driver_kind}, "
            f"alive: {record.driver_pid is not None and alive(record.driver_pid)}, heartbeat "
            f"{record.driver_heartbeat}, lease {record.driver_lease})",
            *(f"  {t.id} {t.status.value} attempt {t.attempts} job {t.job_id} {t.handle} {t.reason}"
              for t in self.tasks() if t.status not in FINAL_STATES),
        ]  # fmt: skip
        log = Path(self.store.experiment_dir(self.experiment_id), "supervisor.log")
        if log.exists():
            lines += ["supervisor.log:", *log.read_text(errors="replace").splitlines()[-20:]]
        return "\n".join(lines)

    def close(self) -> None:
        self.store.close()


def kill(pid: int) -> bool:
    """SIGKILL ``pid``; whether it was alive to be killed."""
    if not alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.002)
    return True


def kill_driver(
    watcher: Watcher,
    pid: Callable[[], int | None],
    rng: random.Random,
    figures: Figures,
    *,
    wave_delay: float,
    pause: float,
    begun: Callable[[list[TaskRecord]], bool] = bool,
) -> bool:
    """Kill the driver ``pid()`` (once it lives) at a random moment: two times in three inside
    a launch wave (as soon as a task is seen SUBMITTED with no job id, or up to ``wave_delay``
    seconds later, while the wave's processes are being started), else up to ``pause``
    seconds after ``begun`` holds. Whether a kill was made (not if the driver ended first)."""
    tasks = watcher.until(lambda ts: ended(ts) or _live(pid()) is not None, timeout=DRIVER_STARTS)
    assert tasks is not None, watcher.hung(f"no live driver after {DRIVER_STARTS} s")
    target = _live(pid())
    if target is None:
        return False
    gone = lambda: not alive(target)  # noqa: E731
    # tasks this driver changed: not those a killed one left SUBMITTED, until it recovers them
    rev = max((t.rev for t in tasks), default=0)
    new = lambda ts: [t for t in ts if t.rev > rev]  # noqa: E731
    if rng.random() < 2 / 3:
        seen = watcher.until(lambda ts: in_launch_wave(new(ts)), timeout=3.0, also=gone)
        if seen is not None and rng.random() < 0.7:  # waves last 2 to 200 ms: log-uniform
            time.sleep(math.exp(rng.uniform(math.log(0.001), math.log(wave_delay))))
    else:
        watcher.until(begun, timeout=HANG_GUARD, also=gone)
        time.sleep(rng.uniform(0, pause))
    if not kill(target):
        return False
    figures.kills += 1
    figures.killed.append((time.time(), target, "driver"))
    figures.in_wave += in_launch_wave(new(watcher.tasks()))  # the dead driver changes nothing now
    return True


def _live(pid: int | None) -> int | None:
    return pid if pid is not None and alive(pid) else None


def start_takeover(experiment_id: str) -> subprocess.Popen[str]:
    """`runyard takeover EXPERIMENT`: the CLI, in a new process (it returns once a new
    supervisor drives the experiment)."""
    return subprocess.Popen(
        [sys.executable, "-m", "runyard", "takeover", experiment_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def took_over(proc: subprocess.Popen[str], figures: Figures) -> None:
    """The takeover ended well; it may have found a live driver (a killed caller had just
    started a supervisor, which drives on)."""
    _, err = proc.communicate(timeout=HANG_GUARD)
    if proc.returncode == 0:
        figures.recoveries += 1
    else:
        assert "still driven by live pid" in err, err


def wait_for_end(watcher: Watcher) -> None:
    assert watcher.until(ended, timeout=HANG_GUARD) is not None, watcher.hung("not ended")
