"""Launchers: how a task's processes are started inside its job (``launcher=`` on every executor).

``run.Torchrun(...)`` (or the string ``"torchrun"``) runs the task under PyTorch's elastic
launcher: ``nproc_per_node`` processes per node, joined by a c10d rendezvous. Under a launcher a
Python ``Config`` task runs once per rank and a ``Script`` once per rank; the task succeeds when
every rank does. Rank 0's output is the task's ``stdout``/``stderr``; the other ranks' output is
kept beside it, in ``attempt-N/ranks/<rank>/``.

Core turns the launcher into ``RUNYARD_LAUNCHER`` (:func:`launcher_env`), which the in-job
runner reads; a backend that spans several nodes exports the job-time values (``RUNYARD_NNODES``,
``RUNYARD_RDZV_ENDPOINT``, ``RUNYARD_RDZV_ID``) that beat the ones written here.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from runyard.errors import ConfigError

LAUNCHER_ENV = "RUNYARD_LAUNCHER"  # the launcher of the job, as JSON (read by runner.py)
RDZV_BACKENDS = ("c10d",)  # (static needs a node rank per node: not started by runyard)


def _count(optional: bool, at_least: int) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < at_least:
            raise ConfigError(
                f"Torchrun.{attribute.name} must be an integer >= {at_least}"
                + (" or None" if optional else "") + f", got {value!r}"
            )  # fmt: skip

    return check


def _port(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
        raise ConfigError(f"Torchrun.rdzv_port must be a TCP port (1-65535) or None, got {value!r}")


def _backend(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in RDZV_BACKENDS:
        raise ConfigError(f"Torchrun.rdzv_backend must be one of {', '.join(RDZV_BACKENDS)}, got {value!r}")


@attrs.frozen
class Torchrun:
    """Run the task with ``torchrun`` (``torch.distributed.run``) in its job.

    :param nproc_per_node: processes per node; None: the executor's GPUs per node if set,
        else its tasks per node (Slurm), else 1.
    :param rdzv_backend: ``"c10d"``, torchrun's own rendezvous (the one runyard starts).
    :param rdzv_port: the rendezvous port on the first node. None: a free port on a single
        machine (two tasks never collide), and on Slurm a port derived from the job id.
    :param max_restarts: how many times torchrun restarts the workers after a failure,
        within one attempt (runyard's own retries are ``Experiment(max_retries=...)``).
    """

    nproc_per_node: int | None = attrs.field(default=None, validator=_count(True, 1))
    rdzv_backend: str = attrs.field(default="c10d", validator=_backend)
    rdzv_port: int | None = attrs.field(default=None, validator=_port)
    max_restarts: int = attrs.field(default=0, validator=_count(False, 0))


Launcher = Torchrun  # the only kind today


def as_launcher(value: Any) -> Torchrun | None:
    """``launcher=``'s value: None, ``"torchrun"`` or a :class:`Torchrun` (a dict: a stored one)."""
    if value is None or isinstance(value, Torchrun):
        return value
    if value == "torchrun":
        return Torchrun()
    if isinstance(value, dict):  # (as stored: snapshots, the store)
        try:
            return Torchrun(**value)
        except TypeError as exc:
            raise ConfigError(f"not a Torchrun launcher: {value!r} ({exc})") from None
    raise ConfigError(f"launcher must be None, 'torchrun' or run.Torchrun(...), got {value!r}")


def rdzv_id(experiment_id: str, task_id: str, attempt: int) -> str:
    """The rendezvous id of one attempt: torchrun names a folder after it (no ``/``)."""
    return f"{experiment_id}_{task_id}_{attempt}"


def launcher_env(launcher: Torchrun, nproc_per_node: int, rdzv_id: str) -> str:
    """The value of ``RUNYARD_LAUNCHER`` for one attempt: everything the runner needs to start
    the launcher on a single node (a multi-node backend overrides nnodes, endpoint and id)."""
    return json.dumps(
        {
            "kind": "torchrun",
            "nproc_per_node": launcher.nproc_per_node or nproc_per_node,
            "nnodes": 1,
            "rdzv_backend": launcher.rdzv_backend,
            "rdzv_endpoint": f"127.0.0.1:{launcher.rdzv_port or 0}",
            "rdzv_id": rdzv_id,
            "max_restarts": launcher.max_restarts,
        }
    )
