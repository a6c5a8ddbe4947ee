"""The one exception hierarchy of runyard.

Every message says what was wrong, with the offending value, and what to do about it.
The CLI prints these without a traceback.
"""

from __future__ import annotations


class RunyardError(Exception):
    """Base class of every error runyard raises on purpose."""


class ConfigError(RunyardError, ValueError):
    """A task, executor or experiment setting is invalid."""


class ExecutorFieldError(RunyardError, TypeError):
    """An executor was given a field it does not have."""


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


class ArtifactError(RunyardError):
    """An artifact cannot be recorded or fetched."""


class StoreError(RunyardError):
    """The state database cannot be opened or is from an unknown schema version."""


class PluginError(RunyardError):
    """A plugin is broken or two plugins claim the same name."""


class PluginNotInstalledError(RunyardError, ImportError):
    """A public name belongs to a plugin distribution that is not installed."""
