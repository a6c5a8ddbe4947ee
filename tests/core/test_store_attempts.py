"""Attempts as records: each launch of a task opens one (``Store.attempts``), its job's
outcome closes it, and the task row describes its latest attempt only. Failure kinds: what
the transition rules give, or what the caller (a backend that knows) says."""

from __future__ import annotations

import pytest
from runyard.states import Event, State
from runyard.store import AttemptRecord, Settings, Store, TaskRecord, open_store

EXP, TASK = "exp-1", "train"


@pytest.fixture
def store(runyard_home: str) -> Store:
    store = open_store(runyard_home)
    store.create_experiment(EXP, "attempts", None, [], Settings(max_retries=1), {}, None)
    store.add_task(EXP, [(TASK, "{}", "{}", [], [])])
    return store


def task(store: Store) -> TaskRecord:
    record = store.task(EXP, TASK)
    assert record is not None
    return record


def attempt(number: int, status: State, **fields: object) -> AttemptRecord:
    values: dict = {"job_id": None, "start_time": None, "end_time": None, "exit_code": None, "reason": None,
                    "failure": None, **fields}  # fmt: skip
    return AttemptRecord(EXP, TASK, number, status, **values)


def launch(store: Store, number: int, job_id: str, at: float, to: State = State.RUNNING) -> None:
    """Attempt ``number`` launched (as the driver records it), its job ``job_id`` taken at ``at``."""
    assert store.transition(EXP, TASK, Event.LAUNCH, attempts=number, reason=None, job_id=None)
    assert store.transition(EXP, TASK, Event.LAUNCHED, to, attempt=number, job_id=job_id, start_time=at)


def test_a_failed_then_retried_task_has_both_attempts_and_shows_only_the_latest(store: Store) -> None:
    launch(store, 1, "job-1", at=10.0, to=State.SUBMITTED)
    store.transition(EXP, TASK, Event.START, attempt=1, start_time=11.0)
    store.transition(
        EXP, TASK, Event.RERUN, attempt=1, exit_code=2, start_time=11.0, end_time=12.0, job_id=None,
        reason="retrying (attempt 1 of 2 failed: exit code 2)", attempt_fields={"reason": "exit code 2"},
    )  # fmt: skip
    pending = task(store)
    assert (pending.status, pending.exit_code, pending.failure) == (State.PENDING, 2, None)

    launch(store, 2, "job-2", at=20.0)

    running = task(store)  # the second attempt runs: nothing of the first on the task
    assert (running.status, running.attempts, running.job_id) == (State.RUNNING, 2, "job-2")
    assert (running.start_time, running.end_time, running.exit_code, running.failure) == (
        20.0,
        None,
        None,
        None,
    )
    first = attempt(1, State.FAILED, job_id="job-1", start_time=11.0, end_time=12.0, exit_code=2,
                    reason="exit code 2", failure="error")  # fmt: skip
    assert store.attempts(EXP, TASK) == [first, attempt(2, State.RUNNING, job_id="job-2", start_time=20.0)]

    store.transition(EXP, TASK, Event.END, State.SUCCEEDED, attempt=2, exit_code=0, end_time=21.0)

    assert store.attempts(EXP, TASK) == [
        first,
        attempt(2, State.SUCCEEDED, job_id="job-2", start_time=20.0, end_time=21.0, exit_code=0),
    ]
    done = task(store)
    assert (done.status, done.start_time, done.end_time, done.exit_code, done.failure) == (
        State.SUCCEEDED, 20.0, 21.0, 0, None,
    )  # fmt: skip


def test_a_retry_keeps_the_attempts_and_the_next_launch_adds_one(store: Store) -> None:
    launch(store, 1, "job-1", at=10.0)
    store.transition(EXP, TASK, Event.END, State.FAILED, attempt=1, exit_code=1, end_time=11.0)
    ended = store.attempts(EXP, TASK)

    store.reset_tasks(EXP, [TASK])

    again = task(store)
    assert (again.status, again.attempts, again.exit_code, again.failure, again.end_time) == (
        State.PENDING, 1, None, None, None,
    )  # fmt: skip
    assert store.attempts(EXP, TASK) == ended
    launch(store, 2, "job-2", at=20.0)
    assert [(a.attempt, a.status) for a in store.attempts(EXP, TASK)] == [
        (1, State.FAILED),
        (2, State.RUNNING),
    ]


def test_a_relaunch_forgets_the_attempt_that_never_ran(store: Store) -> None:
    store.transition(EXP, TASK, Event.LAUNCH, attempts=1, reason=None, job_id=None)
    assert store.attempts(EXP, TASK) == [attempt(1, State.SUBMITTED)]

    store.transition(EXP, TASK, Event.RELAUNCH, attempt=1, attempts=0, reason="launch interrupted")

    assert store.attempts(EXP, TASK) == []
    launch(store, 1, "job-1", at=10.0)
    assert store.attempts(EXP, TASK) == [attempt(1, State.RUNNING, job_id="job-1", start_time=10.0)]


def test_cancelling_a_task_pending_between_attempts_leaves_the_closed_attempt_as_it_ended(
    store: Store,
) -> None:
    launch(store, 1, "job-1", at=10.0)
    store.transition(EXP, TASK, Event.RERUN, attempt=1, exit_code=3, end_time=11.0, job_id=None,
                     reason="retrying (attempt 1 of 2 failed: exit code 3)")  # fmt: skip
    closed = store.attempts(EXP, TASK)
    assert closed == [attempt(1, State.FAILED, job_id="job-1", start_time=10.0, end_time=11.0, exit_code=3,
                              reason="retrying (attempt 1 of 2 failed: exit code 3)", failure="error")]  # fmt: skip

    store.transition(EXP, TASK, Event.CANCEL, reason="cancelled by the user", end_time=12.0)

    assert store.attempts(EXP, TASK) == closed
    assert (task(store).status, task(store).failure) == (State.CANCELLED, "cancelled")


def test_an_uncancel_gives_the_attempt_its_live_job_back(store: Store) -> None:
    launch(store, 1, "job-1", at=10.0)
    store.transition(EXP, TASK, Event.CANCEL, reason="cancelled by the user", end_time=11.0)
    assert store.attempts(EXP, TASK) == [
        attempt(1, State.CANCELLED, job_id="job-1", start_time=10.0, end_time=11.0,
                reason="cancelled by the user", failure="cancelled"),
    ]  # fmt: skip

    store.transition(
        EXP, TASK, Event.UNCANCEL, State.RUNNING, reason="cancel failed: no route", end_time=None
    )

    assert store.attempts(EXP, TASK) == [
        attempt(1, State.RUNNING, job_id="job-1", start_time=10.0, reason="cancel failed: no route")
    ]
    assert (task(store).status, task(store).failure, task(store).end_time) == (State.RUNNING, None, None)


def test_pausing_and_resuming_a_job_moves_its_attempt_too(store: Store) -> None:
    launch(store, 1, "job-1", at=10.0)
    store.transition(EXP, TASK, Event.PAUSE, attempt=1, paused_from=State.RUNNING)
    assert store.attempts(EXP, TASK)[0].status is State.PAUSED
    store.transition(EXP, TASK, Event.RESUME, State.RUNNING, attempt=1, paused_from=None)
    assert store.attempts(EXP, TASK)[0].status is State.RUNNING


@pytest.mark.parametrize(
    ("event", "to", "fields", "failure"),
    [
        (Event.END, State.FAILED, {"exit_code": 3}, "error"),
        (Event.END, State.FAILED, {"exit_code": None}, "lost"),
        (Event.END, State.FAILED, {"exit_code": 137, "failure": "oom"}, "oom"),
        (Event.END, State.CANCELLED, {}, "cancelled"),
        (Event.END, State.SUCCEEDED, {"exit_code": 0}, None),
        (Event.TIMEOUT, State.FAILED, {"reason": "timeout"}, "timeout"),
        (Event.CANCEL, State.CANCELLED, {}, "cancelled"),
    ],
    ids=["exit-code", "no-exit-code", "backend-says-oom", "cancelled", "succeeded", "timeout", "cancel"],
)
def test_the_end_of_a_job_gives_its_attempt_and_task_their_failure_kind(
    store: Store, event: Event, to: State, fields: dict, failure: str | None
) -> None:
    launch(store, 1, "job-1", at=10.0)

    store.transition(EXP, TASK, event, to, attempt=1, end_time=11.0, **fields)

    (ended,) = store.attempts(EXP, TASK)
    assert (ended.status, ended.failure, ended.end_time) == (to, failure, 11.0)
    assert (task(store).status, task(store).failure) == (to, failure)


def test_a_re_run_records_the_attempt_failed_and_the_task_not(store: Store) -> None:
    launch(store, 1, "job-1", at=10.0)

    store.transition(EXP, TASK, Event.RERUN, attempt=1, exit_code=137, end_time=11.0, job_id=None,
                     reason="retrying (attempt 1 of 2 failed: OOM)",
                     attempt_fields={"reason": "OOM", "failure": "oom"})  # fmt: skip

    (ended,) = store.attempts(EXP, TASK)
    assert (ended.status, ended.failure, ended.reason, ended.job_id) == (State.FAILED, "oom", "OOM", "job-1")
    assert (task(store).status, task(store).failure) == (State.PENDING, None)


@pytest.mark.parametrize(("to", "failure"), [(State.PENDING, "error"), (State.FAILED, "error")])
def test_a_launch_the_backend_refused_closes_its_attempt(store: Store, to: State, failure: str) -> None:
    store.transition(EXP, TASK, Event.LAUNCH, attempts=1, reason=None, job_id=None)

    store.transition(EXP, TASK, Event.LAUNCH_FAILED, to, attempt=1, reason="launch failed: no", end_time=5.0)

    assert store.attempts(EXP, TASK) == [attempt(1, State.FAILED, end_time=5.0, reason="launch failed: no",
                                                 failure=failure)]  # fmt: skip
    assert task(store).failure == (failure if to is State.FAILED else None)


@pytest.mark.parametrize(
    ("event", "reason", "failure"),
    [(Event.NEVER_RUNS, "dependency failed", "dependency"), (Event.EXPIRE, "timeout", "timeout")],
)
def test_a_task_that_never_runs_has_a_failure_and_no_attempt(
    store: Store, event: Event, reason: str, failure: str
) -> None:
    store.transition(EXP, TASK, event, reason=reason, end_time=5.0)

    assert (task(store).status, task(store).failure) == (State.CANCELLED, failure)
    assert store.attempts(EXP, TASK) == []


def test_a_task_that_never_launched_has_no_attempts(store: Store) -> None:
    assert store.attempts(EXP, TASK) == []
    assert store.attempts(EXP, "no-such-task") == []


def test_a_job_the_backend_requeued_ends_its_attempt_and_runs_the_next_on_the_same_job(store: Store) -> None:
    launch(store, 1, "job-7", at=10.0)
    assert store.transition(
        EXP, TASK, Event.REQUEUE, State.SUBMITTED, attempt=1, attempts=2,
        attempt_fields={"failure": "node_failure", "reason": "requeued by the backend (node_failure)",
                        "end_time": 15.0},
    )  # fmt: skip
    first, second = store.attempts(EXP, TASK)
    assert first == attempt(1, State.FAILED, job_id="job-7", start_time=10.0, end_time=15.0,
                            failure="node_failure", reason="requeued by the backend (node_failure)")  # fmt: skip
    assert second == attempt(2, State.SUBMITTED, job_id="job-7")
    now = task(store)
    assert (now.status, now.attempts, now.job_id, now.start_time, now.failure) == (
        State.SUBMITTED, 2, "job-7", None, None,
    )  # fmt: skip
    # the default failure kind of a requeue is a preemption
    store.transition(EXP, TASK, Event.REQUEUE, State.RUNNING, attempt=2, attempts=3, start_time=30.0)
    assert [(a.status, a.failure) for a in store.attempts(EXP, TASK)] == [
        (State.FAILED, "node_failure"), (State.FAILED, "preempted"), (State.RUNNING, None),
    ]  # fmt: skip
