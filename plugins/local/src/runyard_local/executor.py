"""``LocalExecutor``: what the user configures."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from runyard.errors import ConfigError
from runyard.executor import Executor

from runyard_local.cgroups import parse_size


def _check_mem(instance: LocalExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        parse_size(value)


def _check_grace(instance: LocalExecutor, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"LocalExecutor.{attribute.name} must be a number of seconds >= 0, got {value!r}")


def _check_gpus(instance: LocalExecutor, attribute: attrs.Attribute[int], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"LocalExecutor.gpus must be a whole number of GPUs >= 0 (each task holds that many), got {value!r}"
        )


@attrs.define
class LocalExecutor(Executor):
    """Run each task as its own process group on this machine.

    :param env_vars: variables added to the task's environment (over this process's).
    :param python: interpreter for Python tasks; default: the one running runyard
        (``sys.executable``), never whatever ``python`` is on PATH.
    :param cancel_grace: seconds between SIGTERM and SIGKILL when a task is cancelled.
    :param mem: a memory limit for each attempt: megabytes (int) or a size (``"2G"``); the
        kernel kills a task that goes over it (failure ``oom``). Enforced by a memory cgroup of
        its own (``runyard_local.cgroups``: needs write access to the cgroup file system).
    :param gpus: GPUs of this machine each task holds while it runs, which it sees as
        ``CUDA_VISIBLE_DEVICES``; no two tasks of any experiments in the same runyard home
        hold one at once: a task waits PENDING ("waiting for 2 free GPUs") until enough are
        free. More than the machine has: an error at ``run()``. The machine's GPUs: NVML,
        ``nvidia-smi -L``, or ``RUNYARD_LOCAL_GPUS`` (``runyard_local.gpus``). 0: none
        leased, ``CUDA_VISIBLE_DEVICES`` left as it is.
    """

    kind: ClassVar[str] = "local"

    python: str | None = None
    cancel_grace: float = attrs.field(default=5.0, validator=_check_grace)
    mem: int | str | None = attrs.field(default=None, validator=_check_mem)
    gpus: int = attrs.field(default=0, validator=_check_gpus)

    def resource_request(self) -> dict[str, int]:
        return {"gpu": self.gpus} if self.gpus else {}

    def default_nproc(self) -> int:
        return self.gpus or 1

    def describe(self) -> str:
        return "local"
