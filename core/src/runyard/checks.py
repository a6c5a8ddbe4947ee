"""Argument checks shared by the facade's methods: one clear ConfigError per wrong value."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

from runyard import naming, serialization
from runyard.config import Config, Partial, Script, target_name
from runyard.errors import ConfigError
from runyard.executor import Executor
from runyard.states import RETRYABLE


def check_number(
    value: Any, what: str, *, integer: bool = False, allow_zero: bool = False, at_least: float = 0
) -> Any:
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    finite = not isinstance(value, float) or math.isfinite(value)  # nan compares False to everything
    if isinstance(value, bool) or not isinstance(value, kinds) or not finite:
        raise ConfigError(f"{what} must be a finite {'whole ' if integer else ''}number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{what} must be {'zero or more' if allow_zero else 'positive'}, got {value!r}")
    if value < at_least:
        raise ConfigError(f"{what} must be at least {at_least}, got {value!r}")
    return value


def check_retry_on(value: Any) -> list[str]:
    """``retry_on``: failure kinds (``states.FAILURES``) that ``max_retries`` re-runs."""
    kinds = [value] if isinstance(value, str) else value
    if not isinstance(kinds, (list, tuple)) or not all(isinstance(k, str) for k in kinds):
        raise ConfigError(f"retry_on must be a list of failure kinds, got {value!r}")
    unknown = [k for k in kinds if k not in RETRYABLE]
    if unknown:
        raise ConfigError(
            f"retry_on: {unknown[0]!r} is not a failure kind that can be retried; the kinds are: "
            + ", ".join(RETRYABLE)
        )
    return list(dict.fromkeys(kinds))


def check_metadata(values: Any, what: str = "metadata") -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{what} must be a dict of JSON values, got {values!r}")
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"{what} keys must be strings, got {key!r}")
        serialization.check_json_value(value, f"{what}[{key!r}]")
    return dict(values)


def check_text(value: Any, what: str) -> Any:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {value!r}")
    return value


def check_tasks(tasks: list[Any]) -> list[Any]:
    if not tasks:
        raise ConfigError("add() got an empty list of tasks")
    for t in tasks:
        if not isinstance(t, (Config, Partial, Script)):
            raise ConfigError(
                f"a task must be run.Config, run.Partial or run.Script, got {type(t).__name__}: {t!r}"
            )
    return tasks


def check_executor(executor: Any) -> Executor:
    """``executor``, or a new ``LocalExecutor()`` for None (from its plugin: a clear error if
    runyard-local is not installed)."""
    if executor is None:
        from runyard.plugins import resolve_export

        executor = resolve_export("LocalExecutor")()
    if not isinstance(executor, Executor):
        raise ConfigError(f"executor must be a runyard executor (run.LocalExecutor(), ...), got {executor!r}")
    return executor


def check_plugins(plugins: Sequence[Any] | None) -> list[Any]:
    out = list(plugins or [])
    for p in out:
        if not (hasattr(p, "modify_task") or hasattr(p, "modify_executor")):
            raise ConfigError(f"plugins must have modify_task/modify_executor, got {p!r}")
    return out


def check_dependencies(dependencies: Any, existing: set[str]) -> list[str]:
    """Ids of tasks added before, each once, in the order given."""
    if dependencies is None:
        return []
    if isinstance(dependencies, str):
        dependencies = [dependencies]
    if not isinstance(dependencies, (list, tuple)):
        raise ConfigError(f"dependencies must be a list of task ids, got {dependencies!r}")
    for dep in dependencies:
        if not isinstance(dep, str) or dep not in existing:
            known = ", ".join(sorted(existing)) or "none yet"
            raise ConfigError(
                f"unknown dependency {dep!r}: dependencies name ids returned by earlier "
                f"add() calls (this experiment has: {known})"
            )
    return list(dict.fromkeys(dependencies))


def default_name(task: Any) -> str:
    """A task's name when ``add()`` is given none: its script's file, or its target's name."""
    if isinstance(task, Script):
        return naming.slug(os.path.basename(task.path)) if task.path else "script"
    return naming.slug(target_name(task._target).split(".")[-1])


def check_metric_patterns(value: Any) -> dict[str, str] | None:
    """``metric_patterns``: metric name -> a regex with exactly one group (the number); None
    keeps the defaults (``runyard.metrics.DEFAULT_PATTERNS``)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(
            f"metric_patterns must be a dict of metric name -> regex, got {value!r}; "
            r"e.g. {'loss': r'loss[:=] *([0-9.]+)'}"
        )
    for name, regex in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"metric_patterns: a metric name must be a non-empty string, got {name!r}")
        if not isinstance(regex, str):
            raise ConfigError(f"metric_patterns[{name!r}] must be a regex string, got {regex!r}")
        try:
            groups = re.compile(regex).groups
        except re.error as exc:
            raise ConfigError(f"metric_patterns[{name!r}] is not a valid regex ({exc}): {regex!r}") from None
        if groups != 1:
            raise ConfigError(
                f"metric_patterns[{name!r}] must have exactly one group (the number), it has {groups}: "
                f"{regex!r}; make other groups non-capturing: (?:...)"
            )
    return dict(value)
