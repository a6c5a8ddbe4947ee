"""Secrets in environment variables: names that contain TOKEN, SECRET, PASSWORD or KEY.

Their values are never written anywhere: not to the store, task.json, snapshots, runyard's
logs or dry-run output. Where the store and task.json would hold a secret's value (an
executor's ``env_vars``, a Script's ``env``), they hold :data:`MARKER`; the value stays in
the memory of the process that added the task (:func:`conceal`), which hands it to a
supervisor it starts on that process's stdin pipe (:func:`export`, :func:`load`).

A job is launched with every marker replaced (:func:`reveal`): by the value kept in memory,
else by the driving process's environment variable of the same name (a ``runyard takeover``,
``retry`` or ``resume`` from a new process: ``TOKEN=... runyard takeover EXP``). A task whose
secret is in neither fails to launch, and its reason says so (:class:`MissingSecretError`).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from runyard.errors import MissingSecretError
from runyard.serialization import TAG

SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|KEY", re.IGNORECASE)
MASK = "***"
MARKER = "<runyard: secret, not stored>"  # a string: executors' env_vars are dict[str, str]

# (experiment id, task id) -> {name: value}: each task's own values, in this process only
_kept: dict[tuple[str, str], dict[str, str]] = {}


def is_secret(name: str) -> bool:
    return bool(SECRET.search(name))


def masked(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every secret's value replaced by ``***`` (for showing, never for running)."""
    return {k: (MASK if is_secret(k) else v) for k, v in env.items()}


def conceal(experiment_id: str, task_id: str, executor: dict[str, Any], task: dict[str, Any]) -> None:
    """Replace the secret values of an unstructured executor's ``env_vars`` and of an encoded
    Script's ``env`` by :data:`MARKER` (new dicts, in place of the old ones), and keep the
    values in this process's memory for the task. A Script's value wins over the
    executor's, as in the job's environment."""
    kept: dict[str, str] = {}
    holders = [(executor, "env_vars")]
    if task.get(TAG) == "script":
        holders.append((task, "env"))
    for holder, field in holders:
        env = holder.get(field)
        if env and any(is_secret(name) and value != MARKER for name, value in env.items()):
            kept.update((n, v) for n, v in env.items() if is_secret(n) and v != MARKER)
            holder[field] = {n: (MARKER if is_secret(n) else v) for n, v in env.items()}
    if kept:
        _kept.setdefault((experiment_id, task_id), {}).update(kept)


def reveal(experiment_id: str, task_id: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` with each :data:`MARKER` replaced by its value: the one kept in this process's
    memory for the task, else this process's environment variable of that name. Raises
    :class:`MissingSecretError` naming the ones that are in neither."""
    if MARKER not in env.values():
        return env
    kept = _kept.get((experiment_id, task_id), {})
    out = dict(env)
    missing = []
    for name, value in env.items():
        if value != MARKER:
            continue
        found = kept.get(name, os.environ.get(name))
        if found is None:
            missing.append(name)
        else:
            out[name] = found
    if missing:
        names = ", ".join(missing)
        raise MissingSecretError(
            f"task {task_id} needs the secret{'s' if len(missing) > 1 else ''} {names}; secrets are "
            f"never stored: set {names} in the environment of the process that drives the experiment, "
            f"e.g. `{' '.join(f'{n}=...' for n in missing)} runyard takeover {experiment_id}`"
        )
    return out


def reveal_task(experiment_id: str, task_id: str, task: dict[str, Any]) -> dict[str, Any]:
    """An encoded task with its Script ``env`` revealed (:func:`reveal`); others as they are."""
    if task.get(TAG) != "script" or not task.get("env"):
        return task
    return dict(task, env=reveal(experiment_id, task_id, task["env"]))


def export(experiment_id: str) -> bytes:
    """The values kept for the experiment's tasks, as JSON for :func:`load` (on a pipe, never
    on disk or on a command line)."""
    values = {task: env for (exp, task), env in _kept.items() if exp == experiment_id}
    return json.dumps(values).encode()


def load(experiment_id: str, data: bytes | str) -> None:
    """Keep the values :func:`export` gave (empty ``data``: none)."""
    if not data.strip():
        return
    for task_id, env in json.loads(data).items():
        _kept.setdefault((experiment_id, task_id), {}).update(env)
