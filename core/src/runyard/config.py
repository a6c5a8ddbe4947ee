"""Task descriptions: ``Config``, ``Partial``, ``Script`` and ``build``.

A ``Config`` is a buildable description of a call: ``Config(f, a=1)`` builds to ``f(a=1)``.
Arguments read and write as attributes; reading an argument that was not set gives the
target's default, reading a name that the target does not accept raises ``AttributeError``
(so ``hasattr(cfg, "precision")`` means "the target takes ``precision``").
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from runyard.errors import ConfigError


class _Required:
    """Marker returned when reading an argument that has no default and was not set."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __deepcopy__(self, memo: dict[int, Any]) -> _Required:
        return self


REQUIRED: Any = _Required()


@functools.lru_cache(maxsize=512)
def _signature(target: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have none: accept any argument
        return None


def target_name(target: Any) -> str:
    return getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)


class _Buildable:
    """Shared machinery of Config and Partial. Arguments are bound to parameter names."""

    def __init__(self, target: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        if not callable(target):
            raise ConfigError(
                f"{type(self).__name__} needs a callable target (a function or class), got {target!r}"
            )
        object.__setattr__(self, "_target", target)
        var_args: tuple[Any, ...] = ()
        arguments: dict[str, Any] = {}
        sig = _signature(target)
        if sig is None:
            var_args, arguments = tuple(args), dict(kwargs)
        else:
            try:
                bound = sig.bind_partial(*args, **kwargs)
            except TypeError as exc:
                raise ConfigError(f"{type(self).__name__}({target_name(target)}, ...): {exc}") from None
            for name, value in bound.arguments.items():
                kind = sig.parameters[name].kind
                if kind is inspect.Parameter.VAR_POSITIONAL:
                    var_args = tuple(value)
                elif kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(value)
                else:
                    arguments[name] = value
        object.__setattr__(self, "_args", var_args)
        object.__setattr__(self, "_arguments", arguments)

    # --- attribute protocol -----------------------------------------------------------
    @property
    def __fn_or_cls__(self) -> Callable[..., Any]:
        """The target (the same name fiddle and NeMo Run use)."""
        return self._target

    def _param(self, name: str) -> inspect.Parameter | None:
        sig = _signature(self._target)
        if sig is None:
            return None
        return sig.parameters.get(name)

    def _accepts(self, name: str) -> bool:
        sig = _signature(self._target)
        if sig is None:
            return True
        p = sig.parameters.get(name)
        if p is not None:
            return p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        return any(q.kind is inspect.Parameter.VAR_KEYWORD for q in sig.parameters.values())

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup failed: the name is an argument, or nothing.
        if name.startswith("_"):
            raise AttributeError(name)
        arguments = self.__dict__.get("_arguments", {})
        if name in arguments:
            return arguments[name]
        p = self._param(name)
        if p is not None and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return REQUIRED if p.default is p.empty else p.default
        raise AttributeError(
            f"{target_name(self._target)} takes no argument {name!r}"
            + (f" (it takes: {', '.join(self.parameter_names())})" if self.parameter_names() else "")
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        if not self._accepts(name):
            raise AttributeError(
                f"{target_name(self._target)} takes no argument {name!r}"
                f" (it takes: {', '.join(self.parameter_names()) or 'nothing'})"
            )
        self._arguments[name] = value

    def __delattr__(self, name: str) -> None:
        if name not in self._arguments:
            raise AttributeError(name)
        del self._arguments[name]

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.parameter_names()) | set(self._arguments))

    def parameter_names(self) -> list[str]:
        """Names of the target's named parameters."""
        sig = _signature(self._target)
        if sig is None:
            return []
        return [n for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def call_args(self) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments of the call this config describes.

        Positional-only parameters (``math.sqrt(x, /)``) go by position, in order; the rest
        by name; ``*args`` values follow the positional ones.
        """
        sig = _signature(self._target)
        kwargs = dict(self._arguments)
        positional: list[Any] = []
        if sig is not None:
            for name, p in sig.parameters.items():
                if p.kind is not p.POSITIONAL_ONLY or name not in kwargs:
                    break
                positional.append(kwargs.pop(name))
            if self._args:  # *args follow every positional parameter, which must all be given
                for name, p in sig.parameters.items():
                    if p.kind is p.POSITIONAL_OR_KEYWORD and name in kwargs:
                        positional.append(kwargs.pop(name))
        return [*positional, *self._args], kwargs

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments that were set (not defaults), by name. A live view."""
        return self._arguments

    # --- value semantics ----------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and self._target == other._target
            and self._args == other._args
            and self._arguments == other._arguments
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __deepcopy__(self, memo: dict[int, Any]) -> _Buildable:
        new = object.__new__(type(self))
        memo[id(self)] = new
        object.__setattr__(new, "_target", self._target)
        object.__setattr__(new, "_args", copy.deepcopy(self._args, memo))
        object.__setattr__(new, "_arguments", copy.deepcopy(self._arguments, memo))
        return new

    def __copy__(self) -> _Buildable:
        new = object.__new__(type(self))
        object.__setattr__(new, "_target", self._target)
        object.__setattr__(new, "_args", self._args)
        object.__setattr__(new, "_arguments", dict(self._arguments))
        return new

    def __repr__(self) -> str:
        parts = [repr(a) for a in self._args] + [f"{k}={v!r}" for k, v in self._arguments.items()]
        return f"{type(self).__name__}[{target_name(self._target)}]({', '.join(parts)})"

    def __getstate__(self) -> dict[str, Any]:
        return {"_target": self._target, "_args": self._args, "_arguments": self._arguments}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)


class Config(_Buildable):
    """``Config(target, *args, **kwargs)`` builds to ``target(*args, **kwargs)``.

    Running a Config task builds it and, if the built value is callable, calls it with no
    arguments.
    """


class Partial(_Buildable):
    """``Partial(target, *args, **kwargs)`` builds to ``functools.partial(target, ...)``."""


def _check_script(instance: Script, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (instance.path is None) == (instance.inline is None):
        raise ConfigError(
            "Script needs exactly one of path= or inline=, e.g. Script(inline='echo hi');"
            f" got path={instance.path!r}, inline={value!r}"
        )


@attrs.define(eq=True)
class Script:
    """A shell task: ``entrypoint path args...`` or ``entrypoint -c inline args...``.

    ``env`` adds environment variables for this task only, over the executor's ``env_vars``.
    """

    path: str | None = attrs.field(default=None, kw_only=False)
    inline: str | None = attrs.field(default=None, validator=_check_script)
    args: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    env: dict[str, str] | None = None
    entrypoint: str = "bash"

    def __attrs_post_init__(self) -> None:
        for a in self.args:
            if not isinstance(a, str):
                raise ConfigError(f"Script args must be strings, got {a!r} in {self.args!r}")
        if not self.entrypoint or not isinstance(self.entrypoint, str):
            raise ConfigError(f"Script entrypoint must be a program name, got {self.entrypoint!r}")
        for k, v in (self.env or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ConfigError(f"Script env must map strings to strings, got {k!r}: {v!r}")

    def argv(self) -> list[str]:
        """The command line this script runs."""
        if self.inline is not None:
            return [self.entrypoint, "-c", self.inline, "runyard-script", *self.args]
        assert self.path is not None
        return [self.entrypoint, self.path, *self.args]


Task = Config | Partial | Script


def build(cfg: Any) -> Any:
    """Build ``cfg`` and every config nested in it, bottom-up.

    A ``Config`` becomes ``target(*args, **kwargs)``, a ``Partial`` becomes
    ``functools.partial(target, ...)``. Lists, tuples and dicts are rebuilt with built items;
    anything else is returned as is. A config object used twice is built once.
    """
    return _build(cfg, {})


def _build(value: Any, memo: dict[int, Any]) -> Any:
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, _Buildable):
        call_args, call_kwargs = value.call_args()
        args = [_build(a, memo) for a in call_args]
        kwargs = {k: _build(v, memo) for k, v in call_kwargs.items()}
        if isinstance(value, Partial):
            out: Any = functools.partial(value._target, *args, **kwargs)
        else:
            out = value._target(*args, **kwargs)
        memo[id(value)] = out
        return out
    if isinstance(value, list):
        return [_build(v, memo) for v in value]
    if isinstance(value, tuple):
        return tuple(_build(v, memo) for v in value)
    if isinstance(value, dict):
        return {k: _build(v, memo) for k, v in value.items()}
    return value


def walk_configs(value: Any) -> Iterator[_Buildable]:
    """Every Config/Partial in ``value``, outermost first (used by task modifiers)."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, _Buildable):
            yield v
            stack.extend(reversed(list(v._arguments.values())))
            stack.extend(reversed(v._args))
        elif isinstance(v, (list, tuple)):
            stack.extend(reversed(v))
        elif isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
