"""The supervisor: drives a detached experiment from its own process.

``python -m runyard.supervisor HOME EXPERIMENT_ID``. Started in a new session so that it
outlives the process that launched it; records its pid and heartbeat in the store, where
any process sees it (and ``runyard takeover`` replaces it if it died). Its stdin, up to its
end, is the JSON of the secrets' values its starter kept (``redact.export``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from runyard import redact
from runyard.errors import BackendError, BackendRefusedError, DiskFullError, disk_full
from runyard.store import Store, open_store, pid_alive

LOG = "supervisor.log"


def start_supervisor(store: Store, experiment_id: str, wait: float = 60.0) -> int:
    """Start a supervisor for the experiment; return its pid once it drives it."""
    exp_dir = store.experiment_dir(experiment_id)
    os.makedirs(exp_dir, exist_ok=True)
    log_path = os.path.join(exp_dir, LOG)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runyard.supervisor", store.home, experiment_id],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=exp_dir,
        )  # fmt: skip
    assert proc.stdin is not None
    try:  # the secrets' values this process kept: on a pipe, never on disk or the command line
        with proc.stdin:
            proc.stdin.write(redact.export(experiment_id))
    except BrokenPipeError:
        pass  # it died at once: said below
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        record = store.experiment(experiment_id)
        if record.driver_pid == proc.pid:
            return proc.pid
        code = proc.poll()
        if code is not None:
            if record.driver_pid and pid_alive(record.driver_pid):
                return record.driver_pid  # another driver took it first: fine
            if code == 0 and _drove(store, experiment_id, proc.pid):
                return proc.pid  # it drove the experiment to its end between two looks
            if disk_full(log_path):  # then its log says nothing, or not why
                raise DiskFullError(
                    log_path,
                    f"the supervisor for {experiment_id} exited with code {code} before taking over",
                    f", then run `runyard takeover {experiment_id}`",
                )
            raise BackendError(
                f"the supervisor for {experiment_id} exited with code {code} before taking over; "
                f"see {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.02)
    raise BackendError(f"the supervisor for {experiment_id} did not start within {wait}s; see {log_path}")


def _drove(store: Store, experiment_id: str, pid: int) -> bool:
    """Whether process ``pid`` claimed the experiment (the store's driver events say so)."""
    return any(
        kind == "driver" and data.get("pid") == pid for _, _, _, kind, data in store.events(experiment_id)
    )


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    from runyard.scheduler import Driver

    if len(argv) != 2:
        print("usage: python -m runyard.supervisor HOME EXPERIMENT_ID", file=sys.stderr)
        return 2
    home, experiment_id = argv
    if sys.stdin is not None and not sys.stdin.isatty():
        redact.load(experiment_id, sys.stdin.buffer.read())  # from start_supervisor
    store = open_store(home)
    driver = Driver(store, experiment_id, kind="supervisor")

    def stop(signum: int, frame: Any) -> None:
        driver.stop()

    signal.signal(signal.SIGTERM, stop)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    if not driver.claim():
        print(f"{stamp} another live process drives {experiment_id}; exiting", flush=True)
        return 0
    print(f"{stamp} supervisor pid {os.getpid()} drives {experiment_id}", flush=True)
    try:
        state = driver.run()
    except BackendRefusedError as exc:  # nothing to wait for: say what to fix, in one line
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} stopped: {exc}", flush=True)
        return 1
    finally:
        driver.release()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    if driver.lost_lease:
        print(f"{stamp} another driver took {experiment_id} over; this supervisor exits", flush=True)
    else:
        print(f"{stamp} experiment ended: {state}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
