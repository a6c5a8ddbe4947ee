"""``MixedPrecisionPlugin``: the experiment guide's mixed-precision plugin, made real.

``exp.add(task, plugins=[run.MixedPrecisionPlugin()])`` sets ``precision`` on every config
in the task whose target takes that argument, and adds the environment variables that
mixed-precision training wants to the task's executor, whatever its kind.
"""

from __future__ import annotations

import copy
import sys
import warnings
from typing import Any

import attrs
from runyard import Plugin
from runyard.config import Script, target_name, walk_configs
from runyard.errors import ConfigError
from runyard.executor import Executor

#: Precision names PyTorch Lightning (and Fabric) accept, the long forms first.
PRECISIONS = (
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "32-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    "bf16",
    "16",
    "32",
    "64",
)
DEFAULT_PRECISION = "bf16-mixed"
#: What the guide's plugin sets on the executor.
DEFAULT_ENV_VARS = {
    "NCCL_P2P_DISABLE": "1",
    "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128",
}


class NoPrecisionWarning(RuntimeWarning):
    """The task has no config whose target takes ``precision``: nothing was set."""


def _check_precision(instance: Any, attribute: Any, value: Any) -> None:
    if value not in PRECISIONS:
        raise ConfigError(
            f"MixedPrecisionPlugin: unknown precision {value!r}; use one of: {', '.join(PRECISIONS)}"
        )


def _check_env_vars(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"MixedPrecisionPlugin.env_vars must be a dict of strings, got {value!r}")
    for k, v in value.items():
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise ConfigError(f"MixedPrecisionPlugin.env_vars: invalid variable name {k!r}")
        if not isinstance(v, str):
            raise ConfigError(f"MixedPrecisionPlugin.env_vars[{k!r}] must be a string, got {v!r}")


@attrs.define
class MixedPrecisionPlugin(Plugin):
    """Set ``precision`` on every config that takes it; add environment variables to the executor.

    :param precision: one of :data:`PRECISIONS` (default ``"bf16-mixed"``); anything else
        raises ``ConfigError``.
    :param env_vars: variables added to the executor's ``env_vars``, over what it has
        (default :data:`DEFAULT_ENV_VARS`).
    :param warn_if_unused: warn (:class:`NoPrecisionWarning`) when a task has no config
        whose target takes ``precision`` (a ``Script`` task never has).

    Both methods leave their argument untouched and return a changed copy
    (``Experiment.add`` hands them private copies anyway).
    """

    precision: str = attrs.field(default=DEFAULT_PRECISION, validator=_check_precision)
    env_vars: dict[str, str] = attrs.field(
        factory=lambda: dict(DEFAULT_ENV_VARS), validator=_check_env_vars, kw_only=True
    )
    warn_if_unused: bool = attrs.field(default=True, kw_only=True)

    def modify_task(self, task: Any) -> Any:
        """A copy of ``task`` with ``precision`` set wherever a target takes it.

        Every ``Config`` / ``Partial`` in the task tree counts: the task itself, and configs
        nested in its arguments (a trainer config inside a recipe), in lists and dicts too.
        "Takes it" means ``hasattr(config, "precision")``: the target has a ``precision``
        parameter (a target that only has ``**kwargs`` does not count).
        """
        task = copy.deepcopy(task)
        if isinstance(task, Script):
            self._warn("a Script task takes no precision; only the environment variables apply")
            return task
        seen = []
        changed = 0
        for cfg in walk_configs(task):
            seen.append(target_name(cfg.__fn_or_cls__))
            if hasattr(cfg, "precision"):
                cfg.precision = self.precision
                changed += 1
        if not changed:
            self._warn(
                f"no target in the task takes a 'precision' argument ({', '.join(seen) or 'no config'});"
                f" precision {self.precision!r} was not set"
            )
        return task

    def modify_executor(self, executor: Executor) -> Executor:
        """A copy of ``executor`` with :attr:`env_vars` added to its ``env_vars`` (any kind)."""
        executor = copy.deepcopy(executor)
        env = dict(getattr(executor, "env_vars", None) or {})
        env.update(self.env_vars)
        executor.env_vars = env
        return executor

    def _warn(self, message: str) -> None:
        if self.warn_if_unused:
            warnings.warn(f"MixedPrecisionPlugin: {message}", NoPrecisionWarning, stacklevel=_callers_level())


def _callers_level() -> int:
    """The ``stacklevel`` of the first frame outside runyard and this plugin, for a warning
    given from their code: it points at the user's ``add()``, however deep core calls us."""
    level, frame = 2, sys._getframe(2)  # the frame of _warn's caller
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        "runyard", "runyard_mixed_precision",
    ):  # fmt: skip
        level, frame = level + 1, frame.f_back
    return level
