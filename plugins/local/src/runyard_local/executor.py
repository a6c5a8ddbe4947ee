"""``LocalExecutor``: what the user configures."""

from __future__ import annotations

from typing import ClassVar

import attrs
from runyard.errors import ConfigError
from runyard.executor import Executor


def _check_grace(instance: LocalExecutor, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"LocalExecutor.{attribute.name} must be a number of seconds >= 0, got {value!r}")


@attrs.define
class LocalExecutor(Executor):
    """Run each task as its own process group on this machine.

    :param env_vars: variables added to the task's environment (over this process's).
    :param python: interpreter for Python tasks; default: the one running runyard
        (``sys.executable``), never whatever ``python`` is on PATH.
    :param cancel_grace: seconds between SIGTERM and SIGKILL when a task is cancelled.
    """

    kind: ClassVar[str] = "local"

    python: str | None = None
    cancel_grace: float = attrs.field(default=5.0, validator=_check_grace)

    def describe(self) -> str:
        return "local"
