"""Task and experiment states."""

from __future__ import annotations

import enum
from typing import Any

import attrs


class State(str, enum.Enum):
    """A task's or an experiment's state. Equal to its name: ``State.FAILED == "FAILED"``."""

    CREATED = "CREATED"  # an experiment's only: never launched (its tasks are PENDING)
    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __repr__(self) -> str:
        return f"State.{self.value}"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_live(self) -> bool:
        """Launched on a backend and not ended."""
        return self in LIVE_STATES


FINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
LIVE_STATES = frozenset({State.SUBMITTED, State.RUNNING, State.PAUSED})

# Order used to report the "most advanced live state" of an experiment.
#: the states a task can be in (CREATED is an experiment's only)
TASK_STATES = tuple(s for s in State if s is not State.CREATED)
_PROGRESS = {State.PENDING: 0, State.PAUSED: 1, State.SUBMITTED: 2, State.RUNNING: 3}


def experiment_state(task_states: list[State]) -> State:
    """The experiment's state from its tasks' states (see docs/user-guide.md, "States")."""
    if all(s.is_final for s in task_states):
        if all(s is State.SUCCEEDED for s in task_states):
            return State.SUCCEEDED
        return State.FAILED
    live = max((s for s in task_states if not s.is_final), key=_PROGRESS.__getitem__)
    if live in (State.PENDING, State.SUBMITTED) and any(s.is_final for s in task_states):
        return State.RUNNING  # some tasks have ended, the rest wait their turn: under way
    return live


# --------------------------------------------------------------------------- transitions
class Event(str, enum.Enum):
    """What moves a task from one state to another: every transition in core is one of these
    (``Store.transition(..., event)``), checked against :data:`TRANSITIONS`."""

    LAUNCH = "launch"  # the driver takes a PENDING task to launch its next attempt
    LAUNCHED = "launched"  # the backend took the job (or a new driver found it running: adopt)
    LAUNCH_FAILED = "launch_failed"  # the backend refused it: re-run (retries left) or failed
    RELAUNCH = "relaunch"  # a dead driver's launch, never recorded: the same attempt again
    FOLLOW = "follow"  # another launch's job runs the attempt: the task follows that job
    START = "start"  # a queued job started running
    END = "end"  # the job ended: its outcome
    RERUN = "rerun"  # the attempt failed and retries are left: back to PENDING for the next
    TIMEOUT = "timeout"  # a job ran past the experiment's timeout
    EXPIRE = "expire"  # the timeout came before the task ran
    NEVER_RUNS = "never_runs"  # a dependency failed, is missing, or the dependencies form a cycle
    CANCEL = "cancel"  # a user (or Ctrl+C) cancelled it
    UNCANCEL = "uncancel"  # the backend could not end the job: the cancel is taken back
    HOLD = "hold"  # pause() of a PENDING task
    RELEASE = "release"  # resume() of a held task
    PAUSE = "pause"  # pause() of a running job
    RESUME = "resume"  # resume() of a paused job
    RETRY = "retry"  # retry() of an ended task
    REQUEUE = "requeue"  # the backend runs the job again by itself: the attempt ends, a new one starts
    CANCEL_PENDING = "cancel_pending"  # a cancelled task's job is still to be ended (backend unreachable)

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class Transition:
    """One event's rule: the states it may start from and those it may lead to.

    ``attempt`` says what the event does to the record of the task's current attempt:
    ``"open"`` starts a new one, ``"next"`` ends it (FAILED, with the failure kind given) and
    starts the next on the same job, ``"drop"`` forgets it (it never ran: it runs again under the
    same number), ``"update"`` carries the task's new state and fields into it (an attempt
    that ends in PENDING, a re-run, is recorded FAILED), None leaves it alone.
    ``failure`` is the failure kind the event gives the task (``"*"``: the caller says).
    """

    sources: frozenset[State]
    targets: frozenset[State]
    attempt: str | None = None
    failure: str | None = None


def _t(sources: Any, targets: Any, attempt: str | None = None, failure: str | None = None) -> Transition:
    return Transition(frozenset(sources), frozenset(targets), attempt, failure)


_S, _R, _P = State.SUBMITTED, State.RUNNING, State.PAUSED
_WAITING = (State.PENDING, State.PAUSED)  # not launched (PAUSED: held), or between two attempts
_UNENDED = (State.PENDING, _S, _R, _P)

TRANSITIONS: dict[Event, Transition] = {
    Event.LAUNCH: _t([State.PENDING], [_S], "open"),
    Event.LAUNCHED: _t([_S], [_S, _R], "update"),
    Event.LAUNCH_FAILED: _t([_S], [State.PENDING, State.FAILED], "update", "error"),
    Event.RELAUNCH: _t([_S], [State.PENDING], "drop"),
    Event.FOLLOW: _t(LIVE_STATES, LIVE_STATES, "update"),
    Event.START: _t([_S], [_R], "update"),
    Event.END: _t(LIVE_STATES, FINAL_STATES, "update", "*"),
    Event.RERUN: _t(LIVE_STATES, [State.PENDING], "update", "error"),
    Event.TIMEOUT: _t(LIVE_STATES, [State.FAILED], "update", "timeout"),
    Event.EXPIRE: _t([*_WAITING, _S], [State.CANCELLED], "update", "timeout"),
    Event.NEVER_RUNS: _t(_WAITING, [State.CANCELLED], None, "dependency"),
    Event.CANCEL: _t(_UNENDED, [State.CANCELLED], "update", "cancelled"),
    Event.UNCANCEL: _t([State.CANCELLED], _UNENDED, "update"),
    Event.HOLD: _t([State.PENDING], [_P]),
    Event.RELEASE: _t([_P], [State.PENDING]),
    Event.PAUSE: _t([_S, _R], [_P], "update"),
    Event.RESUME: _t([_P], [_S, _R], "update"),
    Event.RETRY: _t(FINAL_STATES, [State.PENDING]),
    Event.REQUEUE: _t(LIVE_STATES, [_S, _R], "next", "preempted"),
    Event.CANCEL_PENDING: _t([State.CANCELLED], [State.CANCELLED], None, "cancelled"),
}


def check_transition(event: Event, to: State | None = None) -> tuple[frozenset[State], State]:
    """The states ``event`` may start from, and the state it leads to: ``to``, which must be
    one of the event's targets (it may be left out when there is only one)."""
    rule = TRANSITIONS[Event(event)]
    if to is None:
        if len(rule.targets) != 1:
            raise ValueError(f"event {event} leads to one of {sorted(rule.targets)}: say which")
        (to,) = rule.targets
    elif to not in rule.targets:
        raise ValueError(f"event {event} cannot lead to {to} (only to {', '.join(sorted(rule.targets))})")
    return rule.sources, State(to)


# The kinds of failure an attempt (and a task, of its latest attempt) may have (docs/user-guide.md)
FAILURES = ("error", "oom", "timeout", "preempted", "node_failure", "lost", "cancelled", "dependency")
#: the kinds an attempt can end with and be run again (``Experiment(retry_on=...)``); a cancel, a
#: dependency that failed or the experiment's own timeout are decisions, not accidents
RETRYABLE = ("error", "oom", "timeout", "preempted", "node_failure", "lost")
#: the failure kinds that ``max_retries`` re-runs by default (``"preempted"`` always is, uncounted)
RETRY_ON = ("error", "oom", "lost", "node_failure")
