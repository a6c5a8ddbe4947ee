"""The entrypoint of a runyard Ray job: ``python3 ray_job.py``, in the job's working dir.

Standard library only: it runs with the cluster's ``python3``, where runyard is not installed.
The working dir (``staging.py`` makes it: the same for every task of an experiment, so Ray
keeps one copy) holds this file, ``runner/`` (core's job files) and, when code is shipped,
``code/``. What to run is in ``$RUNYARD_RAY_JOB`` (JSON: the attempt, the runner's command line,
its working directory, the task's ``task.json``); paths in it that start with
``@RUNYARD_WORKDIR@`` are paths in the working dir, known only here (Ray unpacks it where it
likes), and ``@RUNYARD_TASKDIR@`` is the task folder this makes.

It writes the task folder into a scratch folder of its own, runs the in-job runner there, and
sends home everything the runner writes through the one channel a Ray job has, its output:

- each ``journal.log`` line as it is (``<unix time> <o|e> <text>``: the job's log in Ray's
  dashboard reads as the task's output);
- the other files of the attempt folder (``result.json``, ``metrics.jsonl``, ``claim.json``,
  ``ranks/...``) as ``#runyard+ <path> <base64>`` lines of what was added to them, or
  ``#runyard= <path> <base64>`` when one was written anew; ``stdout.log`` and ``stderr.log``
  are not sent (the journal holds the same lines);
- last, ``#runyard. <exit code>``.

TERM, INT and HUP are passed on to the runner (which passes them on to the task and kills it
after its grace); the runner's exit code is this job's, so Ray's status agrees with it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

TOKEN = "@RUNYARD_WORKDIR@"  # noqa: S105 (a place holder, no secret)
TASK_TOKEN = "@RUNYARD_TASKDIR@"  # noqa: S105
CONF_ENV = "RUNYARD_RAY_JOB"  # what to run: JSON (staging.job_conf)
TICK = 0.2  # seconds between two looks at the runner's files
NOT_SENT = {"journal.log", "stdout.log", "stderr.log", "heartbeat"}
CHUNK = 1 << 20  # a file's new bytes are sent in lines of at most this much (before base64)


def _moved(value: Any, workdir: str) -> Any:
    if isinstance(value, str) and value.startswith(TOKEN):
        return workdir + value[len(TOKEN) :]
    return value


def stage(workdir: str, conf: dict[str, Any], scratch: str) -> tuple[list[str], str, str, list[str]]:
    """The runner's command line, its working directory, the task folder made in ``scratch``
    and the ``PYTHONPATH`` entries of the shipped code."""
    task_dir = os.path.join(scratch, "task")
    os.makedirs(task_dir)
    spec = conf["task"]
    spec["python_path"] = [_moved(p, workdir) for p in spec.get("python_path") or []]
    if spec.get("main_path"):
        spec["main_path"] = _moved(spec["main_path"], workdir)
    task = spec.get("task")
    if isinstance(task, dict) and task.get("__runyard__") == "script":
        task["path"] = _moved(task.get("path"), workdir)
    with open(os.path.join(task_dir, "task.json"), "w") as f:
        json.dump(spec, f)
    argv = [_moved(a, workdir).replace(TASK_TOKEN, task_dir) for a in conf["argv"]]
    cwd = _moved(conf.get("cwd") or workdir, workdir)
    pythonpath = [_moved(p, workdir) for p in conf.get("pythonpath") or []]
    return argv, (cwd if os.path.isdir(cwd) else workdir), task_dir, pythonpath


class Sender:
    """Sends the runner's files as they grow (see the module's doc)."""

    def __init__(self, attempt_dir: str, out: Any) -> None:
        self.attempt_dir = attempt_dir
        self.out = out
        self.sent: dict[str, int] = {}  # path in the attempt folder -> bytes sent
        self.journal = 0  # bytes of journal.log sent (whole lines only)

    def tick(self, final: bool = False) -> None:
        self._journal(final)
        for rel in self._files():
            self._file(rel)
        self.out.flush()

    def _files(self) -> list[str]:
        found = []
        for root, dirs, names in os.walk(self.attempt_dir):
            dirs.sort()
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(root, name), self.attempt_dir)
                if (name in NOT_SENT and os.path.dirname(rel) == "") or name.startswith("."):
                    continue
                if name.endswith(".tmp") or ".tmp." in name:
                    continue
                found.append(rel)
        return found

    def _journal(self, final: bool) -> None:
        try:
            with open(os.path.join(self.attempt_dir, "journal.log"), "rb") as f:
                f.seek(self.journal)
                data = f.read()
        except FileNotFoundError:
            return
        end = len(data) if final else data.rfind(b"\n") + 1
        if end:
            chunk = data[:end]
            self.out.write(chunk if chunk.endswith(b"\n") else chunk + b"\n")
            self.journal += end

    def _file(self, rel: str) -> None:
        path = os.path.join(self.attempt_dir, rel)
        try:
            size = os.path.getsize(path)
            if size == self.sent.get(rel, 0) and rel in self.sent:
                return
            with open(path, "rb") as f:
                start = self.sent.get(rel, 0)
                anew = size < start
                if not anew:
                    f.seek(start)
                data = f.read()
        except OSError:
            return
        mark = b"=" if anew or rel not in self.sent else b"+"
        name = rel.replace(os.sep, "/").encode()
        for at in range(0, max(len(data), 1), CHUNK):
            piece = base64.b64encode(data[at : at + CHUNK])
            self.out.write(b"#runyard" + (mark if at == 0 else b"+") + b" " + name + b" " + piece + b"\n")
        self.sent[rel] = (0 if anew else start) + len(data)


def main() -> int:
    workdir = os.getcwd()
    conf = json.loads(os.environ.pop(CONF_ENV))
    scratch = tempfile.mkdtemp(prefix="runyard-ray-")
    out = sys.stdout.buffer
    try:
        argv, cwd, task_dir, pythonpath = stage(workdir, conf, scratch)
        env = {**os.environ, "RUNYARD_TASK_DIR": task_dir}
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*pythonpath, *filter(None, [env.get("PYTHONPATH")])])
        sender = Sender(os.path.join(task_dir, f"attempt-{int(conf['attempt'])}"), out)
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            out.write(f"#runyard! cannot start the runner {argv[0]!r}: {exc}\n".encode())
            out.write(b"#runyard. 127\n")
            out.flush()
            return 127

        def forward(signum: int, frame: Any) -> None:
            try:
                proc.send_signal(signum)
            except OSError:
                pass

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, forward)
        done = threading.Event()

        def waiter() -> None:
            proc.wait()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        while not done.wait(TICK):
            sender.tick()
        code = proc.returncode
        time.sleep(0.05)
        sender.tick(final=True)
        out.write(b"#runyard. %d\n" % (code if code >= 0 else 128 - code))
        out.flush()
        return code if code >= 0 else 128 - code
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
