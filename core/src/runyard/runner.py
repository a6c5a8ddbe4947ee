"""The in-job runner: ``python3 runner.py TASK_DIR ATTEMPT``.

Standard library only, so that every backend can copy this one file next to a task and
run it with any ``python3`` (a cluster node or a container image needs no runyard). It
reads ``TASK_DIR/task.json``, runs the task, and writes into ``TASK_DIR/attempt-ATTEMPT``:

- ``stdout.log``, ``stderr.log``: the raw output of the task (and of any process it starts);
- ``journal.log``: one line per output line, ``<unix time> <o|e> <text>``;
- ``heartbeat``: touched every ``RUNYARD_HEARTBEAT_INTERVAL`` seconds (0 disables);
- ``result.json``: ``{"exit_code", "start", "end", "error"}``, written last and atomically.

Running a task: a Config is built (its target called with its built arguments) and, if
the built value is callable, called with no arguments; a Partial is built and called; a
Script runs as a process. Exit code 0 is success; an exception is failure, its traceback
in stderr. SIGTERM raises SystemExit(143) in the task so that ``finally`` blocks run.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO

TAG = "__runyard__"
MAIN_MODULE = "__mp_main__"


# ----------------------------------------------------------------------------- building
class Builder:
    """Builds the tagged JSON form of a task (see runyard/serialization.py)."""

    def __init__(self, main_path: str | None) -> None:
        self.main_path = main_path

    def resolve(self, ref: str) -> Any:
        module_name, _, qualname = ref.partition(":")
        if module_name == "__main__":
            module = self._main_module()
        else:
            module = importlib.import_module(module_name)
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj

    def _main_module(self) -> Any:
        # A target defined in the launching script: load that file under another name, as
        # multiprocessing does, so its `if __name__ == "__main__":` block does not run again.
        if MAIN_MODULE in sys.modules:
            return sys.modules[MAIN_MODULE]
        if not self.main_path:
            raise ImportError("the task's target lives in __main__ but no script path was recorded")
        folder = os.path.dirname(os.path.abspath(self.main_path))
        if folder not in sys.path:
            sys.path.insert(0, folder)  # the script's own imports of its neighbours
        spec = importlib.util.spec_from_file_location(MAIN_MODULE, self.main_path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {self.main_path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[MAIN_MODULE] = module
        spec.loader.exec_module(module)
        return module

    def build(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.build(v) for v in value]
        if not isinstance(value, dict):
            return value
        tag = value.get(TAG)
        if tag is None:
            return {k: self.build(v) for k, v in value.items()}
        if tag in ("config", "partial"):
            target = self.resolve(value["target"])
            args = [self.build(a) for a in value["args"]]
            kwargs = {k: self.build(v) for k, v in value["kwargs"].items()}
            if tag == "partial":
                return functools.partial(target, *args, **kwargs)
            return target(*args, **kwargs)
        if tag == "tuple":
            return tuple(self.build(v) for v in value["items"])
        if tag == "dict":
            return {k: self.build(v) for k, v in value["items"].items()}
        if tag == "path":
            import pathlib

            return pathlib.Path(value["value"])
        if tag == "ref":
            return self.resolve(value["target"])
        raise ValueError(f"cannot build a {tag!r} value")


def script_argv(spec: dict[str, Any]) -> list[str]:
    if spec["inline"] is not None:
        return [spec["entrypoint"], "-c", spec["inline"], "runyard-script", *spec["args"]]
    return [spec["entrypoint"], spec["path"], *spec["args"]]


# ----------------------------------------------------------------------------- capture
class Capture:
    """Points fds 1 and 2 at pipes; threads copy them to the raw logs and the journal."""

    def __init__(self, attempt_dir: str) -> None:
        self.dir = attempt_dir
        self.lock = threading.Lock()
        self.journal = open(os.path.join(attempt_dir, "journal.log"), "ab", buffering=0)
        self.threads: list[threading.Thread] = []
        for fd, name, code in ((1, "stdout.log", b"o"), (2, "stderr.log", b"e")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            raw = open(os.path.join(attempt_dir, name), "ab", buffering=0)
            t = threading.Thread(target=self._pump, args=(r, raw, code), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, fd: int, raw: BinaryIO, code: bytes) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            now = b"%.6f " % time.time() + code + b" "
            if not chunk:
                if pending:
                    with self.lock:
                        self.journal.write(now + pending + b"\n")
                break
            raw.write(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if lines:
                with self.lock:
                    self.journal.write(b"".join(now + line + b"\n" for line in lines))
        raw.close()
        os.close(fd)

    def close(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        for t in self.threads:  # a daemon the task left behind may hold the pipe: do not hang
            t.join(timeout=5)
        self.journal.close()


def heartbeat(path: str, interval: float, stop: threading.Event) -> None:
    while True:
        try:
            with open(path, "w") as f:
                f.write("%.3f\n" % time.time())
        except OSError:
            pass
        if stop.wait(interval):
            return


def write_result(attempt_dir: str, result: dict[str, Any]) -> None:
    tmp = os.path.join(attempt_dir, ".result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(attempt_dir, "result.json"))


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


# ----------------------------------------------------------------------------- main
def run(task_dir: str, attempt: int) -> int:
    attempt_dir = os.path.join(task_dir, f"attempt-{attempt}")
    os.makedirs(attempt_dir, exist_ok=True)
    with open(os.path.join(task_dir, "task.json")) as f:
        spec = json.load(f)
    for p in reversed(spec.get("python_path") or []):
        if p not in sys.path:
            sys.path.insert(0, p)
    stop = threading.Event()
    interval = float(os.environ.get("RUNYARD_HEARTBEAT_INTERVAL", "5"))
    if interval > 0:
        threading.Thread(
            target=heartbeat, args=(os.path.join(attempt_dir, "heartbeat"), interval, stop), daemon=True
        ).start()
    capture = Capture(attempt_dir)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGTERM, _sigterm)
    start = time.time()
    error = None
    try:
        task = spec["task"]
        if task.get(TAG) == "script":
            env = dict(os.environ)
            env.update(task.get("env") or {})
            exit_code = subprocess.call(script_argv(task), env=env)
            if exit_code < 0:
                error = f"killed by signal {-exit_code}"
                exit_code = 128 - exit_code
        else:
            value = Builder(spec.get("main_path")).build(task)
            if callable(value):
                value()
            exit_code = 0
    except SystemExit as exc:
        code = exc.code
        exit_code = code if isinstance(code, int) else (0 if code is None else 1)
        if isinstance(code, str):
            print(code, file=sys.stderr)
        if exit_code == 143:
            error = "terminated (SIGTERM)"
    except BaseException as exc:  # the task's failure, reported, never re-raised
        traceback.print_exc()
        exit_code = 1
        error = f"{type(exc).__name__}: {exc}"
    end = time.time()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    capture.close()
    stop.set()
    write_result(attempt_dir, {"exit_code": exit_code, "start": start, "end": end, "error": error})
    return exit_code


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 runner.py TASK_DIR ATTEMPT", file=sys.stderr)
        return 2
    return run(argv[0], int(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
