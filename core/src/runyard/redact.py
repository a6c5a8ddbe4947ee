"""Secrets in environment variables: names that contain TOKEN, SECRET, PASSWORD or KEY.

Their values are never written to snapshots, runyard's logs, or dry-run output.
"""

from __future__ import annotations

import re

SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|KEY", re.IGNORECASE)
MASK = "***"


def is_secret(name: str) -> bool:
    return bool(SECRET.search(name))


def masked(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every secret's value replaced by ``***`` (for showing, never for running)."""
    return {k: (MASK if is_secret(k) else v) for k, v in env.items()}
