"""Experiment snapshots: everything needed to run an experiment again.

A snapshot holds the tasks as they were stored (configs after plugins, executors,
dependencies, the plugins that were applied), the settings and metadata, and the
environment: runyard's and the installed plugins' versions, Python, and the git commit,
dirty state and uncommitted diff of the working tree. Environment variables whose names
contain TOKEN, SECRET, PASSWORD or KEY are never written: their names are listed, and
``reproduce()`` takes their values from the reproducing process's environment.

A snapshot file may have been edited by hand, so ``load()`` and ``reproduce()`` check all of
it before anything is created: every field's JSON type (cattrs, strictly: ``"abc"`` is no
list, ``5`` no string), task ids (safe names, unique), dependencies (known ids, listed
earlier, no cycle), the tagged form of each task; ``reproduce()`` then rebuilds every
executor and imports every target. Whatever is wrong is one ConfigError naming the file,
the field (``$.tasks[1].id``) and the value.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import reprlib
import sys
import types
import typing
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from runyard import naming, serialization
from runyard.dag import find_cycle
from runyard.errors import ConfigError
from runyard.redact import is_secret
from runyard.serialization import TAG

if TYPE_CHECKING:
    import cattrs

    from runyard.engine import Engine

FORMAT = 1
_S = typing.TypeVar("_S", bound="Snapshot")
_FIX = "fix the file, or save a new snapshot of the experiment (`runyard snapshot EXPERIMENT -o FILE`)"


def _redact(env: dict[str, str] | None) -> tuple[dict[str, str] | None, list[str]]:
    if not env:
        return env, []
    kept = {k: v for k, v in env.items() if not is_secret(k)}
    return kept, sorted(k for k in env if is_secret(k))


def _from_environment(env: dict[str, str] | None, names: list[str], missing: list[str]) -> dict[str, str]:
    """``env`` with the secrets ``names`` taken from this process's environment; the names
    that are not set there are added to ``missing``."""
    out = dict(env or {})
    for name in names:
        if name in os.environ:
            out[name] = os.environ[name]
        else:
            missing.append(name)
    return out


@attrs.define
class Snapshot:
    """A JSON-serializable description of an experiment; see the module docstring.

    ``runyard.ExperimentSnapshot`` (in ``experiment.py``) adds ``reproduce()``."""

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
    _file: str | None = attrs.field(default=None, init=False, eq=False, repr=False)  # set by load()

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, filter=lambda a, _: a.init)

    def save(self, path: str) -> str:
        """Write the snapshot as JSON (atomically); returns the path written.

        The file is written aside, then renamed over ``path``: so through a symbolic link to
        its target (never replacing the link), and never over a device, a pipe or a folder (as
        root that would replace ``/dev/full`` or ``/dev/stdout``): those are refused.
        """
        path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if os.path.islink(path):
            path = os.path.realpath(path)
        if os.path.exists(path) and not os.path.isfile(path):
            raise ConfigError(
                f"cannot write the snapshot to {path!r}: it is not a regular file; give a file's path"
            )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls: type[_S], path: str) -> _S:
        """Read a snapshot written by :meth:`save`; a ConfigError unless all of it is valid."""
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
        snapshot = _structure(data, cls, repr(path))
        snapshot._file = path
        snapshot._check(snapshot._source())
        return snapshot

    def checked(self) -> Reproduction:
        """What a reproduction adds to a new experiment, every part checked first (a
        ConfigError naming the file otherwise): the tasks, encoded as the store keeps them,
        with the secrets' values from this process's environment (a warning names those it
        has not got), and where their targets are imported from."""
        source = self._source()
        entries, imports = self._check(source)
        rows = []
        missing: list[str] = []
        for i, t in enumerate(entries):
            try:  # before the secrets are added: an error shows the executor
                serialization.structure_executor(t.executor)  # its plugin installed, its fields valid
                serialization.check_targets(t.task, imports.main_path)  # importable here
            except ConfigError as exc:
                raise ConfigError(f"cannot reproduce {source}: task {t.id!r} ($.tasks[{i}]): {exc}") from None
            executor = dict(
                t.executor, env_vars=_from_environment(t.executor.get("env_vars"), t.redacted_env, missing)
            )
            task = t.task
            if task.get(TAG) == "script" and t.redacted_script_env:
                task = dict(task, env=_from_environment(task.get("env"), t.redacted_script_env, missing))
            rows.append((t.id, serialization.dumps(task), serialization.dumps(executor),
                         list(dict.fromkeys(t.dependencies)), t.plugins))  # fmt: skip
        if missing:
            warnings.warn(
                "secret environment variables are not in snapshots and not set here: "
                + ", ".join(sorted(set(missing))),
                stacklevel=3,
            )
        return Reproduction(rows, imports.main_path, imports.python_path)

    def _source(self) -> str:
        """The snapshot, for error messages: its file, if it was read from one."""
        return repr(self._file) if self._file else f"the snapshot of experiment {self.source_experiment_id!r}"

    def _check(self, source: str) -> tuple[list[_Task], _Imports]:
        """The tasks and import paths, checked (see the module docstring); a ConfigError
        naming ``source`` with every problem found otherwise."""
        problems: list[str] = []
        if _structured(self.to_dict(), type(self), "$", problems) is None:  # edited after load()?
            raise _invalid(source, problems)
        checked = [_structured(t, _Task, f"$.tasks[{i}]", problems) for i, t in enumerate(self.tasks)]
        paths = {k: v for k, v in self.environment.items() if k in ("main_path", "python_path")}
        imports = _structured(paths, _Imports, "$.environment", problems)
        try:
            naming.check_name(self.title, "$.title: experiment title")
        except ConfigError as exc:
            problems.append(str(exc))
        if problems or imports is None:
            raise _invalid(source, problems)
        entries = [t for t in checked if t is not None]  # all of them: no problems
        index: dict[str, int] = {}
        for i, t in enumerate(entries):
            try:
                naming.check_name(t.id, f"$.tasks[{i}].id: task id", naming.MAX_ID_LEN)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            if t.id in index:
                problems.append(
                    f"$.tasks[{i}].id: task id {t.id!r} is used twice (also $.tasks[{index[t.id]}].id)"
                )
            index.setdefault(t.id, i)
            problems += _form_problems(t.task, f"$.tasks[{i}].task", top=True)
            if not isinstance(t.executor.get("kind"), str):
                problems.append(
                    f"$.tasks[{i}].executor.kind: expected an executor kind (a string), got "
                    f"{_short(t.executor.get('kind'))}"
                )
        if not problems:  # dependencies name ids: only once every id is sound
            problems += _dependency_problems(entries, index)
        if problems:
            raise _invalid(source, problems)
        return entries, imports


@attrs.frozen
class Reproduction:
    """A checked snapshot's tasks ``(id, task JSON, executor JSON, dependencies, plugins)``
    and import paths, ready for ``Engine.add_encoded``."""

    rows: list[tuple[str, str, str, list[str], list[Any]]]
    main_path: str | None
    python_path: list[str]


# ------------------------------------------------------------------------------ checking
@attrs.frozen
class _Task:
    """One entry of a snapshot's ``tasks``, as written by :func:`snapshot_fields`."""

    id: str
    task: dict[str, Any]
    executor: dict[str, Any]
    dependencies: list[str]
    plugins: list[Any] = attrs.Factory(list)
    redacted_env: list[str] = attrs.Factory(list)
    redacted_script_env: list[str] = attrs.Factory(list)


@attrs.frozen
class _Imports:
    """Where the tasks' targets are imported from (two keys of ``environment``)."""

    main_path: str | None = None
    python_path: list[str] = attrs.Factory(list)


def _form(name: str, **fields: Any) -> type:
    return attrs.make_class(name, {k: attrs.field(type=t) for k, t in fields.items()}, frozen=True)


_CALL = _form("Call", target=str, args=list[Any], kwargs=dict[str, Any])
# the tagged values of serialization.encode, by tag: the keys each must have, and their types
_FORMS: dict[str, type] = {
    "config": _CALL,
    "partial": _CALL,
    "script": _form(
        "Script",
        path=str | None,
        inline=str | None,
        args=list[str],
        env=dict[str, str] | None,
        entrypoint=str,
    ),
    "tuple": _form("Tuple", items=list[Any]),
    "dict": _form("Dict", items=dict[str, Any]),
    "path": _form("Path", value=str),
    "ref": _form("Ref", target=str),
}
_TASK_FORMS = ("config", "partial", "script")


def _form_problems(value: Any, where: str, top: bool = False) -> list[str]:
    """What is wrong with the tagged JSON form of a task (``serialization.encode``) at ``where``."""
    tag = value.get(TAG) if isinstance(value, dict) else None
    if top and tag not in _TASK_FORMS:
        return [f"{where}.{TAG}: a task is one of {', '.join(map(repr, _TASK_FORMS))}, got {_short(tag)}"]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _form_problems(v, f"{where}[{i}]")]
    if not isinstance(value, dict):
        return []
    if tag is None:  # a plain dict
        return [p for k, v in value.items() for p in _form_problems(v, f"{where}.{k}")]
    form = _FORMS.get(tag) if isinstance(tag, str) else None
    if form is None:
        return [f"{where}.{TAG}: unknown tagged value {_short(tag)} (one of {', '.join(_FORMS)})"]
    try:
        _converter().structure({k: v for k, v in value.items() if k != TAG}, form)
    except Exception as exc:  # cattrs raises ExceptionGroups: reported below
        return _messages(exc, where)
    if tag == "script":
        try:
            serialization.decode(value)  # Script's own rules (a path or inline code, not both)
        except ConfigError as exc:
            return [f"{where}: {exc}"]
    inner: list[tuple[str, Any]] = []
    if tag in ("config", "partial"):
        inner = [(f"{where}.args[{i}]", v) for i, v in enumerate(value["args"])]
        inner += [(f"{where}.kwargs.{k}", v) for k, v in value["kwargs"].items()]
    elif tag == "tuple":
        inner = [(f"{where}.items[{i}]", v) for i, v in enumerate(value["items"])]
    elif tag == "dict":
        inner = [(f"{where}.items.{k}", v) for k, v in value["items"].items()]
    return [p for w, v in inner for p in _form_problems(v, w)]


def _dependency_problems(entries: list[_Task], index: dict[str, int]) -> list[str]:
    """Unknown dependencies, then a cycle (named), then dependencies listed after their
    dependent (tasks are added, retried and run directly in list order)."""
    problems = []
    for i, t in enumerate(entries):
        for dep in t.dependencies:
            if dep not in index:
                problems.append(
                    f"$.tasks[{i}].dependencies: task {t.id!r} depends on {dep!r}, which is not a task"
                    f" of the snapshot (its tasks: {_short(list(index))})"
                )
    if problems:
        return problems
    cycle = find_cycle({t.id: t.dependencies for t in entries})
    if cycle:
        shown = cycle if len(cycle) <= 8 else [*cycle[:4], f"... ({len(cycle) - 5} more)", cycle[-1]]
        return [f"$.tasks: the dependencies form a cycle: {' -> '.join(shown)}"]
    for i, t in enumerate(entries):
        for dep in t.dependencies:
            if index[dep] > i:
                problems.append(
                    f"$.tasks[{i}].dependencies: task {t.id!r} depends on {dep!r}, which comes after it"
                    f" ($.tasks[{index[dep]}]): list every task after its dependencies"
                )
    return problems


_shortener = reprlib.Repr()
_shortener.maxlevel, _shortener.maxstring, _shortener.maxother = 1, 60, 60
_short = _shortener.repr


class _Mismatch(TypeError):
    """A JSON value of the wrong type; the message names the value."""


def _exact(kind: type, what: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise _Mismatch(f"expected {what}, got {_short(value)}")
        return value

    return hook


@functools.cache
def _converter() -> cattrs.Converter:
    """The project's converter, strict for a file edited by hand: a value of the wrong JSON
    type is an error, never converted (``5`` is no ``"5"``, ``"abc"`` no list of letters)."""
    strict = serialization.converter().copy()
    strict.register_structure_hook(str, _exact(str, "a string"))
    strict.register_structure_hook(int, _exact(int, "a whole number"))

    def is_list(t: Any) -> bool:
        return typing.get_origin(t) is list

    def list_hook(t: Any) -> Callable[[Any, Any], Any]:
        (item,) = typing.get_args(t)
        check, items = _exact(list, "a list"), strict.get_structure_hook(item)
        return lambda value, _: [items(v, item) for v in check(value, t)]

    def is_optional(t: Any) -> bool:
        args = typing.get_args(t)
        return (
            typing.get_origin(t) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args
        )

    def optional_hook(t: Any) -> Callable[[Any, Any], Any]:
        (inner,) = [a for a in typing.get_args(t) if a is not type(None)]
        hook = strict.get_structure_hook(inner)
        return lambda value, _: None if value is None else hook(value, inner)

    strict.register_structure_hook_factory(is_list, list_hook)
    strict.register_structure_hook_factory(is_optional, optional_hook)
    return strict


def _describe(exc: BaseException, type_: Any) -> str:
    import cattrs

    return str(exc) if isinstance(exc, _Mismatch) else cattrs.v.format_exception(exc, type_)


def _messages(exc: BaseException, path: str) -> list[str]:
    """cattrs's error (or group of them) as ``"<what is wrong> @ $.field"`` lines."""
    import cattrs

    return cattrs.transform_error(exc, path=path, format_exception=_describe)


_T = typing.TypeVar("_T")


def _structured(value: Any, cls: type[_T], path: str, problems: list[str]) -> _T | None:
    """``value`` structured as ``cls``; None, with what is wrong added to ``problems``, if it is not one."""
    try:
        return _converter().structure(value, cls)
    except Exception as exc:  # cattrs raises ExceptionGroups: reported readably
        problems += _messages(exc, path)
        return None


def _structure(value: Any, cls: type[_T], source: str) -> _T:
    problems: list[str] = []
    out = _structured(value, cls, "$", problems)
    if out is None:
        raise _invalid(source, problems)
    return out


def _invalid(source: str, problems: list[str], shown: int = 5) -> ConfigError:
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return ConfigError(
        f"{source} is not a valid runyard snapshot: {'; '.join(problems[:shown])}{more}; {_FIX}"
    )


def snapshot_fields(engine: Engine) -> dict[str, Any]:
    """The fields of a snapshot of the engine's experiment, secrets left out (their names kept)."""
    tasks = []
    for record in engine.store.tasks(engine.experiment_id):
        executor = engine.column(record, "executor")
        env, redacted = _redact(executor.get("env_vars"))
        executor["env_vars"] = env or {}
        task = engine.column(record, "task")
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
    exp = engine.reload()
    settings = exp.settings
    return {
        "title": exp.title,
        "description": exp.description,
        "tags": list(exp.tags),
        "metadata": engine.store.metadata(engine.experiment_id),
        "settings": {
            "log_level": settings.log_level,
            "max_retries": settings.max_retries,
            "timeout": settings.timeout,
            "checkpoint_interval": settings.checkpoint_interval,
            "max_parallel": settings.max_parallel,
            "retry_on": settings.retry_kinds,
            "metric_patterns": settings.metric_patterns,
        },
        "tasks": tasks,
        "environment": {
            **environment(settings.cwd or os.getcwd()),
            "main_path": exp.main_path,
            "python_path": settings.python_path or [],
        },
        "source_experiment_id": engine.experiment_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }


def environment(cwd: str) -> dict[str, Any]:
    """Versions and source state: runyard, installed plugins, Python, git."""
    import platform
    from importlib import metadata

    from runyard.plugins import EXPORT_GROUP, PLUGIN_GROUP

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
    import subprocess

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
