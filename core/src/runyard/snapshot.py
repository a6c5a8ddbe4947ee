"""Experiment snapshots: everything needed to run an experiment again.

A snapshot holds the tasks as they were stored (configs after plugins, executors,
dependencies, the plugins that were applied), the settings and metadata, and the
environment: runyard's and the installed plugins' versions, Python, and the git commit,
dirty state and uncommitted diff of the working tree. Environment variables whose names
contain TOKEN, SECRET, PASSWORD or KEY are never written: their names are listed, and
``reproduce()`` takes their values from the reproducing process's environment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import warnings
from importlib import metadata
from typing import TYPE_CHECKING, Any

import attrs

from runyard import serialization
from runyard.errors import ConfigError
from runyard.plugins import EXPORT_GROUP, PLUGIN_GROUP
from runyard.redact import is_secret

if TYPE_CHECKING:
    from runyard.experiment import Experiment

FORMAT = 1


def _redact(env: dict[str, str] | None) -> tuple[dict[str, str] | None, list[str]]:
    if not env:
        return env, []
    kept = {k: v for k, v in env.items() if not is_secret(k)}
    return kept, sorted(k for k in env if is_secret(k))


@attrs.define
class ExperimentSnapshot:
    """A JSON-serializable description of an experiment; see the module docstring."""

    title: str
    description: str | None
    tags: list[str]
    metadata: dict[str, Any]
    settings: dict[str, Any]
    tasks: list[dict[str, Any]]
    environment: dict[str, Any]
    source_experiment_id: str
    created_at: str
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def save(self, path: str) -> str:
        """Write the snapshot as JSON (atomically); returns the path."""
        path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str) -> ExperimentSnapshot:
        """Read a snapshot written by :meth:`save`."""
        try:
            with open(os.fspath(path)) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"no snapshot file at {path!r}") from None
        except ValueError as exc:
            raise ConfigError(f"{path!r} is not a runyard snapshot (invalid JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(
                f"{path!r} is not a runyard snapshot of format {FORMAT} "
                f"(found format {data.get('format') if isinstance(data, dict) else None!r})"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{path!r} is not a complete runyard snapshot: {exc}") from None

    def reproduce(self, *, base_dir: str | None = None) -> Experiment:
        """A new, not yet launched experiment with the same tasks, settings and metadata."""
        from runyard.experiment import Experiment

        rows = []
        missing = []
        for t in self.tasks:
            executor = dict(t["executor"])
            env = dict(executor.get("env_vars") or {})
            for name in t.get("redacted_env", []):
                if name in os.environ:
                    env[name] = os.environ[name]
                else:
                    missing.append(name)
            executor["env_vars"] = env
            serialization.structure_executor(executor)  # fails clearly if its plugin is missing
            task = t["task"]
            if task.get(serialization.TAG) == "script" and t.get("redacted_script_env"):
                task = dict(task, env=dict(task.get("env") or {}))
                for name in t["redacted_script_env"]:
                    if name in os.environ:
                        task["env"][name] = os.environ[name]
                    else:
                        missing.append(name)
            serialization.check_targets(task, self.environment.get("main_path"))
            rows.append((t["id"], serialization.dumps(task), serialization.dumps(executor),
                         list(t["dependencies"]), list(t.get("plugins", []))))  # fmt: skip
        if missing:
            warnings.warn(
                "secret environment variables are not in snapshots and not set here: "
                + ", ".join(sorted(set(missing))),
                stacklevel=2,
            )
        settings = self.settings  # every task checked above: nothing half-made on error
        exp = Experiment(
            self.title, description=self.description, tags=self.tags, metadata=self.metadata,
            log_level=settings.get("log_level", "INFO"), max_retries=settings.get("max_retries", 0),
            timeout=settings.get("timeout"), checkpoint_interval=settings.get("checkpoint_interval"),
            base_dir=base_dir,
        )  # fmt: skip
        exp._add_encoded(
            rows, main_path=self.environment.get("main_path"), python_path=self.environment.get("python_path")
        )
        return exp


def create_snapshot(exp: Experiment) -> ExperimentSnapshot:
    tasks = []
    for record in exp.store.tasks(exp.experiment_id):
        executor = json.loads(record.executor)
        env, redacted = _redact(executor.get("env_vars"))
        executor["env_vars"] = env or {}
        task = json.loads(record.task)
        entry: dict[str, Any] = {
            "id": record.id,
            "task": task,
            "executor": executor,
            "dependencies": record.dependencies,
            "plugins": record.plugins,
            "redacted_env": redacted,
        }
        if task.get(serialization.TAG) == "script" and task.get("env"):
            task["env"], entry["redacted_script_env"] = _redact(task["env"])
        tasks.append(entry)
    settings = exp.settings
    return ExperimentSnapshot(
        title=exp.title,
        description=exp.description,
        tags=exp.tags,
        metadata=exp.get_metadata(),
        settings={k: settings.get(k) for k in ("log_level", "max_retries", "timeout", "checkpoint_interval")},
        tasks=tasks,
        environment={
            **environment(settings.get("cwd") or os.getcwd()),
            "main_path": exp._meta().main_path,
            "python_path": settings.get("python_path") or [],
        },
        source_experiment_id=exp.experiment_id,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(),
    )


def environment(cwd: str) -> dict[str, Any]:
    """Versions and source state: runyard, installed plugins, Python, git."""
    versions = {}
    for group in (PLUGIN_GROUP, EXPORT_GROUP):
        for ep in metadata.entry_points(group=group):
            if ep.dist is not None:
                versions[ep.dist.name] = ep.dist.version
    try:
        versions["runyard"] = metadata.version("runyard")
    except metadata.PackageNotFoundError:
        versions["runyard"] = None  # type: ignore[assignment]
    return {
        "runyard": versions.get("runyard"),
        "packages": dict(sorted(versions.items())),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git": git_state(cwd),
    }


def _git(args: list[str], cwd: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(cwd: str) -> dict[str, Any] | None:
    """Commit, dirty flag and uncommitted diff of the git work tree at ``cwd`` (None outside one)."""
    root = _git(["rev-parse", "--show-toplevel"], cwd)
    if root is None:
        return None
    commit = _git(["rev-parse", "HEAD"], cwd)
    status = _git(["status", "--porcelain"], cwd) or ""
    diff = _git(["diff", "HEAD", "--binary"], cwd) if commit else None
    return {
        "root": root.strip(),
        "commit": commit.strip() if commit else None,
        "dirty": bool(status.strip()),
        "status": status,
        "diff": diff,
    }
