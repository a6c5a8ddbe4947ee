"""The local executor when things go wrong, with real processes: runners killed, cancels whose
caller dies, tasks that leave processes behind, too few file descriptors, attempts claimed
by another launch (issue 8). A task's whole tree is its runner's session."""

from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import runyard as run
from _local_helpers import Start, alive, ref, session, stat, task
from helpers import until
from runyard.errors import BackendError
from runyard.executor import JobRef, JobSpec, Launched
from runyard.jobfiles import CLAIM, read_local_claim, runner_command
from runyard_local.backend import LocalBackend


def _q(path: Path) -> str:
    return shlex.quote(str(path))


def _spec(experiment_dir: Path, argv: list[str], launch: str | None = None) -> JobSpec:
    """Attempt 1 of a Script job running ``argv`` (task ``task`` of an experiment kept in
    ``experiment_dir``), launched as ``launch``."""
    env = {"RUNYARD_LAUNCH_ID": launch} if launch else {}
    return JobSpec(
        experiment_id="exp", task_id="task", attempt=1, experiment_dir=str(experiment_dir),
        executor=run.LocalExecutor(), is_script=True, argv=argv, env=env,
    )  # fmt: skip


def _job(spec: JobSpec, launched: Launched) -> JobRef:
    return spec.ref(launched.job_id, launched.handle)


def _by_hand(spec: JobSpec, launch: str) -> subprocess.Popen[bytes]:
    """A runner for the attempt of ``spec`` started by hand as ``launch``, not through the backend."""
    return subprocess.Popen(
        runner_command(spec, python=sys.executable),
        env={**os.environ, "RUNYARD_LAUNCH_ID": launch}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def sessions() -> Iterator[list[int]]:
    """Session ids whose processes are SIGKILLed after the test."""
    sids: list[int] = []
    yield sids

    def killed_all() -> bool:  # again until none is left: one may be forking as we kill
        members = [pid for sid in sids for pid in session(sid)]
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not members

    until(killed_all, "the test's processes to end")


# ------------------------------------------------------------------------------ runner killed
def test_killing_a_script_tasks_runner_ends_the_script_before_its_retry_starts(
    start: Start, tmp_path: Path, sessions: list[int]
) -> None:
    """Attempt 2 looks at attempt 1's processes as it starts: none may be running then."""
    pids, seen = tmp_path / "attempt-1.pids", tmp_path / "seen"
    script = run.Script(
        inline=f"""if [ "$RUNYARD_ATTEMPT" = 1 ]; then
  sleep 600 & echo "$$ $!" > {_q(pids)}; wait
else
  for p in $(cat {_q(pids)}); do echo "$p $(cut -d' ' -f3 /proc/$p/stat 2>/dev/null || echo gone)"; done > {_q(seen)}
fi"""
    )
    exp, task_id = start(script, ready=pids, max_retries=1)
    runner = int(task(exp, task_id).job_id)
    sessions.append(runner)
    assert all(alive(int(p)) for p in pids.read_text().split())

    os.kill(runner, signal.SIGKILL)

    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert task(exp, task_id).attempts == 2
    states = dict(line.split() for line in seen.read_text().splitlines())
    assert len(states) == 2
    assert set(states.values()) <= {"gone", "Z"}, f"attempt 1's processes ran beside attempt 2: {states}"


def test_a_runner_killed_by_a_signal_is_lost_with_that_signal_in_the_reason_and_its_task_ends(
    tmp_path: Path, sessions: list[int]
) -> None:
    backend = LocalBackend()
    spec = _spec(tmp_path, ["sleep", "600"])
    job = _job(spec, backend.launch(spec))
    runner = int(job.job_id)
    sessions.append(runner)
    until(lambda: len(session(runner)) > 1, "the task to start")

    os.kill(runner, signal.SIGKILL)
    until(lambda: not alive(runner), "the runner to die")
    status = backend.poll([job])[job.job_id]

    assert status.state == "FAILED"
    assert status.reason == "lost: the runner was killed by signal 9 (SIGKILL) before the task ended"
    assert not session(runner)


# ------------------------------------------------------------------------------ cancel
def test_a_cancel_ends_a_task_ignoring_sigterm_though_the_cancelling_cli_is_killed_right_after(
    start: Start, tmp_path: Path, sessions: list[int]
) -> None:
    """``runyard cancel`` returns at once; the SIGKILL after the grace comes from the runner."""
    ready = tmp_path / "ready"
    stubborn = run.Script(inline=f"trap '' TERM; echo $$ > {_q(ready)}; while :; do sleep 0.1; done")
    exp, task_id = start(stubborn, executor=run.LocalExecutor(cancel_grace=2), ready=ready)
    runner = int(task(exp, task_id).job_id)
    sessions.append(runner)
    cli = subprocess.Popen(
        [sys.executable, "-m", "runyard", "cancel", exp.id, task_id],
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert cli.stdout is not None
    said = cli.stdout.readline()
    cli.kill()  # as soon as it has said it cancelled: nothing of it may be needed after that
    _, err = cli.communicate()
    assert said == f"cancelled {task_id}\n".encode(), err

    assert task(exp, task_id).status == "CANCELLED"
    until(lambda: not session(runner), "every process of the cancelled task to end", timeout=60)


@pytest.mark.parametrize("kind", ["python", "script"])
def test_cancelling_a_task_ends_the_process_groups_it_started_besides_its_own(
    kind: str, start: Start, tmp_path: Path, sessions: list[int]
) -> None:
    """Job control (``set -m``) gives each background job a group of its own in the task's
    session: the runner's forwarded TERM and SIGKILL reach the task's group only, so the
    runner ends the rest of its session itself when the attempt was cancelled."""
    ready = tmp_path / "ready"
    code = f"set -m; sleep 600 & sleep 600 & echo $! > {_q(ready)}; wait"
    task_ = (
        run.Script(inline=code)
        if kind == "script"
        else run.Config(subprocess.check_call, ["bash", "-c", code])
    )
    exp, task_id = start(task_, executor=run.LocalExecutor(cancel_grace=1), ready=ready)
    runner = int(task(exp, task_id).job_id)
    sessions.append(runner)
    groups = {group for group, _ in session(runner).values()}
    assert len(groups) >= 3, session(runner)  # the runner's, the task's, and the job's own

    exp.cancel(task_id)

    until(lambda: not session(runner), "every process group of the cancelled task to end", timeout=30)


# ------------------------------------------------------------------------------ leftovers
def _leave_children(pids: Path) -> str:
    """Shell code that starts two children that outlive it, one in its process group and one
    in a group of its own (job control), and records their pids."""
    return (
        f"sleep 600 >/dev/null 2>&1 & echo $! > {_q(pids)}.same;"
        f" set -m; sleep 600 >/dev/null 2>&1 & echo $! > {_q(pids)}.own"
    )


@pytest.mark.parametrize("kind", ["python", "script"])
def test_no_process_of_a_finished_task_remains_once_it_is_recorded(
    kind: str, tmp_path: Path, sessions: list[int]
) -> None:
    pids = tmp_path / "children"
    code = _leave_children(pids)
    leaves = (
        run.Script(inline=code)
        if kind == "script"
        else run.Config(subprocess.check_call, ["bash", "-c", code])
    )
    exp = run.Experiment("leftovers", timeout=120)
    task_id = exp.add(leaves)

    assert exp.run() == "SUCCEEDED"

    runner = int(task(exp, task_id).job_id)
    sessions.append(runner)
    children = [int(Path(f"{pids}.{which}").read_text()) for which in ("same", "own")]
    assert not session(runner), f"left behind: {session(runner)} (the task's children were {children})"


# ------------------------------------------------------------------------------ file descriptors
_MANY_TASKS = """
import json, resource, shlex, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
import runyard as run
here = shlex.quote(sys.argv[1])
# each task waits (up to 2 minutes) until all 260 run at once: their runners all live together
together = f"touch {here}/$$; for i in $(seq 120); do [ $(ls {here} | wc -l) -ge 260 ] && break; sleep 1; done"
exp = run.Experiment("many")
for i in range(260):
    exp.add(run.Script(inline=f"{together}; [ $(ls {here} | wc -l) -ge 260 ] && echo ok"))
exp.run()
print(json.dumps(exp.id))
"""


@pytest.mark.slow
def test_260_parallel_tasks_all_succeed_when_only_256_files_may_be_open(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _MANY_TASKS, str(tmp_path)], capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    exp = run.Experiment.from_id(json.loads(done.stdout.splitlines()[-1]))
    states = {t.id: (t.status, t.reason) for t in exp.tasks}
    assert len(states) == 260
    failed = {k: v for k, v in states.items() if v[0] != "SUCCEEDED"}
    assert not failed, f"{len(failed)} tasks did not succeed, e.g. {next(iter(failed.values()))}"
    assert all(exp.get_logs(t).stdout == "ok\n" for t in list(states)[:5])


def _exhaust_files() -> list[int]:
    """Open files until no more may be: the caller closes them."""
    fds = []
    try:
        while True:
            fds.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return fds


@pytest.fixture
def few_files() -> Iterator[int]:
    """This process may open a few hundred files at most (restored after the test)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = min(soft, 128)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    yield limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_poll_that_cannot_open_files_is_no_answer_never_a_lost_task(
    tmp_path: Path, sessions: list[int], few_files: int
) -> None:
    backend = LocalBackend()
    spec = _spec(tmp_path, ["sleep", "600"])
    job = _job(spec, backend.launch(spec))
    sessions.append(int(job.job_id))
    until(lambda: len(session(int(job.job_id))) > 1, "the task to start")
    fds = _exhaust_files()
    try:
        with pytest.raises(BackendError, match="Too many open files"):
            backend.poll([job])
    finally:
        for fd in fds:
            os.close(fd)
    assert backend.poll([job])[job.job_id].state == "RUNNING"


def test_pidfds_take_at_most_a_quarter_of_the_open_file_limit_and_the_rest_are_polled_often(
    tmp_path: Path, sessions: list[int], few_files: int
) -> None:
    backend = LocalBackend()
    jobs = []
    for i in range(few_files // 4 + 3):
        spec = _spec(tmp_path / str(i), ["sleep", "600"])
        jobs.append(_job(spec, backend.launch(spec)))
        sessions.append(int(jobs[-1].job_id))

    fds = backend.wakeup_fds(jobs)

    assert len(fds) == few_files // 4
    assert backend.poll_interval() < 1.0
    assert len(backend.wakeup_fds(jobs[:2])) == 2  # the fds of jobs no longer asked for are closed
    assert backend.poll_interval() == 1.0


# ------------------------------------------------------------------------------ claims
def test_adopt_finds_the_runner_that_claimed_the_attempt_on_this_machine(
    tmp_path: Path, sessions: list[int]
) -> None:
    spec = _spec(tmp_path / "task", ["sleep", "600"])
    backend = LocalBackend()
    assert backend.adopt(spec) is None  # nothing claimed it yet

    runner = _by_hand(spec, "by-hand")
    sessions.append(runner.pid)
    until(lambda: read_local_claim(spec.attempt_dir), "the runner's claim")
    launched = backend.adopt(spec)

    assert launched is not None
    assert launched.job_id == str(runner.pid)
    st = stat(runner.pid)
    assert st is not None
    assert launched.handle == {"pid": runner.pid, "starttime": st[3], "host": socket.gethostname(),
                               "launch": "by-hand"}  # fmt: skip
    assert backend.poll([_job(spec, launched)])[launched.job_id].state == "RUNNING"

    elsewhere = _spec(tmp_path / "other", ["true"])
    os.makedirs(elsewhere.attempt_dir)
    claim = {"launch": "x", "pid": runner.pid, "starttime": st[3], "host": "another-machine"}
    Path(elsewhere.attempt_dir, CLAIM).write_text(json.dumps(claim))
    assert backend.adopt(elsewhere) is None  # a claim from another machine: not ours to find


def test_a_job_whose_attempt_another_launch_claimed_is_reported_with_that_claim(
    tmp_path: Path, sessions: list[int]
) -> None:
    spec = _spec(tmp_path, ["sleep", "600"], launch="second")
    first = _by_hand(spec, "first")
    sessions.append(first.pid)
    until(lambda: read_local_claim(spec.attempt_dir), "the first runner's claim")
    backend = LocalBackend()
    job = _job(spec, backend.launch(spec))
    until(lambda: not alive(int(job.job_id)), "the second runner to exit")

    status = backend.poll([job])[job.job_id]

    assert status.state == "RUNNING"
    assert status.claim is not None
    assert (status.claim["launch"], status.claim["pid"]) == ("first", first.pid)
    assert alive(first.pid)


def test_a_task_recorded_by_the_store_is_found_again_from_its_claim(
    start: Start, sessions: list[int]
) -> None:
    """What core does after a driver died between launching a job and recording its id."""
    exp, task_id = start(run.Script(inline="sleep 600"))
    job = ref(exp, task_id)
    sessions.append(int(job.job_id))
    spec = JobSpec(
        experiment_id=exp.id, task_id=task_id, attempt=job.attempt, experiment_dir=job.experiment_dir,
        executor=run.LocalExecutor(), is_script=True, argv=[], env={},
    )  # fmt: skip
    until(lambda: read_local_claim(spec.attempt_dir), "the runner's claim")

    launched = LocalBackend().adopt(spec)

    assert launched is not None
    assert (launched.job_id, launched.handle["starttime"]) == (job.job_id, job.handle["starttime"])
