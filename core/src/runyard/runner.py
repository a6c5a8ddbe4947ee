"""The in-job runner: ``python3 runner.py TASK_DIR ATTEMPT``.

Standard library only, so that every backend can copy this file next to a task and run it
with any ``python3`` (a cluster node or a container image needs no runyard); the job carries
it with the rest of ``runyard.jobfiles.JOB_FILES`` (``runner.sh``, ``job.py``, ``_shim/``).
It reads ``TASK_DIR/task.json``, runs the task, and writes into ``TASK_DIR/attempt-ATTEMPT``:

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

The task sees ``RUNYARD_ATTEMPT_DIR`` (the task's attempt folder: ``RUNYARD_TASK_DIR/attempt-N``
when that is set, else this runner's) and ``RUNNER_DIR/_shim`` at the end of ``PYTHONPATH`` (and
of a Python task's ``sys.path``): a stand-in ``runyard`` package, so that ``import runyard.job``
works where runyard is not installed. The runner's own folder is taken off ``sys.path``: core's
modules there (``packaging.py``...) would shadow the task's imports.

The runner passes TERM, INT and HUP on to the task's group and SIGKILLs the group
``RUNYARD_CANCEL_GRACE`` seconds later (default 5) if it is still there; USR1 and USR2 are
passed on. When the task's main process has ended, whatever it left in its group is
SIGKILLed, the output drained (for at most 2 s: a process that left the group may hold the
pipes), the result written. A log that cannot be written (disk full) ends the task the same
way, its error "disk full: cannot write stdout.log (...)".

Preemption warning: ``RUNYARD_PREEMPT_SIGNAL`` names a signal, without ``SIG`` (``USR1``). When the runner gets it, it first creates ``ATTEMPT_DIR/preempting`` (one line, the
time; ``runyard.job.preempting()`` looks for it), then passes the signal on. A Python task and
every rank get a handler for it that does nothing (``runyard.job.on_preempt`` adds to it), so
the warning never kills them; a Script gets the default disposition (it may trap it).

Launcher mode: with ``RUNYARD_LAUNCHER`` set (JSON, from ``runyard.launchers``; the job-time
``RUNYARD_NNODES``, ``RUNYARD_RDZV_ENDPOINT`` and ``RUNYARD_RDZV_ID`` beat its values) the
task's child becomes torchrun's agent, ``PYTHON runner.py --agent --nnodes N --nproc-per-node P
--rdzv-backend B --rdzv-endpoint E --rdzv-id I --max-restarts M --log-dir ATTEMPT_DIR/torchelastic
runner.py --rank TASK_DIR ATTEMPT`` (a Python without torch: a clear error, exit 1; the id made
a safe folder name, torchrun names one after it). The agent is ``torch.distributed.run``
with one change: its workers stay in the runner's session, each in a process group of its own
(torchrun gives each a session of its own, out of reach of a pause or a cleanup of the task's
session); the runner signals the agent's group and those of its workers, and the preemption
signal is ignored by the agent. Rank mode, ``runner.py --rank TASK_DIR ATTEMPT``: one worker.
It dies with the agent (PR_SET_PDEATHSIG), runs the task once (a Script too), writes
``ATTEMPT_DIR/ranks/<RANK>/result.json`` (``{"rank", "exit_code", "error", "signal", "end"}``)
and exits with the task's code. Rank 0 writes to the task's output (to its ``stdout.log`` and
``stderr.log`` directly when its agent runs on another node than the task's runner), rank N
to ``ATTEMPT_DIR/ranks/N/stdout.log`` and ``stderr.log``. The task fails when the agent does
(any rank failed), its error the first failing rank's ("rank 1 failed: ValueError: ...");
stopped by TERM, INT or HUP it is recorded as that signal (143...), as without a launcher.
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
from collections.abc import Iterator
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
HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(HERE, "_shim")  # a stand-in `runyard` package for the task's PYTHONPATH
PREEMPTING = "preempting"  # created in the attempt folder on the preemption warning (runyard/job.py)
RANKS = "ranks"  # ATTEMPT_DIR/ranks/<rank>/: the output of the ranks other than 0
LAUNCHER_ENV = "RUNYARD_LAUNCHER"  # JSON (runyard/launchers.py); job-time overrides below
LAUNCHER_OVERRIDES = {
    "nnodes": "RUNYARD_NNODES",
    "rdzv_endpoint": "RUNYARD_RDZV_ENDPOINT",
    "rdzv_id": "RUNYARD_RDZV_ID",
}
WORKER_POPEN = "torch.distributed.elastic.multiprocessing.subprocess_handler.subprocess_handler"


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
    # once: the same signal again (the runner passing on one that its task got as well, from a
    # scheduler that signals every process of the job) must not cut the task's finally blocks short
    signal.signal(signum, _ignore)
    raise SystemExit(128 + signum)


def _ignore(signum: int, frame: Any) -> None:
    pass  # a handler, not SIG_IGN: a program started from here gets the default again


def preempt_signal() -> int | None:
    """The preemption warning's signal: ``RUNYARD_PREEMPT_SIGNAL`` names it as backends write it,
    without ``SIG`` (``USR1``; runyard/job.py reads it alike); None when unset or no signal."""
    sig = getattr(signal, "SIG" + os.environ.get("RUNYARD_PREEMPT_SIGNAL", "").strip().upper(), None)
    return int(sig) if isinstance(sig, signal.Signals) else None


def run_task(task_dir: str) -> tuple[int, str | None, int | None]:
    """Runs the task in this process: (exit code, error, signal)."""
    error = signum = None
    warning = preempt_signal()
    if warning is not None and warning not in ESCALATED:
        try:
            signal.signal(warning, _ignore)  # a Python task lives through it (a program: see below)
        except (OSError, ValueError):
            pass  # SIGKILL, SIGSTOP: cannot be caught (the runner said so)
    if SHIM not in sys.path:
        sys.path.append(SHIM)  # `import runyard.job` where runyard is not installed
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
                signal.signal(sig, _ignore)  # (a handler: the program starts with the default)
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


def child(
    task_dir: str,
    attempt: int,
    pipes: tuple[int, int, int],
    mask: set[int | signal.Signals],
    launcher: str | None,
) -> int:
    """The task's process: its own group, fds 1 and 2 on the capture pipes. Ends as a plain
    ``python3`` would (waits for the task's threads, runs its atexit handlers), then tells the
    runner its exit code and error through ``report``. Under a launcher it becomes the
    launcher's agent (an exec), which starts the ranks."""
    out, err, report = pipes
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
    error: str | None
    if launcher is None:
        code, error, signum = run_task(task_dir)
    else:  # (returns only if the launcher could not start)
        (code, error), signum = start_launcher(task_dir, attempt, launcher), None
    if os.getpid() == me:  # not a process the task forked that returned here
        finish()
        text = json.dumps({"exit_code": code, "error": error and error[:600], "signal": signum})
        os.write(report, text.encode())
    return code


def finish() -> None:
    """What a ``python3`` does when its main module has ended: wait for the task's threads,
    run its atexit handlers, flush."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    import atexit

    atexit._run_exitfuncs()
    _flush()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


# ----------------------------------------------------------------------------- launchers
def launcher_argv(task_dir: str, attempt: int, text: str) -> list[str]:
    """The agent's command line for ``RUNYARD_LAUNCHER`` (its job-time overrides applied):
    ``PYTHON runner.py --agent TORCHRUN-OPTIONS runner.py --rank TASK_DIR ATTEMPT``."""
    config = json.loads(text)
    if not isinstance(config, dict) or config.get("kind") != "torchrun":
        raise ValueError("not a launcher this runner knows")
    for key, name in LAUNCHER_OVERRIDES.items():
        if os.environ.get(name):
            config[key] = os.environ[name]
    # torchrun names a folder after the id: no "/" (the id is experiment/task/attempt)
    config["rdzv_id"] = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(config.get("rdzv_id")))
    options = []
    for key in ("nnodes", "nproc_per_node", "rdzv_backend", "rdzv_endpoint", "rdzv_id", "max_restarts"):
        if key not in config:
            raise ValueError(f"no {key!r}")
        options += ["--" + key.replace("_", "-"), str(config[key])]
    # torchrun's own files (empty folders, mostly) in the attempt, not in a /tmp/torchelastic_* left behind
    folder = os.environ.get("RUNYARD_ATTEMPT_DIR") or os.path.join(task_dir, f"attempt-{attempt}")
    options += ["--log-dir", os.path.join(folder, "torchelastic")]
    runner = os.path.abspath(__file__)
    return [sys.executable, runner, "--agent", *options, runner, "--rank", task_dir, str(attempt)]


def start_launcher(task_dir: str, attempt: int, text: str) -> tuple[int, str]:
    """Becomes the launcher's agent (an exec: this returns only when it cannot start)."""
    try:
        argv = launcher_argv(task_dir, attempt, text)
    except (ValueError, TypeError) as exc:
        error = f"{LAUNCHER_ENV} is not a launcher the runner can start ({exc}): {text}"
    else:
        if importlib.util.find_spec("torch") is not None:
            warning = preempt_signal()
            if warning is not None and warning not in ESCALATED:
                try:
                    signal.signal(warning, signal.SIG_IGN)  # the agent lives through it (ranks: run_task)
                except (OSError, ValueError):
                    pass
            _flush()
            os.execv(argv[0], argv)  # noqa: S606 (the agent: runner.py under this python)
        error = (
            f"the torchrun launcher needs PyTorch, and {sys.executable} cannot import torch: "
            "install torch for the Python the task runs with (the executor's python)"
        )
    print(f"runyard runner: {error}", file=sys.stderr)
    return 1, error


def agent_main(args: list[str]) -> int:
    """``runner.py --agent TORCHRUN-OPTIONS SCRIPT ARGS``: torchrun (``torch.distributed.run``)
    with its workers kept in this session, each in a process group of its own. (torchrun
    gives each worker a session of its own, where the backend's pause, cancel and cleanup of
    the task's session would not find it.)"""
    try:
        handler: Any = importlib.import_module(WORKER_POPEN)
    except ImportError:  # another torch: its workers as it starts them (and they die with it)
        handler = None
    popen = getattr(handler, "Popen", None)
    if popen is not None:

        def in_this_session(*args: Any, **kwargs: Any) -> Any:
            if kwargs.pop("start_new_session", False):
                if sys.version_info >= (3, 11):
                    kwargs["process_group"] = 0
                else:
                    kwargs["preexec_fn"] = os.setpgrp
            return popen(*args, **kwargs)

        handler.Popen = in_this_session
    from torch.distributed.run import main as torchrun  # type: ignore[import-not-found]

    torchrun(args)
    return 0


def rank_main(task_dir: str, attempt: int) -> int:
    """``runner.py --rank TASK_DIR ATTEMPT``: one rank of the task, started by the launcher's
    agent. Rank 0 writes to the task's output; rank N to ``ATTEMPT_DIR/ranks/N/stdout.log``
    and ``stderr.log``. Each rank's ``ranks/N/result.json`` says how it ended."""
    rank = int(os.environ.get("RANK") or 0)
    own = os.path.join(task_dir, f"attempt-{attempt}")
    folder = os.environ.get("RUNYARD_ATTEMPT_DIR") or own
    _die_with_parent()
    mine = os.path.join(folder, RANKS, str(rank))
    os.makedirs(mine, exist_ok=True)
    if rank != 0:
        _redirect(mine)
    elif os.path.realpath(folder) != os.path.realpath(own):  # under another node's agent
        _redirect(folder)
    signal.signal(signal.SIGTERM, _sigterm)
    code, error, signum = run_task(task_dir)
    finish()
    result = {"rank": rank, "exit_code": code, "error": error, "signal": signum, "end": time.time()}
    try:
        write_result(mine, result)
    except OSError:
        pass  # the exit code says it all the same
    return code


def _redirect(folder: str) -> None:
    """fds 1 and 2 appended to ``folder``'s stdout.log and stderr.log."""
    for fd, name in ((1, "stdout.log"), (2, "stderr.log")):
        log = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, fd)
        os.close(log)


def _die_with_parent() -> None:
    """SIGKILL this process when its parent (the agent) dies, as a SIGKILL of the agent
    leaves its workers behind otherwise (Linux; elsewhere nothing is done)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before that
        os._exit(128 + signal.SIGKILL)


def rank_failure(attempt_dir: str, before: float | None = None) -> str | None:
    """Why the ranks failed, from their results: the first rank to fail, and how many did
    (``before``: only ranks that ended before that time count)."""
    failed = []
    try:
        names = os.listdir(os.path.join(attempt_dir, RANKS))
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(attempt_dir, RANKS, name, "result.json")) as f:
                result = json.load(f)
            if result["exit_code"] != 0 and (before is None or (result.get("end") or 0) < before):
                failed.append(result)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not failed:
        return None
    first = min(failed, key=lambda r: r.get("end") or 0)
    why = first.get("error") or f"exit code {first['exit_code']}"
    others = f" ({len(failed)} ranks failed)" if len(failed) > 1 else ""
    return f"rank {first.get('rank')} failed: {why}{others}"


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

    def __init__(self, attempt_dir: str, result_fd: int, task_attempt_dir: str | None = None) -> None:
        self.dir = attempt_dir
        self.task_attempt_dir = task_attempt_dir or attempt_dir  # the task's (RUNYARD_ATTEMPT_DIR)
        self.result_fd = result_fd
        self.lock = threading.RLock()  # every write to the logs, and the task's end
        self.pid = 0
        self.ended = False  # the task's main process has exited (its group may be reaped)
        self.failure: str | None = None  # "disk full: ..."
        self.journal_failed = False
        self.killer: threading.Timer | None = None
        self.cancelled: int | None = None  # TERM, INT or HUP came (the first): the attempt is being stopped
        self.cancelled_at: float | None = None  # when
        self.launcher = os.environ.get(LAUNCHER_ENV) or None
        self.warning = preempt_signal()
        self.grace = _seconds(os.environ.get("RUNYARD_CANCEL_GRACE"), 5.0)

    def _open(self, name: str) -> int:
        return os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def run(self, task_dir: str, attempt: int) -> int:
        self.journal = self._open("journal.log")
        (out_r, out_w), (err_r, err_w), (report_r, report_w) = os.pipe(), os.pipe(), os.pipe()
        handled: set[int] = set(FORWARDED)
        if self.warning is not None:
            handled.add(self.warning)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, handled)  # until each side has handlers
        start = time.time()
        pid = os.fork()
        if pid == 0:
            for fd in (out_r, err_r, report_r, self.journal, self.result_fd):
                os.close(fd)
            return child(task_dir, attempt, (out_w, err_w, report_w), mask, self.launcher)
        self.pid = pid
        try:
            os.setpgid(pid, pid)  # as the child does: no signal may find the group missing
        except OSError:
            pass
        for fd in (out_w, err_w, report_w):
            os.close(fd)
        for sig in handled:
            try:
                signal.signal(sig, self.forward)
            except (OSError, ValueError):  # RUNYARD_PREEMPT_SIGNAL=KILL
                print(f"runyard runner: cannot catch signal {sig} (RUNYARD_PREEMPT_SIGNAL)", file=sys.stderr)
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
        if self.cancelled or self.launcher:  # and so, when it was cancelled, do the other groups
            kill_session_leftovers()  # it started (the launcher's workers have groups of their own)
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
            elif self.launcher and exit_code != 0:  # the agent's: it stopped its workers, or they failed
                if self.cancelled:
                    exit_code, error, signum = (
                        128 + self.cancelled,
                        signal_error(self.cancelled),
                        self.cancelled,
                    )
                else:
                    error = rank_failure(self.task_attempt_dir) or f"torchrun exited with code {exit_code}"
        if self.launcher and self.cancelled and exit_code != 0:
            # a rank that failed first (on another node: srun stopped this runner) says why
            error = rank_failure(self.task_attempt_dir, before=self.cancelled_at) or error
        return exit_code, self.failure or error, signum

    # --- signals ----------------------------------------------------------------------
    def forward(self, signum: int, frame: Any = None) -> None:
        if signum == self.warning:  # the task may ask runyard.job.preempting() as soon as it gets it
            try:
                with open(os.path.join(self.task_attempt_dir, PREEMPTING), "a") as f:
                    f.write("%.3f\n" % time.time())
            except OSError:
                pass
        if signum in ESCALATED and not self.cancelled:  # (noted before it is passed on: a rank
            self.cancelled, self.cancelled_at = signum, time.time()  # that ends of it ends after)
        self._killpg(signum)
        if signum in ESCALATED:
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
        """``signum`` to the task's group (and, under a launcher, to its workers' groups)."""
        for group in [self.pid, *(workers(self.pid) if self.launcher else ())]:
            try:
                os.killpg(group, signum)
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


def _processes() -> Iterator[tuple[int, bytes]]:
    """(pid, fields of /proc/PID/stat after the name) of every process there is."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            yield int(entry), stat[stat.rfind(b")") + 2 :]


def workers(agent: int) -> list[int]:
    """The process groups led by children of ``agent`` (a launcher's workers)."""
    out = []
    for pid, stat in _processes():
        fields = stat.split()
        try:
            if int(fields[1]) == agent and int(fields[2]) == pid:
                out.append(pid)
        except (IndexError, ValueError):
            continue
    return out


def kill_session_leftovers() -> None:
    """SIGKILL every other process of the session this runner leads (the local backend starts
    it as a session leader): process groups a cancelled task started besides its own, such as
    ``set -m`` jobs. Nothing is done where the runner leads no session (a batch job, a
    container): there its scheduler ends the job's processes. A process that called setsid
    has left the session, and is not found."""
    me = os.getpid()
    if os.getsid(0) != me:
        return
    for pid, stat in _processes():
        try:
            if pid != me and int(stat.split()[3]) == me:
                os.kill(pid, signal.SIGKILL)
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
USAGE = "usage: python3 runner.py TASK_DIR ATTEMPT (or --rank TASK_DIR ATTEMPT, --agent TORCHRUN-ARGS)"


def main(argv: list[str]) -> int:
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath(HERE):
        del sys.path[0]  # runyard's own modules here (packaging.py...) must not shadow the task's
    if argv[:1] == ["--agent"]:
        return agent_main(argv[1:])
    ranked = argv[:1] == ["--rank"]
    args = argv[1:] if ranked else argv
    if len(args) != 2 or not args[1].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    task_dir, attempt = args[0], int(args[1])
    if ranked:
        return rank_main(task_dir, attempt)
    attempt_dir = os.path.join(task_dir, f"attempt-{attempt}")
    try:
        os.makedirs(attempt_dir, exist_ok=True)
        if not claim(attempt_dir, os.path.basename(os.path.normpath(task_dir)), attempt):
            return CLAIMED_EXIT
        reserved = reserve(attempt_dir)
    except OSError as exc:
        print(f"runyard runner: cannot prepare {attempt_dir}: {exc}", file=sys.stderr)
        return 74
    task_attempt_dir = task_attempt_folder(attempt) or attempt_dir
    os.environ["RUNYARD_ATTEMPT_DIR"] = task_attempt_dir
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{path}{os.pathsep}{SHIM}" if path else SHIM  # `import runyard.job`
    return Runner(attempt_dir, reserved, task_attempt_dir).run(task_dir, attempt)


def task_attempt_folder(attempt: int) -> str | None:
    """The task's attempt folder, where the ranks' output and the preemption marker go:
    ``RUNYARD_TASK_DIR/attempt-N``. It is where this runner writes, except for a node agent of
    a multi-node job, whose runner files are in ``TASK_DIR/ranks/<node>/``."""
    task_dir = os.environ.get("RUNYARD_TASK_DIR")
    return os.path.join(task_dir, f"attempt-{attempt}") if task_dir else None


if __name__ == "__main__":
    code = main(sys.argv[1:])
    _flush()
    os._exit(code)  # in the runner and the task alike: no interpreter teardown to wait for
