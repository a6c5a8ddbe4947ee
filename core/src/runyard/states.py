"""Task and experiment states."""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    """A task's or an experiment's state. Equal to its name: ``State.FAILED == "FAILED"``."""

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
