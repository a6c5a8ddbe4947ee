"""``run(direct=True)``: every task in the calling process, in order, no executor.

Output is shown as usual and recorded in the task directory like the runner does, so logs,
status and retries work the same. Script tasks run as child processes (they are programs);
Python tasks are built and called here. The timeout is checked between tasks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, TextIO

from runyard import redact, serialization
from runyard.config import Script, build
from runyard.errors import MissingSecretError
from runyard.runner import write_result
from runyard.states import FINAL_STATES, State, experiment_state

if TYPE_CHECKING:
    from runyard.experiment import Experiment


class _Recorder(io.TextIOBase):
    """A text stream that echoes to ``echo`` and records raw output and the journal."""

    def __init__(self, echo: TextIO, raw: Any, journal: Any, code: str, lock: threading.Lock) -> None:
        self.echo, self.raw, self.journal, self.code, self.lock = echo, raw, journal, code, lock
        self.pending = ""

    def write(self, text: str) -> int:
        self.echo.write(text)
        self.raw.write(text)
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        if lines:
            now = "%.6f" % time.time()
            with self.lock:
                self.journal.write("".join(f"{now} {self.code} {line}\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        self.echo.flush()
        self.raw.flush()
        self.journal.flush()

    def close_line(self) -> None:
        if self.pending:
            with self.lock:
                self.journal.write("%.6f %s %s\n" % (time.time(), self.code, self.pending))
            self.pending = ""
        self.flush()


def _run_one(task: Any, attempt_dir: str) -> tuple[int, str | None]:
    os.makedirs(attempt_dir, exist_ok=True)
    lock = threading.Lock()
    with (
        open(os.path.join(attempt_dir, "stdout.log"), "w") as out_f,
        open(os.path.join(attempt_dir, "stderr.log"), "w") as err_f,
        open(os.path.join(attempt_dir, "journal.log"), "a") as journal,
    ):
        out = _Recorder(sys.stdout, out_f, journal, "o", lock)
        err = _Recorder(sys.stderr, err_f, journal, "e", lock)
        error = None
        try:
            if isinstance(task, Script):
                code = _run_script(task, out, err)
            else:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    try:
                        value = build(task)
                        if callable(value):
                            value()
                        code = 0
                    except SystemExit as exc:
                        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                    except Exception as exc:  # the task's failure, recorded, never re-raised
                        traceback.print_exc(file=err)
                        code, error = 1, f"{type(exc).__name__}: {exc}"
        finally:
            out.close_line()
            err.close_line()
    return code, error


def _run_script(task: Script, out: _Recorder, err: _Recorder) -> int:
    env = dict(os.environ)
    env.update(task.env or {})
    proc = subprocess.Popen(task.argv(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None

    def pump(src: Any, dst: _Recorder) -> None:
        for line in src:
            dst.write(line)

    threads = [threading.Thread(target=pump, args=(proc.stdout, out)),
               threading.Thread(target=pump, args=(proc.stderr, err))]  # fmt: skip
    for t in threads:
        t.start()
    code = proc.wait()
    for t in threads:
        t.join()
    return code if code >= 0 else 128 - code


def run_direct(exp: Experiment, *, tail_logs: bool = False) -> State:
    store, exp_id = exp.store, exp.experiment_id
    settings = exp.settings
    retries = int(settings.get("max_retries") or 0)
    timeout = settings.get("timeout")
    started = time.time()
    for record in store.tasks(exp_id):
        tasks = {t.id: t for t in store.tasks(exp_id)}
        current = tasks[record.id]
        if current.status is not State.PENDING:
            continue
        if timeout and time.time() - started > float(timeout):
            never_runs = "timeout"
        elif missing := [d for d in current.dependencies if d not in tasks]:
            never_runs = f"dependency {missing[0]!r} does not exist in this experiment"
        elif any(tasks[d].status is not State.SUCCEEDED for d in current.dependencies):
            never_runs = "dependency failed"
        else:
            never_runs = None
        if never_runs:
            store.transition(
                exp_id,
                current.id,
                State.CANCELLED,
                when=[State.PENDING],
                reason=never_runs,
                end_time=time.time(),
            )
            continue
        try:
            task = serialization.decode(redact.reveal_task(exp_id, current.id, json.loads(current.task)))
        except MissingSecretError as exc:  # nothing to run it with: say so
            store.transition(exp_id, current.id, State.FAILED, when=[State.PENDING],
                             reason=f"launch failed: {exc}", end_time=time.time())  # fmt: skip
            continue
        attempt = current.attempts
        while True:
            attempt += 1
            start = time.time()
            store.transition(exp_id, current.id, State.RUNNING, when=[State.PENDING], attempts=attempt,
                             job_id=f"direct:{os.getpid()}", start_time=start)  # fmt: skip
            attempt_dir = os.path.join(store.task_dir(exp_id, current.id), f"attempt-{attempt}")
            code, error = _run_one(task, attempt_dir)
            end = time.time()
            write_result(attempt_dir, {"exit_code": code, "start": start, "end": end, "error": error})
            if code == 0:
                store.transition(
                    exp_id, current.id, State.SUCCEEDED, when=[State.RUNNING], exit_code=0, end_time=end
                )
                break
            reason = error or f"exit code {code}"
            if attempt <= retries:
                store.transition(exp_id, current.id, State.PENDING, when=[State.RUNNING], exit_code=code,
                                 reason=f"retrying (attempt {attempt} of {retries + 1} failed: {reason})")  # fmt: skip
                continue
            store.transition(
                exp_id,
                current.id,
                State.FAILED,
                when=[State.RUNNING],
                exit_code=code,
                reason=reason,
                end_time=end,
            )
            break
    store.mark_ended(exp_id, True)
    states = store.task_states(exp_id)
    assert all(s in FINAL_STATES for s in states)
    return experiment_state(states)
