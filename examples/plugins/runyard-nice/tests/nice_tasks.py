"""Task targets for the tests (imported by the task processes)."""

from __future__ import annotations

import os


def report_niceness() -> None:
    print(os.nice(0))
