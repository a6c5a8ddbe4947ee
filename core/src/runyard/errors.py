"""The one exception hierarchy of runyard.

Every message says what was wrong, with the offending value, and what to do about it.
The CLI prints these without a traceback.
"""

from __future__ import annotations

import os


class RunyardError(Exception):
    """Base class of every error runyard raises on purpose."""


class ConfigError(RunyardError, ValueError):
    """A task, executor or experiment setting is invalid."""


class ExecutorFieldError(RunyardError, TypeError):
    """An executor was given a field it does not have."""


class MissingSecretError(ConfigError):
    """A task needs a secret environment variable that this process neither kept nor has."""


class SerializationError(ConfigError):
    """A value cannot be stored as JSON or a target cannot be imported by a task process."""


class UnknownExperimentError(RunyardError, LookupError):
    """No experiment with that id or title exists in the store."""


class UnknownTaskError(RunyardError, KeyError):
    """No task with that id exists in the experiment."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class TaskStateError(RunyardError):
    """The call makes no sense for the task's current state (retry of a running task, ...)."""


class ExperimentStateError(RunyardError):
    """The call makes no sense for the experiment's current state (run() twice, ...)."""


class BackendError(RunyardError):
    """An executor's backend failed (daemon down, host unreachable, submission refused)."""


class BackendRefusedError(BackendError):
    """The backend refuses to work until something is fixed by hand (a changed host key, a
    refused login): retrying cannot help. A poll that meets it stops the driver with its
    message, rather than wait in silence."""


class UnreachableError(BackendError):
    """The backend's service cannot be reached now (a cluster's login node, a daemon): it may
    come back. ``since``: when it was last reached, or first failed (unix time; None: not
    known). Core never fails a task for it: a launch waits, a cancel is carried out later,
    a read answers from the store."""

    def __init__(self, message: str, since: float | None = None) -> None:
        super().__init__(message)
        self.since = since


class ArtifactError(RunyardError):
    """An artifact cannot be recorded or fetched."""


class StoreError(RunyardError):
    """The state database cannot be opened or is from an unknown schema version."""


class DamagedStoreError(StoreError):
    """The state database, or a value in it, is not what runyard writes (a broken file, a
    hand-edited row). ``experiment_id``: the experiment whose row it is (None: the whole
    database). Commands on what is not damaged still work."""

    def __init__(self, path: str, problem: str, experiment_id: str | None = None) -> None:
        super().__init__(path, problem, experiment_id)
        self.path, self.problem, self.experiment_id = path, problem, experiment_id

    def __str__(self) -> str:
        return (
            f"the store at {self.path} is damaged: {self.problem}; repair it (sqlite3 {self.path}) "
            "or restore it from a backup"
        )


class DiskFullError(StoreError):
    """A write failed for lack of disk space; what was written before stays readable."""

    def __init__(self, path: str, what: str, then: str = " and try again") -> None:
        super().__init__(path, what, then)
        self.path, self.what, self.then = path, what, then
        self.free = free_bytes(path)

    def __str__(self) -> str:
        free = "" if self.free is None else f" ({self.free // 1024} KiB free there)"
        return f"disk full: {self.what}{free}; free some space on that disk{self.then}"


def free_bytes(path: str) -> int | None:
    """Bytes this user may still write on the file system holding ``path`` (None: unknown)."""
    try:
        st = os.statvfs(path if os.path.exists(path) else os.path.dirname(path) or ".")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_full(path: str) -> bool:
    """Whether the file system holding ``path`` has less than 1 MiB free: too little for the
    store's next transaction or a task's log, whatever the error that said so."""
    free = free_bytes(path)
    return free is not None and free < 1 << 20


class PluginError(RunyardError):
    """A plugin is broken or two plugins claim the same name."""


class PluginNotInstalledError(RunyardError, ImportError):
    """A public name belongs to a plugin distribution that is not installed."""
