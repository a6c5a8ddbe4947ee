"""runyard-nice: an example third-party runyard plugin.

``run.NiceExecutor(niceness=10, cpus="0-3")`` runs each task like ``run.LocalExecutor``,
through ``nice -n 10 taskset -c 0-3``: at a lower CPU priority, on chosen CPUs.
"""

from __future__ import annotations

from runyard_nice.executor import NiceExecutor

__all__ = ["NiceExecutor"]
