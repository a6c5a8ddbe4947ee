"""Task targets used by the tests: importable by the task processes (tests/ is on PYTHONPATH)."""

from __future__ import annotations

import os
import sys
import time


def hello(name: str = "world") -> None:
    print(f"hello {name}")


def add(a: int, b: int = 2) -> int:
    return a + b


def fail(message: str = "boom") -> None:
    print("about to fail")
    raise RuntimeError(message)


def exit_with(code: int) -> None:
    sys.exit(code)


def sleep_then_print(seconds: float = 1.0, message: str = "done") -> None:
    time.sleep(seconds)
    print(message)


def write_file(path: str, text: str = "x") -> None:
    with open(path, "a") as f:
        f.write(text)


def print_env(*names: str) -> None:
    for name in names:
        print(f"{name}={os.environ.get(name)}")


def count_runs(path: str, fail_until: int = 0) -> None:
    """Append a line to ``path``; fail while the file has fewer than ``fail_until`` lines."""
    with open(path, "a") as f:
        f.write("run\n")
    with open(path) as f:
        runs = len(f.readlines())
    if runs < fail_until:
        raise RuntimeError(f"failing run {runs}")


class Trainer:
    """A class target: built, then called because it is callable."""

    def __init__(self, model_size: str = "8b", learning_rate: float = 1e-3, precision: str = "32") -> None:
        self.model_size = model_size
        self.learning_rate = learning_rate
        self.precision = precision

    def __call__(self) -> None:
        print(f"training {self.model_size} lr={self.learning_rate} precision={self.precision}")


def write_pid(path: str) -> None:
    """Write the pid of the process running the task to ``path``."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))


def print_executable() -> None:
    """Print the interpreter running the task (``sys.executable``)."""
    print(sys.executable)


def report_precision(precision: str = "32", env_names: list[str] | None = None) -> None:
    """A function target that takes ``precision``: prints it and the named variables."""
    print(f"precision={precision}")
    for name in env_names or []:
        print(f"{name}={os.environ.get(name)}")


def run_recipe(trainer: object, name: str = "recipe", callbacks: object = None) -> object:
    """A recipe target that takes no ``precision`` itself: running it runs its built trainer."""
    print(f"recipe {name}")
    return trainer


def takes_kwargs(**options: object) -> None:
    """A target with only ``**options``: it names no ``precision`` parameter."""
    print(sorted(options))


def joins(first: str, /, *rest: str, sep: str = " ") -> str:
    """Positional-only and *args parameters; prints and returns the joined text."""
    text = sep.join([first, *rest])
    print(text)
    return text


def report_imports(*modules: str) -> None:
    """Print ``<module>=<True|False>``: whether each module can be imported where the task runs."""
    import importlib.util

    for name in modules:
        print(f"{name}={importlib.util.find_spec(name) is not None}")


def print_lines(count: int, delay: float = 0.0) -> None:
    """Print ``line <i>`` ``count`` times, ``delay`` seconds apart (output that arrives over time)."""
    for i in range(count):
        print(f"line {i}", flush=True)
        time.sleep(delay)


def use_memory(megabytes: int) -> None:
    """Allocate and touch ``megabytes`` MB, a megabyte at a time (a task that runs out of memory
    under a limit is killed on the way), then print ``allocated``."""
    chunks = []
    for _ in range(megabytes):
        chunks.append(bytearray(1 << 20))  # zero-filled: every page is touched
    print("allocated", len(chunks), flush=True)


def ignore_sigterm_then_sleep(seconds: float = 60.0) -> None:
    """Ignore SIGTERM (as a task stuck in a C call would), print ``ready``, then sleep."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(seconds)


def _append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())  # one write of one line: never interleaved with another
    finally:
        os.close(fd)


def record_execution(effects: str, name: str, seconds: float) -> None:
    """One execution of task ``name``, traced in the folder ``effects`` (the fault tests count
    them): ``<start time> <pid>`` appended to ``<name>.started``, a sleep, ``<end time> <pid>``
    appended to ``<name>.finished``. The process holds a lock on ``<name>.lock`` while it
    lives; when another execution of the task holds it already, the start line ends ``overlap``."""
    import fcntl

    lock = os.open(os.path.join(effects, f"{name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when this process ends
        overlap = ""
    except BlockingIOError:
        overlap = " overlap"
    _append_line(os.path.join(effects, f"{name}.started"), f"{time.time()} {os.getpid()}{overlap}\n")
    time.sleep(seconds)
    _append_line(os.path.join(effects, f"{name}.finished"), f"{time.time()} {os.getpid()}\n")
