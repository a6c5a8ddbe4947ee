"""``NiceExecutor``: what the user configures (and what runyard stores)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import attrs
from runyard.errors import ConfigError
from runyard_local.executor import LocalExecutor


def _check_niceness(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not -20 <= value <= 19:
        raise ConfigError(f"NiceExecutor.niceness must be a whole number from -20 to 19, got {value!r}")


def _check_cpus(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not (
        isinstance(value, str) and re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", value)
    ):
        raise ConfigError(f"NiceExecutor.cpus must be a CPU list such as '0', '0-3' or '0,2', got {value!r}")


@attrs.define
class NiceExecutor(LocalExecutor):
    """Run each task as a local process group, through ``nice`` (and ``taskset``).

    Everything ``LocalExecutor`` does holds (cancel, pause, resume, ``env_vars``,
    ``python``, ``cancel_grace``), plus:

    :param niceness: added to the niceness of the process that launches the task, as
        ``nice -n`` does (-20 to 19; below 0 needs privileges).
    :param cpus: a CPU list for ``taskset -c`` (``"0"``, ``"0-3"``, ``"0,2"``), or None
        for every CPU.
    """

    kind: ClassVar[str] = "nice"

    niceness: int = attrs.field(default=10, validator=_check_niceness, kw_only=True)
    cpus: str | None = attrs.field(default=None, validator=_check_cpus, kw_only=True)

    def describe(self) -> str:
        return f"nice {self.niceness}" + (f" cpus {self.cpus}" if self.cpus is not None else "")
