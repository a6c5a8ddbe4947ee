"""Helpers of the tests in tests/plugins/ray (imported as ``_ray_helpers``)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def head_jobs(address: str) -> list[dict[str, Any]]:
    """Every job the head at ``address`` knows (its Jobs API, as Ray's own SDK asks)."""
    with urllib.request.urlopen(f"{address}/api/jobs/", timeout=10) as r:
        return list(json.load(r))


def jobs_of(address: str, experiment_id: str) -> list[dict[str, Any]]:
    return [
        j for j in head_jobs(address) if (j.get("metadata") or {}).get("runyard_experiment") == experiment_id
    ]
