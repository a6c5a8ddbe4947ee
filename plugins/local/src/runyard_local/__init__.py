"""runyard-local: the ``LocalExecutor``, tasks as process groups on this machine."""

from __future__ import annotations

from runyard_local.executor import LocalExecutor

__all__ = ["LocalExecutor"]
