"""What plugins register into and what the hooks hand them: the executor and artifact store
registries, and the ``TaskSpec`` a task modifier changes.

A leaf module: it imports only ``runyard.errors`` at run time (the types it names are for
type checkers), so the plugin manager, the hook specs, the built-in plugin and every plugin
can import it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from runyard.errors import ArtifactError, ConfigError, PluginError

if TYPE_CHECKING:
    from runyard.artifacts import ArtifactStore
    from runyard.executor import Backend, Executor

BLOCK_ENV = "RUNYARD_BLOCK_PLUGINS"  # comma-separated plugin or distribution names not to load


@attrs.define
class TaskSpec:
    """A task being added, as task modifiers see it (see ``runyard_modify_task``)."""

    task: Any
    executor: Executor
    task_id: str
    experiment_id: str


class Plugin:
    """Base class for the guide's task modifiers, given to ``Experiment.add(plugins=[...])``:
    they change a task and its executor when it is added. Both methods receive private copies
    and return the object to use (``runyard_modify_task`` is the hook for installed plugins)."""

    def modify_task(self, task: Any) -> Any:
        return task

    def modify_executor(self, executor: Executor) -> Executor:
        return executor


class _Registry:
    """A name → item map that refuses duplicates, naming both providers."""

    what = "item"

    def __init__(self) -> None:
        self._items: dict[str, tuple[Any, str]] = {}
        self.current_plugin = "?"
        self.hint = ""  # why a name may be missing (autoload off, plugins blocked)

    def _add(self, name: str, item: Any) -> None:
        if name in self._items:
            _, other = self._items[name]
            raise PluginError(
                f"{self.what} {name!r} is registered twice: by plugin {other!r} and by plugin "
                f"{self.current_plugin!r}; uninstall one or block it with {BLOCK_ENV}"
            )
        self._items[name] = (item, self.current_plugin)

    def _get(self, name: str) -> Any:
        try:
            return self._items[name][0]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(
                f"no {self.what} named {name!r} is installed (installed: {known}){self.hint}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def provider(self, name: str) -> str:
        return self._items[name][1]


class ExecutorRegistry(_Registry):
    """Executor classes by ``kind``, each with its backend class."""

    what = "executor kind"

    def add(self, executor_cls: type[Executor], backend_cls: Callable[[], Backend]) -> None:
        """Register ``executor_cls`` (keyed by its ``kind``) with the backend that runs it."""
        kind = getattr(executor_cls, "kind", "")
        if not kind:
            raise PluginError(f"{executor_cls.__qualname__} has no 'kind' class attribute")
        self._add(kind, (executor_cls, backend_cls))

    def executor_class(self, kind: str) -> type[Executor]:
        return self._get(kind)[0]

    def backend_class(self, kind: str) -> Callable[[], Backend]:
        return self._get(kind)[1]


class ArtifactStoreRegistry(_Registry):
    """Artifact stores by ``name``."""

    what = "artifact store"

    def add(self, store: ArtifactStore) -> None:
        """Register ``store`` (an instance, keyed by its ``name`` class attribute)."""
        if not store.name:
            raise ArtifactError(f"{type(store).__qualname__} has no 'name'")
        self._add(store.name, store)

    def get(self, name: str) -> ArtifactStore:
        return self._get(name)
