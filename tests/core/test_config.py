"""Config, Partial, Script and build: what a task description is and how it builds."""

from __future__ import annotations

import copy
import functools
import json
import pathlib

import runyard as run
import taskdefs
from runyard import serialization


def _run_one(task: object) -> run.TaskLogs:
    exp = run.Experiment("config-task")
    task_id = exp.add(task)
    assert exp.run() == "SUCCEEDED"
    return exp.get_logs(task_id)


# --- attributes -----------------------------------------------------------------------------
def test_arguments_read_as_attributes() -> None:
    cfg = run.Config(taskdefs.Trainer, model_size="70b", learning_rate=1e-4)
    assert cfg.model_size == "70b"
    assert cfg.learning_rate == 1e-4


def test_arguments_write_as_attributes_and_the_build_uses_them() -> None:
    cfg = run.Config(taskdefs.Trainer, model_size="8b")
    cfg.learning_rate = 5e-4
    cfg.model_size = "70b"
    assert cfg.learning_rate == 5e-4
    trainer = run.build(cfg)
    assert (trainer.model_size, trainer.learning_rate) == ("70b", 5e-4)


def test_positional_arguments_read_by_parameter_name() -> None:
    cfg = run.Config(taskdefs.add, 1, 5)
    assert (cfg.a, cfg.b) == (1, 5)
    assert run.build(cfg) == 6


def test_an_argument_not_set_reads_as_the_target_default() -> None:
    cfg = run.Config(taskdefs.Trainer)
    assert cfg.precision == "32"
    assert cfg.learning_rate == 1e-3
    assert "precision" not in cfg.arguments  # reading a default does not set it


def test_an_argument_without_default_not_set_reads_as_required() -> None:
    cfg = run.Config(taskdefs.add, b=3)
    assert cfg.a is run.REQUIRED


def test_reading_a_name_the_target_does_not_take_raises_attribute_error() -> None:
    cfg = run.Config(taskdefs.hello)
    try:
        cfg.precision  # noqa: B018
    except AttributeError as exc:
        assert "precision" in str(exc)
    else:
        raise AssertionError("reading an argument hello() does not take must raise AttributeError")


def test_hasattr_tells_whether_the_target_takes_the_argument() -> None:
    assert hasattr(run.Config(taskdefs.Trainer), "precision")
    assert not hasattr(run.Config(taskdefs.hello), "precision")
    assert hasattr(run.Config(taskdefs.hello), "name")


def test_setting_a_name_the_target_does_not_take_raises_attribute_error() -> None:
    cfg = run.Config(taskdefs.hello, name="x")
    try:
        cfg.precision = "bf16"
    except AttributeError as exc:
        assert "precision" in str(exc)
    else:
        raise AssertionError("setting an argument hello() does not take must raise AttributeError")
    assert cfg.arguments == {"name": "x"}


# --- nesting, equality, copies --------------------------------------------------------------
def test_nested_configs_build_bottom_up() -> None:
    inner = run.Config(taskdefs.add, a=1, b=2)
    outer = run.Config(taskdefs.add, a=inner, b=10)
    assert run.build(outer) == 13
    assert outer.a is inner
    assert isinstance(inner, run.Config)  # building does not replace the description


def test_build_builds_configs_inside_lists_and_dicts() -> None:
    value = run.build({"xs": [run.Config(taskdefs.add, a=1), run.Config(taskdefs.add, a=2, b=0)]})
    assert value == {"xs": [3, 2]}


def test_configs_compare_by_value() -> None:
    a = run.Config(taskdefs.add, a=1, b=run.Config(taskdefs.add, a=2))
    b = run.Config(taskdefs.add, a=1, b=run.Config(taskdefs.add, a=2))
    assert a == b
    b.b.a = 3
    assert a != b


def test_config_and_partial_of_the_same_call_differ() -> None:
    assert run.Config(taskdefs.add, a=1) != run.Partial(taskdefs.add, a=1)
    assert run.Config(taskdefs.add, a=1) != run.Config(taskdefs.hello)


def test_deepcopy_is_independent_of_the_original() -> None:
    original = run.Config(taskdefs.add, a=run.Config(taskdefs.add, a=1), b=[1, 2])
    clone = copy.deepcopy(original)
    assert clone == original
    clone.a.a = 100
    clone.b.append(3)
    assert original.a.a == 1
    assert original.b == [1, 2]


def test_json_round_trip_through_encode_and_decode() -> None:
    cfg = run.Config(
        taskdefs.Trainer,
        model_size="8b",
        learning_rate=run.Config(taskdefs.add, a=1, b=2),
        precision=run.Partial(taskdefs.add, b=5),
    )
    nested = run.Config(taskdefs.print_env, "A", "B")
    value = {
        "cfg": cfg,
        "nested": nested,
        "tuple": (1, "two"),
        "path": pathlib.Path("/data/x"),
        "fn": taskdefs.hello,
        "none": None,
    }
    text = json.dumps(serialization.encode(value))
    back = serialization.decode(json.loads(text))
    assert back == value
    assert isinstance(back["tuple"], tuple)
    assert isinstance(back["path"], pathlib.Path)
    assert back["fn"] is taskdefs.hello


def test_targets_are_stored_as_module_and_qualname() -> None:
    encoded = serialization.encode(run.Config(taskdefs.Trainer, model_size="8b"))
    assert encoded["target"] == "taskdefs:Trainer"


def test_script_round_trips_through_json() -> None:
    script = run.Script(inline="echo $1", args=["hi"], env={"A": "1"})
    back = serialization.decode(json.loads(json.dumps(serialization.encode(script))))
    assert back == script


# --- Partial and Script -------------------------------------------------------------------------
def test_partial_builds_to_functools_partial() -> None:
    built = run.build(run.Partial(taskdefs.add, b=5))
    assert isinstance(built, functools.partial)
    assert built.func is taskdefs.add
    assert built(1) == 6


def test_script_defaults() -> None:
    script = run.Script(inline="echo hi")
    assert (script.path, script.args, script.env, script.entrypoint) == (None, (), None, "bash")
    assert script == run.Script(inline="echo hi")
    assert script != run.Script(inline="echo bye")


# --- running each kind of task --------------------------------------------------------------
def test_a_class_target_is_built_then_called() -> None:
    logs = _run_one(run.Config(taskdefs.Trainer, model_size="70b", precision="bf16"))
    assert logs.stdout == "training 70b lr=0.001 precision=bf16\n"


def test_a_partial_task_is_built_then_called() -> None:
    logs = _run_one(run.Partial(taskdefs.hello, name="partial"))
    assert logs.stdout == "hello partial\n"


def test_a_script_task_runs_with_its_args_and_env() -> None:
    logs = _run_one(run.Script(inline='echo "$1 $GREETING"', args=["arg1"], env={"GREETING": "hey"}))
    assert logs.stdout == "arg1 hey\n"


def test_positional_only_parameters_are_passed_by_position() -> None:
    import math

    cfg = run.Config(math.sqrt, 16)
    assert cfg.x == 16  # still readable by name
    assert run.build(cfg) == 4.0
    assert run.build(run.Partial(math.pow, 2))(5) == 32.0


def test_star_args_follow_the_positional_parameters_through_json() -> None:
    cfg = run.Config(taskdefs.joins, "a", "b", "c", "d", sep="+")
    again = serialization.decode(json.loads(json.dumps(serialization.encode(cfg))))
    assert again == cfg
    assert run.build(again) == "a+b+c+d"


def test_a_positional_only_target_runs_as_a_task() -> None:
    exp = run.Experiment("positional-only")
    exp.add(run.Config(taskdefs.joins, "x", "y", sep="-"), name="j")
    assert exp.run() == "SUCCEEDED"
    assert exp.get_logs("j").stdout == "x-y\n"
