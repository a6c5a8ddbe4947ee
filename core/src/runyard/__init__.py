"""runyard: run machine-learning experiments on local, Docker and Slurm executors.

``import runyard as run``. Everything here is imported lazily: ``import runyard`` loads no
plugin, no executor backend, no paramiko and no docker. Names that plugins export
(``run.LocalExecutor``, ``run.SlurmExecutor``, ...) resolve through the ``runyard.exports``
entry point group; a name whose plugin is missing raises an ImportError that says which
package to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: The version of runyard and of every plugin package of this repository: each pyproject.toml
#: reads it from here (``[tool.hatch.version]``), so this line is the one place to change it.
__version__ = "0.2.0"

_CORE = {
    "Config": "runyard.config",
    "Partial": "runyard.config",
    "Script": "runyard.config",
    "build": "runyard.config",
    "REQUIRED": "runyard.config",
    "Experiment": "runyard.experiment",
    "Plugin": "runyard.registries",
    "TaskView": "runyard.views",
    "AttemptView": "runyard.views",
    "ConfigVersion": "runyard.views",
    "EventView": "runyard.views",
    "MetricPoint": "runyard.metrics",
    "ExperimentSnapshot": "runyard.experiment",
    "State": "runyard.states",
    "Executor": "runyard.executor",
    "Torchrun": "runyard.launchers",
    "Backend": "runyard.executor",
    "TaskLogs": "runyard.logs",
    "LogEntry": "runyard.logs",
    "LogSource": "runyard.logs",
    "Artifact": "runyard.artifacts",
    "ArtifactStore": "runyard.artifacts",
    "hookimpl": "runyard.hookspecs",
    "RunyardError": "runyard.errors",
    "ConfigError": "runyard.errors",
    "TaskStateError": "runyard.errors",
    "ExperimentStateError": "runyard.errors",
    "BackendError": "runyard.errors",
    "UnknownExperimentError": "runyard.errors",
    "UnknownTaskError": "runyard.errors",
    "PluginNotInstalledError": "runyard.errors",
}

__all__ = sorted(_CORE)

#: The core modules a plugin may import (docs/plugins.md, "The plugin API"); every other
#: module of runyard is internal and may change in any release.
PLUGIN_API = (
    "runyard",
    "runyard.artifacts",
    "runyard.config",
    "runyard.errors",
    "runyard.executor",
    "runyard.hookspecs",
    "runyard.jobfiles",
    "runyard.launchers",
    "runyard.logs",
    "runyard.naming",
    "runyard.packaging",
    "runyard.redact",
    "runyard.registries",
    "runyard.serialization",
    "runyard.states",
    "runyard.testing",
)

if TYPE_CHECKING:
    from runyard.artifacts import Artifact, ArtifactStore
    from runyard.config import REQUIRED, Config, Partial, Script, build
    from runyard.errors import (
        BackendError,
        ConfigError,
        ExperimentStateError,
        PluginNotInstalledError,
        RunyardError,
        TaskStateError,
        UnknownExperimentError,
        UnknownTaskError,
    )
    from runyard.executor import Backend, Executor
    from runyard.experiment import Experiment, ExperimentSnapshot
    from runyard.hookspecs import hookimpl
    from runyard.launchers import Torchrun
    from runyard.logs import LogEntry, LogSource, TaskLogs
    from runyard.metrics import MetricPoint
    from runyard.registries import Plugin
    from runyard.states import State
    from runyard.views import AttemptView, ConfigVersion, EventView, TaskView


def __getattr__(name: str) -> Any:
    module = _CORE.get(name)
    if module is not None:
        import importlib

        value = getattr(importlib.import_module(module), name)
    else:
        if name.startswith("__") or _is_submodule(name):
            # `from runyard import store` asks here before importing the submodule
            raise AttributeError(name)
        from runyard.plugins import resolve_export

        value = resolve_export(name)
    globals()[name] = value
    return value


def _is_submodule(name: str) -> bool:
    import os

    folder = os.path.dirname(__file__)
    return os.path.exists(os.path.join(folder, name + ".py")) or os.path.isdir(os.path.join(folder, name))


def __dir__() -> list[str]:
    from runyard.plugins import exported_names

    return sorted(set(globals()) | set(_CORE) | set(exported_names()))
