"""Hook implementations of runyard-mixed-precision (entry point ``runyard.plugins: mixed-precision``).

Installed, the plugin applies :class:`~runyard_mixed_precision.plugin.MixedPrecisionPlugin`
to every task added to any experiment, but only where ``RUNYARD_MIXED_PRECISION`` is set:

- unset, empty or ``0``: nothing happens (the default);
- ``1``: precision ``bf16-mixed``;
- a precision name (``bf16-mixed``, ``16-mixed``, ...): that precision.

Tasks whose targets take no ``precision`` get the environment variables only, without a
warning. ``plugins=[...]`` objects passed to ``add()`` run after this hook, so
``run.MixedPrecisionPlugin(precision=...)`` on one task overrides the variable's choice.
This module imports nothing but core's hook marker until it is switched on.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from runyard.hookspecs import hookimpl

if TYPE_CHECKING:
    from runyard.registries import TaskSpec

ENV = "RUNYARD_MIXED_PRECISION"


def precision_from_env() -> str | None:
    """The precision ``RUNYARD_MIXED_PRECISION`` asks for, or None when it is off."""
    value = os.environ.get(ENV, "").strip()
    if value in ("", "0"):
        return None
    if value == "1":
        from runyard_mixed_precision.plugin import DEFAULT_PRECISION

        return DEFAULT_PRECISION
    return value


@hookimpl
def runyard_modify_task(spec: TaskSpec) -> None:
    precision = precision_from_env()
    if precision is None:
        return
    from runyard.errors import ConfigError

    from runyard_mixed_precision.plugin import MixedPrecisionPlugin

    try:
        plugin = MixedPrecisionPlugin(precision, warn_if_unused=False)
    except ConfigError as exc:
        raise ConfigError(f"{ENV}={precision!r}: {exc} (or 1 for the default, 0 for off)") from None
    spec.task = plugin.modify_task(spec.task)
    spec.executor = plugin.modify_executor(spec.executor)
