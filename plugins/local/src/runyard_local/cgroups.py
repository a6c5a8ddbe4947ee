"""Memory limits for local tasks: one memory cgroup per attempt (``LocalExecutor(mem=...)``).

The runner starts inside a cgroup of its own (``<memory root>/runyard/<launch id>``) whose limit
is the executor's ``mem``: the kernel kills the task when it goes over, and the cgroup's own
count of OOM kills tells that apart from any other SIGKILL (failure ``oom``). Works with the
cgroup v2 unified hierarchy (``memory.max``, ``memory.events``) and with v1's memory controller
(``memory.limit_in_bytes``, ``memory.oom_control``); it needs write access there (root, or a
delegated cgroup), else launching says so.
"""

from __future__ import annotations

import os
import re

from runyard.errors import BackendError, ConfigError

V1 = "/sys/fs/cgroup/memory"
V2 = "/sys/fs/cgroup"
PARENT = "runyard"
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?", re.IGNORECASE)
_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: int | str) -> int:
    """Bytes of ``mem``: an int is megabytes; a string a size (``"512M"``, ``"2G"``, ``"1.5GiB"``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value << 20
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f"LocalExecutor.mem must be megabytes (an int > 0) or a size such as '512M' or '2G', got {value!r}"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _v2() -> bool:
    return os.path.exists(os.path.join(V2, "cgroup.controllers"))


def path_for(launch: str) -> str:
    """The cgroup of one launch (``RUNYARD_LAUNCH_ID``: unique, made of hex digits)."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", launch):
        raise BackendError(f"not a launch id: {launch!r}")
    return os.path.join(V2 if _v2() else V1, PARENT, launch)


def create(path: str, limit: int) -> None:
    """The cgroup at ``path`` with a memory limit of ``limit`` bytes (no swap beyond it)."""
    try:
        parent = os.path.dirname(path)
        if _v2():
            if not os.path.isdir(parent):
                os.makedirs(parent, exist_ok=True)
                _write(os.path.join(V2, "cgroup.subtree_control"), "+memory", must=False)
                _write(os.path.join(parent, "cgroup.subtree_control"), "+memory")
            os.makedirs(path, exist_ok=True)
            _write(os.path.join(path, "memory.max"), str(limit))
            _write(os.path.join(path, "memory.swap.max"), "0", must=False)
        else:
            if not os.path.isdir(V1):
                raise OSError("no memory cgroup controller is mounted (neither cgroup v2 nor v1's memory)")
            os.makedirs(path, exist_ok=True)
            _write(os.path.join(path, "memory.limit_in_bytes"), str(limit))
            _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(limit), must=False)
    except OSError as exc:
        raise BackendError(
            f"cannot give the task a memory limit (LocalExecutor.mem): {exc}; it needs write access to "
            f"the memory cgroup at {os.path.dirname(path)} (run as root, or in a delegated cgroup), "
            "or leave mem unset"
        ) from None


def _write(path: str, text: str, must: bool = True) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError:
        if must:
            raise


def oom_kills(path: str) -> int:
    """How many processes the kernel killed in the cgroup for memory (0 when it cannot tell)."""
    name = "memory.events" if _v2() else "memory.oom_control"
    try:
        with open(os.path.join(path, name)) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def remove(path: str) -> None:
    """Remove the cgroup once its processes are gone (best effort: a cgroup left holds nothing)."""
    try:
        os.rmdir(path)
    except OSError:
        pass


def join_command(path: str, argv: list[str]) -> list[str]:
    """``argv`` started inside the cgroup: a shell that moves itself in, then ``exec``s it (so
    the process started stays the runner: its pid is the job id)."""
    script = 'echo $$ >"$1/cgroup.procs" || exit 70; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "runyard-cgroup", path, *argv]
