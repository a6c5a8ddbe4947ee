"""Names that become paths: experiment titles, task names and ids, artifact names.

Only letters, digits, ``.``, ``_`` and ``-``; first character a letter or digit; no ``..``.
So no title or name can climb out of its folder or hide a NUL or a newline.
:func:`check_component` is the store's last line of defence for ids it reads back.
"""

from __future__ import annotations

import re

from runyard.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_LEN = 100
MAX_ID_LEN = 255  # a task id is a name plus ``-<n>`` suffixes; 255 is a file name's limit


def check_name(value: object, what: str, max_len: int = MAX_LEN) -> str:
    """``value`` if it is a valid name; a ConfigError naming it and the rule otherwise."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {value!r}")
    if not value:
        raise ConfigError(f"{what} must not be empty")
    if len(value) > max_len or not _NAME.fullmatch(value) or ".." in value:
        raise ConfigError(
            f"{what} {value!r} is not allowed: use letters, digits, '.', '_' and '-', starting with"
            f" a letter or digit, at most {max_len} characters (no '/', '..', spaces or NUL)"
        )
    return value


def check_component(value: str, what: str) -> str:
    """``value`` if it is one path component that stays in its folder: not empty, ``.`` or
    ``..``, no ``/`` or NUL. Only a damaged store row can hold anything else."""
    if value in ("", ".", "..") or "/" in value or "\0" in value:
        raise ConfigError(
            f"refusing {what} {value!r} as a folder name: it must be one path component (not empty,"
            " '.' or '..', no '/' or NUL); the store row that holds it is damaged"
        )
    return value


def slug(value: str) -> str:
    """A valid name made from any text (for names derived from targets)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")
    out = re.sub(r"\.\.+", ".", out)
    return (out or "task")[:MAX_LEN]


# --- the experiment folder's layout (one place: the store, core and every backend use it)
def task_dir(experiment_dir: str, task_id: str) -> str:
    """A task's folder: ``EXPERIMENT_DIR/tasks/TASK_ID`` (task.json, one folder per attempt)."""
    return f"{experiment_dir}/tasks/{check_component(task_id, 'task id')}"


def attempt_dir(experiment_dir: str, task_id: str, attempt: int) -> str:
    """The folder the runner writes one attempt's files into: ``TASK_DIR/attempt-N``."""
    return f"{task_dir(experiment_dir, task_id)}/attempt-{int(attempt)}"
