"""JSON forms of tasks and executors.

Tasks (``Config``/``Partial``/``Script`` and the values inside them) use a small tagged JSON
form that the stdlib-only in-job runner (``runner.py``) reads without runyard installed.
Executors are attrs classes, (un)structured by a cattrs converter this project owns and
dispatched on their ``kind`` through the executor registry, so classes from plugins loaded
later still round-trip.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pathlib
import sys
from typing import TYPE_CHECKING, Any

from runyard.config import Config, Partial, Script, _Buildable, target_name
from runyard.errors import SerializationError

if TYPE_CHECKING:
    import cattrs

    from runyard.executor import Executor

TAG = "__runyard__"


# ------------------------------------------------------------------------------ targets
def target_ref(target: Any) -> str:
    """``module:qualname`` for an importable target; a clear error for one that is not."""
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module or not qualname:
        raise SerializationError(
            f"cannot store {target!r} as a task target: it has no module and qualified name; "
            "use a function or class defined at the top level of a module"
        )
    if "<lambda>" in qualname:
        raise SerializationError(
            f"cannot store the lambda {qualname} (module {module}) as a task target: a task process "
            "cannot import it; define a named function at the top level of a module"
        )
    if "<locals>" in qualname:
        raise SerializationError(
            f"cannot store the local function {qualname} (module {module}) as a task target: a task "
            "process cannot import it; move it to the top level of its module"
        )
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name and getattr(main, qualname.split(".")[0], None) is not None:
            # started with `python -m pkg.mod`: the task process imports it by that name
            return f"{spec.name}:{qualname}"
        if getattr(main, "__file__", None) is None:
            raise SerializationError(
                f"cannot store {qualname} as a task target: it is defined in an interactive session "
                "(__main__ has no file); define it in a module or a script file"
            )
    try:
        found = resolve_target(f"{module}:{qualname}")
    except SerializationError:
        found = None
    if found is not target:
        raise SerializationError(
            f"cannot store {target_name(target)} as a task target: {module}:{qualname} does not "
            "import back to the same object; define it at the top level of a module"
        )
    return f"{module}:{qualname}"


def resolve_target(ref: str) -> Any:
    module, _, qualname = ref.partition(":")
    try:
        obj: Any = sys.modules[module] if module == "__main__" else importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, KeyError) as exc:
        raise SerializationError(f"cannot import task target {ref!r}: {exc}") from None
    return obj


# ------------------------------------------------------------------------------ tasks
def encode(value: Any, where: str = "task") -> Any:
    """The tagged JSON form of a task or of a value inside one."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(f"{where}: {value!r} cannot be stored as JSON")
        return value
    if isinstance(value, _Buildable):
        kind = "partial" if isinstance(value, Partial) else "config"
        args, kwargs = value.call_args()
        return {
            TAG: kind,
            "target": target_ref(value._target),
            "args": [encode(a, where) for a in args],
            "kwargs": {k: encode(v, f"{where}.{k}") for k, v in kwargs.items()},
        }
    if isinstance(value, Script):
        return {
            TAG: "script",
            "path": value.path,
            "inline": value.inline,
            "args": list(value.args),
            "env": dict(value.env) if value.env else None,
            "entrypoint": value.entrypoint,
        }
    if isinstance(value, list):
        return [encode(v, where) for v in value]
    if isinstance(value, tuple):
        return {TAG: "tuple", "items": [encode(v, where) for v in value]}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SerializationError(f"{where}: dict key {k!r} is not a string")
            out[k] = encode(v, f"{where}.{k}")
        return {TAG: "dict", "items": out} if TAG in out else out
    if isinstance(value, pathlib.PurePath):
        return {TAG: "path", "value": str(value)}
    if callable(value):
        return {TAG: "ref", "target": target_ref(value)}
    raise SerializationError(
        f"{where}: {value!r} (type {type(value).__name__}) cannot be stored as JSON; use numbers, "
        "strings, lists, dicts, paths, configs or importable functions"
    )


def decode(value: Any) -> Any:
    """The object form of :func:`encode`'s output (imports targets)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(TAG)
    if tag is None:
        return {k: decode(v) for k, v in value.items()}
    if tag in ("config", "partial"):
        cls = Partial if tag == "partial" else Config
        return cls(
            resolve_target(value["target"]),
            *[decode(a) for a in value["args"]],
            **{k: decode(v) for k, v in value["kwargs"].items()},
        )
    if tag == "script":
        return Script(
            path=value["path"],
            inline=value["inline"],
            args=tuple(value["args"]),
            env=value["env"],
            entrypoint=value["entrypoint"],
        )
    if tag == "tuple":
        return tuple(decode(v) for v in value["items"])
    if tag == "dict":
        return {k: decode(v) for k, v in value["items"].items()}
    if tag == "path":
        return pathlib.Path(value["value"])
    if tag == "ref":
        return resolve_target(value["target"])
    raise SerializationError(f"unknown tagged value {tag!r}")


def targets(value: Any) -> list[str]:
    """Every ``module:qualname`` an encoded task refers to."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            if v.get(TAG) in ("config", "partial", "ref"):
                out.append(v["target"])
            stack.extend(v.values())
    return out


def check_targets(value: Any, main_path: str | None) -> None:
    """Raise SerializationError unless every target of an encoded task can be imported here
    (targets of the launching script must find that script at ``main_path``)."""
    for ref in targets(value):
        if ref.startswith("__main__:"):
            if not main_path or not os.path.isfile(main_path):
                raise SerializationError(
                    f"task target {ref!r} lives in the script that created the experiment"
                    f" ({main_path or 'unknown'}), which is not there any more"
                )
        else:
            resolve_target(ref)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def check_json_value(value: Any, where: str) -> Any:
    """``value`` if it is plain JSON (metadata values); a clear error naming it otherwise."""
    try:
        json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{where}: {value!r} is not a JSON value ({exc})") from None
    return value


# ------------------------------------------------------------------------------ executors
_converter: cattrs.Converter | None = None


def converter() -> cattrs.Converter:
    """The project's own cattrs converter (never the global one).

    Unions of JSON scalars (``int | str | None``: ``gpus=2`` or ``gpus="all"``) pass through
    as they are when their type is one of the union's."""
    global _converter
    if _converter is None:
        import cattrs
        from cattrs.strategies import configure_union_passthrough

        _converter = cattrs.Converter(forbid_extra_keys=True)
        configure_union_passthrough(int | str | bool | float | None, _converter)
    return _converter


def unstructure_executor(executor: Executor) -> dict[str, Any]:
    data: dict[str, Any] = converter().unstructure(executor)
    return {"kind": executor.kind, **data}


def structure_executor(data: dict[str, Any]) -> Executor:
    import cattrs

    from runyard.plugins import plugin_manager

    data = dict(data)
    kind = data.pop("kind", None)
    cls = plugin_manager().executors.executor_class(str(kind))
    try:
        return converter().structure(data, cls)
    except Exception as exc:  # cattrs raises ExceptionGroups; show them readably
        detail = "; ".join(cattrs.transform_error(exc)) if isinstance(exc, BaseException) else ""
        raise SerializationError(f"cannot rebuild a {cls.__name__} from {data!r}: {detail}") from None
