"""``run(direct=True)``: every task in the calling process, in order, no executor.

The engine's in-process backend: the usual driver runs the experiment on it, so
dependencies, retries and the timeout (checked between tasks) work as on any backend.
Output is shown as usual and recorded in the task directory like the runner does, so logs
and status work the same. Script tasks run as child processes (they are programs); Python
tasks are built and called here.
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
from collections.abc import Sequence
from typing import Any, TextIO

from runyard import redact, serialization
from runyard.config import Script, build
from runyard.executor import Backend, JobRef, JobSpec, JobStatus, Launched
from runyard.jobfiles import TASK, read_local_result, status_of_ended_job
from runyard.runner import write_result
from runyard.states import State


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


class DirectBackend(Backend):
    """The engine's backend for ``run(direct=True)``: ``launch`` runs the attempt here and now,
    to its end, recording its output and result as the runner does; ``poll`` reads the result.

    The driver loop is the same as on any backend (dependencies, retries, the timeout, checked
    between tasks since each launch returns when its task has ended)."""

    def _launch(self, job: JobSpec) -> Launched:
        with open(os.path.join(job.task_dir, TASK), "rb") as f:
            encoded = json.load(f)["task"]
        task = serialization.decode(redact.reveal_task(job.experiment_id, job.task_id, encoded))
        start = time.time()
        code, error = _run_one(task, job.attempt_dir)
        write_result(job.attempt_dir, {"exit_code": code, "start": start, "end": time.time(), "error": error})
        return Launched(job_id=f"direct:{os.getpid()}", state=State.RUNNING)

    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        return {job.job_id: status_of_ended_job(read_local_result(job.attempt_dir)) for job in jobs}

    def _cancel(self, job: JobRef) -> None:
        return None  # its task has ended when launch returns: nothing left to end

    def poll_interval(self) -> float:
        return 0.0
