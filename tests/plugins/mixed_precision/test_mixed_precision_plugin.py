"""``run.MixedPrecisionPlugin``: precision on every config that takes it, environment
variables on any executor, the caller's objects untouched, and the guide's example."""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
import warnings
from typing import Any

import guide_tasks
import pytest
import runyard as run
import taskdefs
from runyard.plugins import Plugins
from runyard_mixed_precision import DEFAULT_ENV_VARS, PRECISIONS, MixedPrecisionPlugin, NoPrecisionWarning

GUIDE_ENV = {"NCCL_P2P_DISABLE": "1", "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}


def quietly(plugin: MixedPrecisionPlugin, task: Any) -> Any:
    """``plugin.modify_task(task)``, failing the test if it warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return plugin.modify_task(task)


# ------------------------------------------------------------------------------ modify_task
@pytest.mark.alone
def test_precision_is_set_on_a_class_target_that_takes_it() -> None:
    task = quietly(MixedPrecisionPlugin(), run.Config(taskdefs.Trainer, model_size="70b"))
    assert task == run.Config(taskdefs.Trainer, model_size="70b", precision="bf16-mixed")


def test_precision_is_set_on_a_function_target_that_takes_it() -> None:
    task = quietly(MixedPrecisionPlugin("16-mixed"), run.Config(taskdefs.report_precision))
    assert task.precision == "16-mixed"


def test_precision_is_set_on_a_partial() -> None:
    task = quietly(MixedPrecisionPlugin(), run.Partial(taskdefs.report_precision))
    assert task == run.Partial(taskdefs.report_precision, precision="bf16-mixed")


def test_precision_is_set_on_trainer_configs_nested_inside_a_recipe() -> None:
    recipe = run.Config(
        taskdefs.run_recipe,
        trainer=run.Config(taskdefs.Trainer, precision="32"),
        callbacks=[run.Config(taskdefs.report_precision), {"eval": run.Partial(taskdefs.report_precision)}],
    )

    task = quietly(MixedPrecisionPlugin("bf16-true"), recipe)

    assert task.trainer.precision == "bf16-true"
    assert task.callbacks[0].precision == "bf16-true"
    assert task.callbacks[1]["eval"].precision == "bf16-true"
    assert "precision" not in task.arguments  # the recipe itself takes none: left alone


def test_a_target_with_only_kwargs_is_not_given_a_precision() -> None:
    recipe = run.Config(
        taskdefs.run_recipe, trainer=run.Config(taskdefs.Trainer), callbacks=run.Config(taskdefs.takes_kwargs)
    )
    task = quietly(MixedPrecisionPlugin(), recipe)
    assert task.callbacks.arguments == {}
    assert task.trainer.precision == "bf16-mixed"


def test_a_task_where_no_target_takes_precision_warns_naming_the_targets() -> None:
    task = run.Config(taskdefs.run_recipe, trainer=run.Config(taskdefs.hello))
    with pytest.warns(NoPrecisionWarning, match=r"run_recipe, hello.*'bf16-mixed' was not set"):
        out = MixedPrecisionPlugin().modify_task(task)
    assert out == task


def test_the_warning_is_a_runtime_warning() -> None:
    assert issubclass(NoPrecisionWarning, RuntimeWarning)


def test_a_script_task_warns_that_it_takes_no_precision() -> None:
    script = run.Script(inline="echo hi")
    with pytest.warns(NoPrecisionWarning, match="Script task takes no precision"):
        assert MixedPrecisionPlugin().modify_task(script) == script


def test_warn_if_unused_false_does_not_warn() -> None:
    assert quietly(MixedPrecisionPlugin(warn_if_unused=False), run.Script(inline="true")) == run.Script(
        inline="true"
    )


def test_modify_task_leaves_its_argument_untouched() -> None:
    recipe = run.Config(taskdefs.run_recipe, trainer=run.Config(taskdefs.Trainer))
    before = copy.deepcopy(recipe)
    task = MixedPrecisionPlugin().modify_task(recipe)
    assert recipe == before
    assert task.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("bad", ["fp8", "bf16_mixed", 16, None])
def test_an_unknown_precision_is_refused_naming_it_and_the_allowed_ones(bad: Any) -> None:
    with pytest.raises(
        run.ConfigError, match=rf"unknown precision {bad!r}; use one of: bf16-mixed, 16-mixed"
    ):
        MixedPrecisionPlugin(bad)


def test_every_lightning_precision_is_accepted() -> None:
    for precision in PRECISIONS:
        assert MixedPrecisionPlugin(precision).precision == precision
    assert {"16-mixed", "bf16-mixed", "32", "64", "bf16-true", "16-true", "transformer-engine"} <= set(
        PRECISIONS
    )


# ------------------------------------------------------------------------------ modify_executor
def test_the_default_env_vars_are_the_guides() -> None:
    assert MixedPrecisionPlugin().env_vars == GUIDE_ENV == DEFAULT_ENV_VARS


def test_env_vars_are_added_to_every_installed_executor_kind(
    process_executor: type[run.Executor], runyard_plugins: Plugins
) -> None:
    kinds = runyard_plugins.executors.names()
    assert process_executor.kind in kinds  # and runyard-local's "local", where installed
    for kind in kinds:
        executor = runyard_plugins.executors.executor_class(kind)(env_vars={"MINE": "1"})
        out = MixedPrecisionPlugin().modify_executor(executor)
        assert type(out) is type(executor)
        assert out.env_vars == {"MINE": "1", **GUIDE_ENV}, kind


def test_the_plugins_env_vars_win_over_the_executors_on_a_clash(process_executor: type[run.Executor]) -> None:
    executor = process_executor(env_vars={"NCCL_P2P_DISABLE": "0", "OTHER": "x"})
    out = MixedPrecisionPlugin().modify_executor(executor)
    assert out.env_vars == {**GUIDE_ENV, "OTHER": "x"}
    assert executor.env_vars == {"NCCL_P2P_DISABLE": "0", "OTHER": "x"}  # the argument is untouched


def test_env_vars_argument_replaces_the_defaults(process_executor: type[run.Executor]) -> None:
    plugin = MixedPrecisionPlugin(env_vars={"NVTE_FUSED_ATTN": "1"})
    assert plugin.modify_executor(process_executor()).env_vars == {"NVTE_FUSED_ATTN": "1"}


@pytest.mark.parametrize("env_vars", [{"A": 1}, {"A=B": "1"}, {"": "x"}, ["A"]])
def test_invalid_env_vars_are_refused(env_vars: Any) -> None:
    with pytest.raises(run.ConfigError, match=r"MixedPrecisionPlugin\.env_vars"):
        MixedPrecisionPlugin(env_vars=env_vars)


# ------------------------------------------------------------------------------ through Experiment.add
def test_add_applies_the_plugin_and_leaves_the_callers_config_and_executor_untouched(
    process_executor: type[run.Executor],
) -> None:
    recipe = run.Config(taskdefs.run_recipe, trainer=run.Config(taskdefs.Trainer, precision="32"))
    executor = process_executor(env_vars={"MINE": "1"})
    plugin = run.MixedPrecisionPlugin()
    exp = run.Experiment("mixed-precision-add")

    exp.add(recipe, executor=executor, plugins=[plugin], name="train")

    assert recipe.trainer.precision == "32"
    assert executor.env_vars == {"MINE": "1"}
    [stored] = exp.create_snapshot().tasks
    assert stored["task"]["kwargs"]["trainer"]["kwargs"]["precision"] == "bf16-mixed"
    assert exp.tasks[0].executor.env_vars == {"MINE": "1", **GUIDE_ENV}
    assert stored["plugins"] == [
        {"plugin": "runyard_mixed_precision.plugin:MixedPrecisionPlugin", "repr": repr(plugin)}
    ]


def test_add_warns_at_the_callers_line_when_no_target_takes_precision(
    process_executor: type[run.Executor],
) -> None:
    exp = run.Experiment("mixed-precision-warning")
    with pytest.warns(NoPrecisionWarning) as caught:
        exp.add(run.Config(taskdefs.hello), executor=process_executor(), plugins=[run.MixedPrecisionPlugin()])
    assert caught[0].filename == __file__


@pytest.mark.alone
def test_a_task_runs_with_the_precision_and_the_env_vars(process_executor: type[run.Executor]) -> None:
    exp = run.Experiment("mixed-precision-run")
    task = run.Config(taskdefs.report_precision, env_names=sorted(GUIDE_ENV))
    task_id = exp.add(task, executor=process_executor(), plugins=[run.MixedPrecisionPlugin("16-mixed")])

    assert exp.run() == "SUCCEEDED"

    assert exp.get_logs(task_id).stdout == (
        "precision=16-mixed\nNCCL_P2P_DISABLE=1\nPYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128\n"
    )


# ------------------------------------------------------------------------------ the guide's block
class GuideRun:
    """``run`` for the guide's block: ``SlurmExecutor(...)`` is the tests' executor kind."""

    def __init__(self, executor_class: type[run.Executor]) -> None:
        self.executor_class = executor_class

    def SlurmExecutor(self, **kwargs: Any) -> run.Executor:  # the guide's name
        return self.executor_class()

    def __getattr__(self, name: str) -> Any:
        return getattr(run, name)


def run_guide_block(source: str, executor_class: type[run.Executor]) -> Any:
    namespace: dict[str, Any] = {"run": GuideRun(executor_class), "TrainModel": guide_tasks.TrainModel}
    exec(compile(source, "experiment-guide.md", "exec"), namespace)
    return namespace["exp"]


def without_the_guides_class(source: str) -> str:
    """The block with its ``class MixedPrecisionPlugin`` removed and run's used instead."""
    tree = ast.parse(source)
    tree.body = [
        node
        for node in tree.body
        if not (isinstance(node, ast.ClassDef) and node.name == "MixedPrecisionPlugin")
    ]
    return "MixedPrecisionPlugin = run.MixedPrecisionPlugin\n" + ast.unparse(tree)


@pytest.mark.alone
def test_the_guides_using_plugins_block_works_with_run_mixed_precision_plugin(
    guide_block: str, process_executor: type[run.Executor]
) -> None:
    assert "class MixedPrecisionPlugin(run.Plugin)" in guide_block
    guides = run_guide_block(guide_block, process_executor)
    ours = run_guide_block(without_the_guides_class(guide_block), process_executor)

    [mine] = ours.create_snapshot().tasks
    [theirs] = guides.create_snapshot().tasks
    assert mine["plugins"][0]["plugin"] == "runyard_mixed_precision.plugin:MixedPrecisionPlugin"
    assert (mine["id"], mine["task"], mine["executor"]) == (theirs["id"], theirs["task"], theirs["executor"])
    assert ours.run() == "SUCCEEDED"
    assert "precision=bf16-mixed" in ours.get_logs("training-with-mixed-precision").stdout


# ------------------------------------------------------------------------------ the export
LAZY = """
import json, sys
import runyard as run
from runyard.plugins import plugin_manager
after_import = sorted(m for m in sys.modules if m.startswith("runyard_mixed_precision"))
plugin_manager()
after_manager = sorted(m for m in sys.modules if m.startswith("runyard_mixed_precision"))
cls = run.MixedPrecisionPlugin
print(json.dumps([after_import, after_manager, f"{cls.__module__}:{cls.__qualname__}",
                  issubclass(cls, run.Plugin)]))
"""


@pytest.mark.alone
def test_run_mixed_precision_plugin_is_a_lazy_export() -> None:
    out = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True, check=True).stdout
    after_import, after_manager, name, is_plugin = json.loads(out)
    assert after_import == []  # import runyard loads no plugin
    # building the plugin manager imports the hook module, not the plugin class
    assert after_manager == ["runyard_mixed_precision", "runyard_mixed_precision.hooks"]
    assert (name, is_plugin) == ("runyard_mixed_precision.plugin:MixedPrecisionPlugin", True)
