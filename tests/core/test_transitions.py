"""The table of state transitions (``states.TRANSITIONS``), walked: every event from every state
through ``Store.transition``, which moves a task only from the event's from-states, only to
one of its to-states, in one transaction with its state event."""

from __future__ import annotations

import itertools
import sqlite3

import pytest
from runyard.states import FAILURES, FINAL_STATES, TASK_STATES, TRANSITIONS, Event, State, check_transition
from runyard.store import Lease, LeaseLostError, Settings, Store, TaskRecord, open_store

EXP, TASK = "exp-1", "train"
ATTEMPTS = 1  # the task has run one attempt, as job "job-1"

# what the callers give with the event (LAUNCH opens an attempt: its number)
GIVEN = {
    Event.LAUNCH: {"attempts": ATTEMPTS + 1},
    Event.REQUEUE: {"attempts": ATTEMPTS + 1},
    Event.RELAUNCH: {"attempts": ATTEMPTS - 1},
}
CASES = [(e, s) for e in Event for s in TASK_STATES]


@pytest.fixture
def store(runyard_home: str) -> Store:
    store = open_store(runyard_home)
    store.create_experiment(EXP, "walk", None, [], Settings(), {}, None)
    store.add_task(EXP, [(TASK, "{}", "{}", [], [])])
    return store


def put(store: Store, state: State) -> TaskRecord:
    """The task in ``state`` (written with SQL, as if it got there): attempt 1, job "job-1"."""
    with sqlite3.connect(store.path) as db:
        db.execute(
            "UPDATE tasks SET status = ?, paused_from = ?, attempts = ?, job_id = 'job-1'"
            " WHERE experiment_id = ? AND id = ?",
            (state.value, State.RUNNING.value if state is State.PAUSED else None, ATTEMPTS, EXP, TASK),
        )
    db.close()
    record = store.task(EXP, TASK)
    assert record is not None and record.status is state
    return record


@pytest.mark.parametrize(("event", "state"), CASES, ids=[f"{e.value}-from-{s.value}" for e, s in CASES])
def test_an_event_moves_a_task_only_from_its_from_states_to_its_to_states(
    store: Store, event: Event, state: State
) -> None:
    rule = TRANSITIONS[event]
    for to in sorted(rule.targets):
        before = put(store, state)
        events = len(store.events(EXP))

        previous = store.transition(EXP, TASK, event, to, **GIVEN.get(event, {}))

        after = store.task(EXP, TASK)
        assert after is not None
        if state in rule.sources:
            assert previous is state
            assert after.status is to
            *_, (_, task_id, _, kind, data) = store.events(EXP)
            assert (task_id, kind) == (TASK, "state")
            assert data == {"event": event.value, "from": state.value, "to": to.value, "reason": None,
                            "attempt": after.attempts}  # fmt: skip
        else:
            assert previous is None
            assert after == before  # nothing changed, no event written
            assert len(store.events(EXP)) == events


@pytest.mark.parametrize("event", list(Event), ids=[e.value for e in Event])
def test_a_to_state_the_event_cannot_lead_to_is_refused_and_changes_nothing(
    store: Store, event: Event
) -> None:
    rule = TRANSITIONS[event]
    for to in sorted(set(State) - rule.targets):
        with pytest.raises(ValueError, match=f"event {event.value} cannot lead to {to.value}"):
            check_transition(event, to)
        for state in rule.sources:
            before = put(store, state)
            with pytest.raises(ValueError, match=f"cannot lead to {to.value}"):
                store.transition(EXP, TASK, event, to, **GIVEN.get(event, {}))
            assert store.task(EXP, TASK) == before


@pytest.mark.parametrize("event", [e for e in Event if len(TRANSITIONS[e].targets) > 1])
def test_an_event_with_several_to_states_must_be_told_which(store: Store, event: Event) -> None:
    with pytest.raises(ValueError, match="say which"):
        store.transition(EXP, TASK, event, **GIVEN.get(event, {}))


def test_a_transition_at_another_attempt_changes_nothing(store: Store) -> None:
    before = put(store, State.RUNNING)
    assert store.transition(EXP, TASK, Event.END, State.SUCCEEDED, attempt=ATTEMPTS + 1) is None
    assert store.task(EXP, TASK) == before
    assert store.transition(EXP, TASK, Event.END, State.SUCCEEDED, attempt=ATTEMPTS) is State.RUNNING


def test_a_driver_that_lost_its_lease_can_change_nothing(store: Store) -> None:
    first = store.claim_driver(EXP, 111, "supervisor", stale_after=60.0)
    second = store.claim_driver(EXP, 222, "supervisor", stale_after=0.0)
    assert first is not None and second is not None
    before = put(store, State.RUNNING)

    with pytest.raises(LeaseLostError, match="no longer drives"):
        store.transition(EXP, TASK, Event.END, State.SUCCEEDED, lease=Lease(111, first))
    assert store.task(EXP, TASK) == before
    assert store.transition(EXP, TASK, Event.END, State.SUCCEEDED, lease=Lease(222, second)) is State.RUNNING


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda s: s.transition(EXP, TASK, Event.LAUNCH), "say its number"),
        (lambda s: s.transition(EXP, TASK, Event.HOLD, colour="red"), "tasks has no column 'colour'"),
        (lambda s: s.transition(EXP, TASK, Event.HOLD, status=State.FAILED), "the store's to set"),
        (lambda s: s.transition(EXP, TASK, Event.CANCEL, failure="bored"), "failure must be one of"),
        (
            lambda s: s.transition(EXP, TASK, Event.RERUN, attempt_fields={"rev": 1}),
            "attempt_fields may hold",
        ),
    ],
    ids=["launch-without-number", "not-a-column", "status", "unknown-failure", "attempt-field"],
)
def test_a_call_that_makes_no_sense_is_refused_before_anything_changes(store: Store, call, says: str) -> None:
    before = put(store, State.RUNNING)
    with pytest.raises(ValueError, match=says):
        call(store)
    assert store.task(EXP, TASK) == before


# ------------------------------------------------------------------------------ the table
def test_every_event_has_a_rule_with_known_states_and_failure_kinds() -> None:
    assert set(TRANSITIONS) == set(Event)
    for rule in TRANSITIONS.values():
        assert rule.sources and rule.targets
        assert rule.attempt in ("open", "next", "drop", "update", None)
        assert rule.failure in (*FAILURES, "*", None)


def test_every_unfinished_state_can_reach_a_final_state() -> None:
    edges = {
        (s, t) for rule in TRANSITIONS.values() for s, t in itertools.product(rule.sources, rule.targets)
    }
    reached = set(FINAL_STATES)
    while grown := {s for s, t in edges if t in reached} - reached:
        reached |= grown
    assert reached == set(TASK_STATES)


def test_only_retry_and_uncancel_leave_a_final_state() -> None:
    leaving = {
        e for e, rule in TRANSITIONS.items() if rule.sources & FINAL_STATES and rule.targets - FINAL_STATES
    }
    assert leaving == {Event.RETRY, Event.UNCANCEL}
    assert TRANSITIONS[Event.RETRY].targets == {State.PENDING}
    # the one event that starts from a final state and stays there only notes that a cancelled
    # task's job is still to be ended (its backend was unreachable)
    staying = {e for e, rule in TRANSITIONS.items() if rule.sources & FINAL_STATES} - leaving
    assert staying == {Event.CANCEL_PENDING}
    assert (
        TRANSITIONS[Event.CANCEL_PENDING].targets
        == {State.CANCELLED}
        == TRANSITIONS[Event.CANCEL_PENDING].sources
    )


def test_only_launch_opens_an_attempt_and_only_from_pending() -> None:
    opening = [e for e, rule in TRANSITIONS.items() if rule.attempt == "open"]
    assert opening == [Event.LAUNCH]
    assert TRANSITIONS[Event.LAUNCH].sources == {State.PENDING}


def test_an_event_that_ends_a_task_gives_it_a_failure_kind_unless_the_caller_says_it() -> None:
    """Failure kinds come from the rule (END: "*", told apart by the outcome) for every event
    that can end a task unsuccessfully."""
    for event, rule in TRANSITIONS.items():
        if rule.targets & {State.FAILED, State.CANCELLED} and not rule.sources <= FINAL_STATES:
            assert rule.failure is not None, event
