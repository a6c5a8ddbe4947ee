"""Task targets for the live view's tests (tests/e2e/test_live_view.py): output as training
prints it (a ``\\r`` progress bar, wide characters, colour codes), each holding on until the
test opens its gate (a file), so that the test sees the view while the task runs."""

from __future__ import annotations

import os
import sys
import time


def wait_for(gate: str, limit: float = 120.0) -> None:
    """Return once file ``gate`` exists (exit 1 after ``limit`` seconds: a test never hangs)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise SystemExit(f"gate {gate} never opened")
        time.sleep(0.05)


def progress_bar(gate: str, total: int = 10, before: int = 5) -> None:
    """A tqdm-style bar on stderr (``\\r`` before each update, a newline at the end): ``before``
    of ``total`` steps, then the gate, then the rest."""
    for step in range(before + 1):
        sys.stderr.write(f"\r{100 * step // total:3d}%|{'#' * step:<{total}}| {step}/{total}")
        sys.stderr.flush()
        time.sleep(0.01)
    wait_for(gate)
    for step in range(before + 1, total + 1):
        sys.stderr.write(f"\r{100 * step // total:3d}%|{'#' * step:<{total}}| {step}/{total}")
    sys.stderr.write("\n")


def print_then_wait(text: str, gate: str) -> None:
    """Print ``text`` (a line), then hold on until the gate opens."""
    print(text, flush=True)
    wait_for(gate)
