"""Every hook runyard calls, grouped by what it extends. Prefix: ``runyard_``.

A plugin is a module (or object) of ``@hookimpl`` functions registered under the
``runyard.plugins`` entry point group. The docstrings below are the contract; the plugin
author guide (docs/plugins.md) has an example of each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from runyard.executor import Executor
    from runyard.logs import LogSource
    from runyard.registries import ArtifactStoreRegistry, ExecutorRegistry, TaskSpec

PROJECT = "runyard"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ------------------------------------------------------------------------------ executors
@hookspec
def runyard_register_executors(registry: ExecutorRegistry) -> None:
    """Register executor classes and the backend class that runs each.

    Call ``registry.add(ExecutorClass, BackendClass)``. The registry keys by
    ``ExecutorClass.kind`` and refuses a kind that another plugin registered already,
    naming both. The backend (a :class:`runyard.executor.Backend`) launches, polls, cancels,
    pauses and resumes jobs; it is created once per process, when first needed.

    :param registry: the executor registry to add to.
    """


# ------------------------------------------------------------------------------ task modifiers
@hookspec
def runyard_modify_task(spec: TaskSpec) -> None:
    """Change a task and its executor when it is added to an experiment.

    ``spec.task`` and ``spec.executor`` are private copies: mutate them or assign new
    objects to them. Called for every task, before the ``plugins=`` objects passed to
    ``Experiment.add`` (those run last, in list order). Every implementation is called.

    :param spec: the task being added (``task``, ``executor``, ``task_id``, ``experiment_id``).
    """


# ------------------------------------------------------------------------------ log sources
@hookspec(firstresult=True)
def runyard_log_source(executor: Executor) -> LogSource | None:
    """The log source that reads output of tasks run on ``executor``, or None if not yours.

    Stops at first non-None result. Core's built-in source (trylast) reads the runner's
    files from the task directory on this machine.

    :param executor: the executor the task ran on.
    """


# ------------------------------------------------------------------------------ artifact stores
@hookspec
def runyard_register_artifact_stores(registry: ArtifactStoreRegistry) -> None:
    """Register artifact stores: ``registry.add(store)``, keyed by ``store.name``.

    A store puts (records, and may copy) an artifact, gets it back to a local path, and lists
    what it holds. Core registers ``"local"``, which records files in place.

    :param registry: the artifact store registry to add to.
    """
