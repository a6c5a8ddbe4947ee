"""Names that become paths: experiment titles, task names, artifact names.

Only letters, digits, ``.``, ``_`` and ``-``; first character a letter or digit; no ``..``.
So no title or name can climb out of its folder or hide a NUL or a newline.
"""

from __future__ import annotations

import re

from runyard.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_LEN = 100


def check_name(value: object, what: str) -> str:
    """``value`` if it is a valid name; a ConfigError naming it and the rule otherwise."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {value!r}")
    if not value:
        raise ConfigError(f"{what} must not be empty")
    if len(value) > MAX_LEN or not _NAME.fullmatch(value) or ".." in value:
        raise ConfigError(
            f"{what} {value!r} is not allowed: use letters, digits, '.', '_' and '-', starting with"
            f" a letter or digit, at most {MAX_LEN} characters (no '/', '..', spaces or NUL)"
        )
    return value


def slug(value: str) -> str:
    """A valid name made from any text (for names derived from targets)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")
    out = re.sub(r"\.\.+", ".", out)
    return (out or "task")[:MAX_LEN]
