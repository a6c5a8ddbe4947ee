"""The in-job runner: ``python3 runner.py TASK_DIR ATTEMPT``.

Standard library only, so that every backend can copy this one file next to a task and
run it with any ``python3`` (a cluster node or a container image needs no runyard). It
reads ``TASK_DIR/task.json``, runs the task, and writes into ``TASK_DIR/attempt-ATTEMPT``:

- ``claim.json``: first of all, exclusively (a temporary file linked into place):
  ``{"launch", "pid", "starttime", "host", "time", "slurm_job_id", "slurm_array_job_id",
  "slurm_array_task_id"}``. A runner that finds the attempt claimed already exits with 75
  and touches nothing, so no attempt runs twice;
- ``stdout.log``, ``stderr.log``: the raw output of the task (and of any process it
  starts), byte for byte;
- ``journal.log``: one line per output line, ``<unix time> <o|e> <text>``; a last line
  without a newline is journalled when its stream closes, a line longer than 1 MiB in
  pieces of about 1 MiB;
- ``heartbeat``: rewritten by the runner every ``RUNYARD_HEARTBEAT_INTERVAL`` seconds (0
  disables);
- ``result.json``: ``{"exit_code", "start", "end", "error", "signal"}``, written last,
  atomically, into space reserved before the task started (so even a full disk gets it).

The task runs in a child of the runner (a fork: no second interpreter start), in a process
group of its own within the runner's session. The child builds a Config (its target called
with its built arguments) and, if the built value is callable, calls it with no arguments;
builds and calls a Partial; runs a Script as a process. Exit code 0 is success; an exception
is failure (exit code 1, its traceback in stderr); ``sys.exit(n)`` gives n. SIGTERM raises
SystemExit(143) in the task so that ``finally`` blocks run. The child's real exit status is
the truth: ``os._exit(0)`` is 0, a death by signal N is 128+N.

The runner passes TERM, INT and HUP on to the task's group and SIGKILLs the group
``RUNYARD_CANCEL_GRACE`` seconds later (default 5) if it is still there; USR1 and USR2 are
passed on. When the task's main process has ended, whatever it left in its group is
SIGKILLed, the output drained (for at most 2 s: a process that left the group may hold the
pipes), the result written. A log that cannot be written (disk full) ends the task the same
way, its error "disk full: cannot write stdout.log (...)".
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from typing import Any

TAG = "__runyard__"
MAIN_MODULE = "__mp_main__"
CLAIM = "claim.json"  # the names and the exit code are core's (runyard/jobfiles.py)
CLAIMED_EXIT = 75
RESERVED = 4096  # bytes of result.json kept before the task starts
MAX_ENTRY = 1 << 20  # a longer line is journalled in pieces
DRAIN = 2.0  # seconds the output may take to end once the task has ended
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
ESCALATED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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


def signal_error(signum: int) -> str:
    if signum == signal.SIGTERM:
        return "terminated (SIGTERM)"
    try:
        return f"killed by signal {signum} ({signal.Signals(signum).name})"
    except ValueError:
        return f"killed by signal {signum}"


# ----------------------------------------------------------------------------- the task
def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _ignore(signum: int, frame: Any) -> None:
    pass  # a handler, not SIG_IGN: a program started from here gets the default again


def run_task(task_dir: str) -> tuple[int, str | None, int | None]:
    """Runs the task in this process: (exit code, error, signal)."""
    error = signum = None
    try:
        with open(os.path.join(task_dir, "task.json")) as f:
            spec = json.load(f)
        for p in reversed(spec.get("python_path") or []):
            if p not in sys.path:
                sys.path.insert(0, p)
        task = spec["task"]
        if task.get(TAG) == "script":
            import subprocess

            for sig in (signal.SIGUSR1, signal.SIGUSR2):  # the script's to handle, not ours
                signal.signal(sig, _ignore)
            # its env is in ours already (the backend gives JobSpec.env): task.json has no secrets
            exit_code = subprocess.call(script_argv(task))
            if exit_code < 0:
                signum = -exit_code
                exit_code, error = 128 + signum, signal_error(signum)
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
            error, signum = signal_error(signal.SIGTERM), signal.SIGTERM
    except BaseException as exc:  # the task's failure, reported, never re-raised
        import traceback

        traceback.print_exc()
        exit_code = 1
        error = f"{type(exc).__name__}: {exc}"
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return exit_code, error, signum


def child(task_dir: str, out: int, err: int, report: int, mask: set[int | signal.Signals]) -> int:
    """The task's process: its own group, fds 1 and 2 on the capture pipes. Ends as a plain
    ``python3`` would (waits for the task's threads, runs its atexit handlers), then tells the
    runner its exit code and error through ``report``."""
    os.setpgid(0, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGTERM, _sigterm)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    me = os.getpid()
    code, error, signum = run_task(task_dir)
    if os.getpid() == me:  # not a process the task forked that returned here
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        import atexit

        atexit._run_exitfuncs()
        _flush()
        text = json.dumps({"exit_code": code, "error": error and error[:600], "signal": signum})
        os.write(report, text.encode())
    return code


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


# ----------------------------------------------------------------------------- the runner
def claim(attempt_dir: str, task: str, attempt: int) -> bool:
    """Claims the attempt for this runner; False (said on stderr) if another one has it."""
    path = os.path.join(attempt_dir, CLAIM)
    if not os.path.lexists(path):
        env = os.environ.get
        data = {
            "launch": env("RUNYARD_LAUNCH_ID") or None,
            "pid": os.getpid(),
            "starttime": _starttime(),
            "host": os.uname().nodename,
            "time": time.time(),
            "slurm_job_id": env("SLURM_JOB_ID") or None,
            "slurm_array_job_id": env("SLURM_ARRAY_JOB_ID") or None,
            "slurm_array_task_id": env("SLURM_ARRAY_TASK_ID") or None,
        }
        text = (json.dumps(data) + "\n").encode()
        tmp = os.path.join(attempt_dir, f".claim.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(text)
            try:
                os.link(tmp, path)  # readers never see a partial claim
                return True
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, text)
                os.close(fd)
                return True
        except FileExistsError:
            pass
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    try:
        with open(path, errors="replace") as f:
            held = f.read().strip()
    except OSError:
        held = ""
    print(
        f"runyard runner: attempt {attempt} of task {task} was claimed already ({held}); "
        "not running it twice",
        file=sys.stderr,
    )
    return False


def _starttime() -> int | None:
    try:
        with open("/proc/self/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Stream:
    """One captured output stream: its pipe, its raw log, and the line it has open."""

    def __init__(self, runner: Runner, name: str, code: bytes, fd: int, raw: int) -> None:
        self.runner, self.name, self.code, self.fd, self.raw = runner, name, code, fd, raw
        self.open_line: list[bytes] = []  # pieces of the last line, no newline yet
        self.open_size = 0
        self.closed = False  # set once its output is complete (or given up on)
        self.raw_failed = False
        self.thread = threading.Thread(target=self.pump, daemon=True)

    def pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            self.runner.take(self, chunk)
        self.runner.close_stream(self)

    def entries(self, chunk: bytes) -> bytes:
        """The journal entries of the lines that ``chunk`` completes."""
        stamp = b"%.6f " % time.time() + self.code + b" "
        if b"\n" not in chunk:
            self.open_line.append(chunk)
            self.open_size += len(chunk)
            return self.close_line(stamp) if self.open_size >= MAX_ENTRY else b""
        lines = chunk.split(b"\n")
        if self.open_line:
            lines[0] = b"".join(self.open_line) + lines[0]
        last = lines.pop()
        self.open_line, self.open_size = ([last], len(last)) if last else ([], 0)
        return stamp + (b"\n" + stamp).join(lines) + b"\n"

    def close_line(self, stamp: bytes | None = None) -> bytes:
        """The entry of the line left open; b"" when there is none."""
        if not self.open_line:
            return b""
        stamp = stamp or b"%.6f " % time.time() + self.code + b" "
        line, self.open_line, self.open_size = b"".join(self.open_line), [], 0
        return stamp + line + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Runner:
    """Runs one attempt: the task in a forked child, the output pumped into the logs."""

    def __init__(self, attempt_dir: str, result_fd: int) -> None:
        self.dir = attempt_dir
        self.result_fd = result_fd
        self.lock = threading.RLock()  # every write to the logs, and the task's end
        self.pid = 0
        self.ended = False  # the task's main process has exited (its group may be reaped)
        self.failure: str | None = None  # "disk full: ..."
        self.journal_failed = False
        self.killer: threading.Timer | None = None
        self.cancelled = False  # TERM, INT or HUP came: the attempt is being stopped
        self.grace = _seconds(os.environ.get("RUNYARD_CANCEL_GRACE"), 5.0)

    def _open(self, name: str) -> int:
        return os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def run(self, task_dir: str) -> int:
        self.journal = self._open("journal.log")
        (out_r, out_w), (err_r, err_w), (report_r, report_w) = os.pipe(), os.pipe(), os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # until each side has handlers
        start = time.time()
        pid = os.fork()
        if pid == 0:
            for fd in (out_r, err_r, report_r, self.journal, self.result_fd):
                os.close(fd)
            return child(task_dir, out_w, err_w, report_w, mask)
        self.pid = pid
        try:
            os.setpgid(pid, pid)  # as the child does: no signal may find the group missing
        except OSError:
            pass
        for fd in (out_w, err_w, report_w):
            os.close(fd)
        for sig in FORWARDED:
            signal.signal(sig, self.forward)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        stop = threading.Event()
        interval = _seconds(os.environ.get("RUNYARD_HEARTBEAT_INTERVAL"), 5.0)
        if interval > 0:
            beat = os.path.join(self.dir, "heartbeat")
            threading.Thread(target=heartbeat, args=(beat, interval, stop), daemon=True).start()
        streams = [
            Stream(self, "stdout.log", b"o", out_r, self._open("stdout.log")),
            Stream(self, "stderr.log", b"e", err_r, self._open("stderr.log")),
        ]
        for stream in streams:
            stream.thread.start()

        if hasattr(os, "waitid"):  # the child stays (a zombie) until reaped: its group id too
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        end = time.time()
        with self.lock:
            self.ended = True
            if self.killer is not None:
                self.killer.cancel()
        self._killpg(signal.SIGKILL)  # what the task left behind ends with it
        if self.cancelled:  # and so, when it was cancelled, do the other groups it started
            kill_session_leftovers()
        _, status = os.waitpid(pid, 0)

        deadline = time.monotonic() + DRAIN
        for stream in streams:
            stream.thread.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            for stream in streams:
                self.close_stream(stream, locked=True)
        stop.set()
        exit_code, error, signum = self._outcome(status, report_r)
        result = {"exit_code": exit_code, "start": start, "end": end, "error": error, "signal": signum}
        write_result(self.dir, result, self.result_fd)
        return exit_code

    def _outcome(self, status: int, report_r: int) -> tuple[int, str | None, int | None]:
        """Exit code, error and signal from the child's real exit status (its report adds
        the error when it agrees)."""
        if os.WIFSIGNALED(status):
            signum: int | None = os.WTERMSIG(status)
            assert signum is not None
            exit_code, error = 128 + signum, signal_error(signum)
        else:
            exit_code, error, signum = os.WEXITSTATUS(status), None, None
            os.set_blocking(report_r, False)
            try:
                report = json.loads(os.read(report_r, 1 << 16) or b"null")
            except (OSError, ValueError):
                report = None
            if isinstance(report, dict) and report.get("exit_code") == exit_code:
                error, signum = report.get("error"), report.get("signal")
        return exit_code, self.failure or error, signum

    # --- signals ----------------------------------------------------------------------
    def forward(self, signum: int, frame: Any = None) -> None:
        self._killpg(signum)
        if signum in ESCALATED:
            self.cancelled = True
            self._escalate()

    def _escalate(self) -> None:
        """SIGKILL the task's group after the grace, unless it has ended by then."""
        with self.lock:
            if self.killer is None and not self.ended:
                self.killer = threading.Timer(self.grace, self._kill)
                self.killer.daemon = True
                self.killer.start()

    def _kill(self) -> None:
        with self.lock:
            if not self.ended:
                self._killpg(signal.SIGKILL)

    def _killpg(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except OSError:
            pass

    def fail(self, message: str) -> None:
        """The attempt fails with ``message`` (the first one): the task is terminated."""
        if self.failure is None:
            self.failure = message
            if not self.ended:
                self._killpg(signal.SIGTERM)
                self._escalate()

    # --- output -----------------------------------------------------------------------
    def take(self, stream: Stream, chunk: bytes) -> None:
        with self.lock:
            if stream.closed:
                return
            if not stream.raw_failed:
                try:
                    _write_all(stream.raw, chunk)
                except OSError as exc:
                    stream.raw_failed = True
                    self.fail(f"disk full: cannot write {stream.name} ({exc})")
            self._journal(stream.entries(chunk))

    def _journal(self, entries: bytes) -> None:
        if entries and not self.journal_failed:
            try:
                _write_all(self.journal, entries)
            except OSError as exc:
                self.journal_failed = True
                self.fail(f"disk full: cannot write journal.log ({exc})")

    def close_stream(self, stream: Stream, locked: bool = False) -> None:
        """The stream's output is complete (or given up on): its open line is journalled."""
        if not locked:
            with self.lock:
                return self.close_stream(stream, locked=True)
        if not stream.closed:
            stream.closed = True
            self._journal(stream.close_line())
            os.close(stream.raw)


def _seconds(text: str | None, default: float) -> float:
    """A duration from the environment: ``default`` unless it is a number of seconds >= 0."""
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if 0 <= value < float("inf") else default


def kill_session_leftovers() -> None:
    """SIGKILL every other process of the session this runner leads (the local backend starts
    it as a session leader): process groups a cancelled task started besides its own, such as
    ``set -m`` jobs. Nothing is done where the runner leads no session (a batch job, a
    container): there its scheduler ends the job's processes. A process that called setsid
    has left the session, and is not found."""
    me = os.getpid()
    if os.getsid(0) != me:
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rfind(b")") + 2 :].split()[3]) == me:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue


def heartbeat(path: str, interval: float, stop: threading.Event) -> None:
    while True:
        try:
            with open(path, "w") as f:
                f.write("%.3f\n" % time.time())
        except OSError:
            pass  # a full disk: not fatal
        if stop.wait(interval):
            return


def _result_tmp(attempt_dir: str, flags: int = 0) -> int:
    return os.open(os.path.join(attempt_dir, ".result.json.tmp"), os.O_WRONLY | os.O_CREAT | flags, 0o644)


def reserve(attempt_dir: str) -> int:
    """The file that becomes result.json, its space taken already (see write_result)."""
    fd = _result_tmp(attempt_dir, os.O_TRUNC)
    _write_all(fd, b" " * (RESERVED - 1) + b"\n")
    os.fsync(fd)
    return fd


def write_result(attempt_dir: str, result: dict[str, Any], reserved: int | None = None) -> None:
    """``result.json``, atomically: a temporary file, renamed. Given the file ``reserve``
    made, the result overwrites its bytes: no new block is needed on the disk."""
    fd = _result_tmp(attempt_dir, os.O_TRUNC) if reserved is None else reserved
    try:
        data = json.dumps(result).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(os.path.join(attempt_dir, ".result.json.tmp"), os.path.join(attempt_dir, "result.json"))


# ----------------------------------------------------------------------------- main
def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 runner.py TASK_DIR ATTEMPT", file=sys.stderr)
        return 2
    task_dir, attempt = argv[0], int(argv[1])
    attempt_dir = os.path.join(task_dir, f"attempt-{attempt}")
    try:
        os.makedirs(attempt_dir, exist_ok=True)
        if not claim(attempt_dir, os.path.basename(os.path.normpath(task_dir)), attempt):
            return CLAIMED_EXIT
        reserved = reserve(attempt_dir)
    except OSError as exc:
        print(f"runyard runner: cannot prepare {attempt_dir}: {exc}", file=sys.stderr)
        return 74
    return Runner(attempt_dir, reserved).run(task_dir)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    _flush()
    os._exit(code)  # in the runner and the task alike: no interpreter teardown to wait for
