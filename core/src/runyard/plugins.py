"""The plugin manager: entry points, and a typed facade over ``pm.hook``.

Plugins are found through two entry point groups:

- ``runyard.plugins``: modules of ``@hookimpl`` functions, loaded one at a time so that a
  broken plugin is reported by name instead of taking runyard down;
- ``runyard.exports``: public names a plugin adds to ``runyard`` (``run.LocalExecutor``),
  read as metadata and imported only when used.

``RUNYARD_DISABLE_PLUGIN_AUTOLOAD=1`` loads no entry point (only core's built-in plugin and
what you register yourself); ``RUNYARD_BLOCK_PLUGINS=name,other`` skips named plugins (entry
point or distribution names). Nothing is loaded when ``runyard`` is imported.
"""

from __future__ import annotations

import os
import threading
import warnings
from importlib import metadata
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from runyard import hookspecs
from runyard.errors import PluginError, PluginNotInstalledError
from runyard.registries import (  # re-exported (see __all__): code that predates registries.py
    BLOCK_ENV,
    ArtifactStoreRegistry,
    ExecutorRegistry,
    TaskSpec,
    _Registry,
)

if TYPE_CHECKING:
    from runyard.artifacts import ArtifactStore
    from runyard.executor import Backend, Executor
    from runyard.logs import LogSource

__all__ = [
    "BLOCK_ENV",
    "DISABLE_ENV",
    "EXPORT_GROUP",
    "PLUGIN_GROUP",
    "ArtifactStoreRegistry",
    "ExecutorRegistry",
    "PluginInfo",
    "Plugins",
    "TaskSpec",
    "exported_names",
    "plugin_manager",
    "reset_plugin_manager",
    "resolve_export",
]

PLUGIN_GROUP = "runyard.plugins"
EXPORT_GROUP = "runyard.exports"
DISABLE_ENV = "RUNYARD_DISABLE_PLUGIN_AUTOLOAD"

# Public names of the plugins this project ships: a helpful error when one is missing.
KNOWN_EXPORTS = {
    "LocalExecutor": "runyard-local",
    "SlurmExecutor": "runyard-slurm",
    "SSHTunnel": "runyard-slurm",
    "LocalTunnel": "runyard-slurm",
    "DockerExecutor": "runyard-docker",
    "MixedPrecisionPlugin": "runyard-mixed-precision",
}


@attrs.define
class PluginInfo:
    """One plugin as ``runyard plugins`` shows it."""

    name: str
    distribution: str | None
    version: str | None
    hooks: list[str]
    exports: list[str]
    error: str | None = None


class Plugins:
    """Typed facade over the pluggy manager: core calls these, never ``pm.hook`` directly."""

    def __init__(self, autoload: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.failures: dict[str, PluginInfo] = {}
        self._lock = threading.RLock()
        self._executors: ExecutorRegistry | None = None
        self._stores: ArtifactStoreRegistry | None = None
        self._backends: dict[str, Backend] = {}
        from runyard import builtin

        self.pm.register(builtin, name="runyard.builtin")
        if autoload is None:
            autoload = os.environ.get(DISABLE_ENV, "") in ("", "0")
        self.autoload = autoload
        if autoload:
            self._load_entry_points()

    # --- loading ----------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        blocked = {b.strip() for b in os.environ.get(BLOCK_ENV, "").split(",") if b.strip()}
        for ep in metadata.entry_points(group=PLUGIN_GROUP):
            dist = ep.dist.name if ep.dist else None
            if ep.name in blocked or (dist and dist in blocked):
                continue
            if self.pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
                self.register(module, name=ep.name)
            except Exception as exc:
                version = ep.dist.version if ep.dist else None
                msg = f"{type(exc).__name__}: {exc}"
                self.failures[ep.name] = PluginInfo(ep.name, dist, version, [], [], msg)
                warnings.warn(
                    f"runyard plugin {ep.name!r} ({dist} {version}) failed to load and is skipped: {msg}",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object or module; unknown hooks raise ``PluginError``."""
        with self._lock:
            registered = self.pm.register(plugin, name=name)
            assert registered is not None
            try:
                self.pm.check_pending()
            except pluggy.PluginValidationError as exc:
                self.pm.unregister(plugin)
                raise PluginError(f"plugin {registered!r} is invalid: {exc}") from None
            self._reset()
            return registered

    def unregister(self, name: str) -> None:
        with self._lock:
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                self.pm.unregister(plugin)
            self._reset()

    def _reset(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._executors = None
        self._stores = None
        self._backends = {}

    def _each_impl(self, hook: pluggy.HookCaller, registry: _Registry) -> None:
        # One implementation at a time, so the registry knows whom to name on a conflict;
        # each through a pluggy subset caller, so that hook monitoring and tracing see it.
        impls = hook.get_hookimpls()
        for impl in reversed(impls):
            registry.current_plugin = impl.plugin_name
            others = [other.plugin for other in impls if other is not impl]
            self.pm.subset_hook_caller(hook.name, others)(registry=registry)

    # --- executors -----------------------------------------------------------------------
    @property
    def executors(self) -> ExecutorRegistry:
        with self._lock:
            if self._executors is None:
                registry = ExecutorRegistry()
                registry.hint = self._missing_hint()
                self._each_impl(self.pm.hook.runyard_register_executors, registry)
                self._executors = registry
            return self._executors

    def _missing_hint(self) -> str:
        if not self.autoload:
            return (
                f"; plugin autoload is off ({DISABLE_ENV} is set): unset it, or register the plugin"
                " yourself (runyard.testing.registered_plugin)"
            )
        blocked = os.environ.get(BLOCK_ENV, "").strip()
        return f"; {BLOCK_ENV}={blocked} blocks some plugins" if blocked else ""

    def backend(self, kind: str) -> Backend:
        """The backend for an executor kind, created once per process."""
        with self._lock:
            if kind not in self._backends:
                self._backends[kind] = self.executors.backend_class(kind)()
            return self._backends[kind]

    def close_backends(self) -> None:
        with self._lock:
            for backend in self._backends.values():
                backend.close()
            self._backends = {}

    # --- task modifiers --------------------------------------------------------------
    def modify_task(self, spec: TaskSpec) -> TaskSpec:
        self.pm.hook.runyard_modify_task(spec=spec)
        return spec

    # --- logs ---------------------------------------------------------------------------
    def log_source(self, executor: Executor) -> LogSource:
        source: LogSource | None = self.pm.hook.runyard_log_source(executor=executor)
        assert source is not None, "core's built-in log source always answers"
        return source

    # --- artifacts ----------------------------------------------------------------------
    @property
    def artifact_stores(self) -> ArtifactStoreRegistry:
        with self._lock:
            if self._stores is None:
                registry = ArtifactStoreRegistry()
                self._each_impl(self.pm.hook.runyard_register_artifact_stores, registry)
                self._stores = registry
            return self._stores

    def artifact_store(self, name: str) -> ArtifactStore:
        return self.artifact_stores.get(name)

    # --- introspection ----------------------------------------------------------------------
    def describe(self) -> list[PluginInfo]:
        """Every plugin: registered ones with their hooks and exports, then failed ones."""
        exports: dict[str, list[str]] = {}
        dists: dict[str, tuple[str, str]] = {}
        for ep in metadata.entry_points(group=PLUGIN_GROUP):
            if ep.dist:
                dists[ep.name] = (ep.dist.name, ep.dist.version)
        for ep in metadata.entry_points(group=EXPORT_GROUP):
            if ep.dist:
                exports.setdefault(ep.dist.name, []).append(ep.name)
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
            if name == "runyard.builtin":
                dist, version = "runyard", _version("runyard")
            else:
                dist, version = dists.get(name, (None, None))  # type: ignore[assignment]
            out.append(PluginInfo(name, dist, version, hooks, sorted(exports.get(dist or "", []))))
        out.sort(key=lambda p: p.name)
        return out + list(self.failures.values())


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_manager: Plugins | None = None
_manager_lock = threading.Lock()


def plugin_manager() -> Plugins:
    """The process-wide plugin manager, built on first use (never at import)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = Plugins()
        return _manager


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests, and after installing a plugin)."""
    global _manager, _exports
    with _manager_lock:
        if _manager is not None:
            _manager.close_backends()
        _manager = None
        _exports = None  # a plugin installed since may export new names
        _collisions.clear()


# ------------------------------------------------------------------------------ exports
_exports: dict[str, metadata.EntryPoint] | None = None


def exported_names() -> dict[str, metadata.EntryPoint]:
    """Names plugins add to ``runyard``, from entry point metadata (nothing imported)."""
    global _exports
    if _exports is None:
        blocked = {b.strip() for b in os.environ.get(BLOCK_ENV, "").split(",") if b.strip()}
        found: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=EXPORT_GROUP):
            if ep.dist is not None and ep.dist.name in blocked:
                continue
            other = found.get(ep.name)
            if other is not None and other.value != ep.value:
                _collisions[ep.name] = (other, ep)
            found.setdefault(ep.name, ep)
        _exports = found
    return _exports


_collisions: dict[str, tuple[metadata.EntryPoint, metadata.EntryPoint]] = {}


def _dist(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist else "?"


def resolve_export(name: str) -> Any:
    """The object a plugin exports under ``name``; ImportError naming the package if absent."""
    ep = exported_names().get(name)
    if name in _collisions:
        a, b = _collisions[name]
        raise PluginError(
            f"run.{name} is exported by two plugins: {_dist(a)} ({a.value}) and {_dist(b)} ({b.value});"
            f" uninstall one or block it with {BLOCK_ENV}"
        )
    if ep is not None:
        return ep.load()
    if name in KNOWN_EXPORTS:
        dist = KNOWN_EXPORTS[name]
        blocked = {b.strip() for b in os.environ.get(BLOCK_ENV, "").split(",") if b.strip()}
        if dist in blocked:
            raise PluginNotInstalledError(
                f"run.{name} is provided by the {dist} plugin, which {BLOCK_ENV} blocks", name=name
            )
        raise PluginNotInstalledError(
            f"run.{name} is provided by the {dist} plugin, which is not installed: pip install {dist}",
            name=name,
        )
    raise AttributeError(f"module 'runyard' has no attribute {name!r}")
