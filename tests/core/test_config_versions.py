"""Config versions: numbered copies of a configuration, untouched by later changes."""

from __future__ import annotations

import datetime as dt

import runyard as run
import taskdefs


def test_versions_are_numbered_from_one() -> None:
    exp = run.Experiment("versions")
    cfg = run.Config(taskdefs.Trainer, learning_rate=1e-3)
    assert exp.track_config_version("model_config", cfg, description="initial") == 1
    cfg.learning_rate = 5e-4
    assert exp.track_config_version("model_config", cfg, description="lower lr") == 2
    assert exp.track_config_version("model_config", cfg) == 3
    history = exp.get_config_history("model_config")
    assert sorted(history) == [1, 2, 3]
    assert [history[v].version for v in (1, 2, 3)] == [1, 2, 3]
    assert [history[v].description for v in (1, 2, 3)] == ["initial", "lower lr", None]


def test_each_name_has_its_own_numbering() -> None:
    exp = run.Experiment("versions-names")
    exp.track_config_version("model", run.Config(taskdefs.Trainer))
    exp.track_config_version("model", run.Config(taskdefs.Trainer))
    assert exp.track_config_version("data", run.Config(taskdefs.hello)) == 1


def test_a_stored_version_keeps_the_config_as_it_was() -> None:
    exp = run.Experiment("versions-copy")
    cfg = run.Config(taskdefs.Trainer, learning_rate=1e-3, model_size="8b")
    exp.track_config_version("model_config", cfg)
    cfg.learning_rate = 5e-4
    exp.track_config_version("model_config", cfg)
    cfg.learning_rate = 1.0  # changed after both versions were stored
    cfg.model_size = "70b"
    history = exp.get_config_history("model_config")
    assert history[1].config == run.Config(taskdefs.Trainer, learning_rate=1e-3, model_size="8b")
    assert history[2].config == run.Config(taskdefs.Trainer, learning_rate=5e-4, model_size="8b")


def test_changing_a_returned_config_does_not_change_the_stored_version() -> None:
    exp = run.Experiment("versions-returned")
    exp.track_config_version("model_config", run.Config(taskdefs.Trainer, learning_rate=1e-3))
    exp.get_config_history("model_config")[1].config.learning_rate = 9.0
    assert exp.get_config_history("model_config")[1].config.learning_rate == 1e-3


def test_a_version_records_a_timezone_aware_creation_time() -> None:
    exp = run.Experiment("versions-time")
    exp.track_config_version("c", run.Config(taskdefs.hello))
    created = exp.get_config_history("c")[1].created_at
    assert isinstance(created, dt.datetime)
    assert created.utcoffset() is not None


def test_plain_values_can_be_tracked_too() -> None:
    exp = run.Experiment("versions-plain")
    values = {"lr": 1e-3, "layers": [1, 2, 3]}
    exp.track_config_version("hparams", values)
    values["lr"] = 0.1
    assert exp.get_config_history("hparams")[1].config == {"lr": 1e-3, "layers": [1, 2, 3]}


def test_an_unknown_name_has_an_empty_history() -> None:
    assert run.Experiment("versions-empty").get_config_history("never-tracked") == {}


def test_the_history_survives_from_id() -> None:
    exp = run.Experiment("versions-from-id")
    exp.track_config_version("model_config", run.Config(taskdefs.Trainer, model_size="8b"), "first")
    history = run.Experiment.from_id(exp.experiment_id).get_config_history("model_config")
    assert history[1].config == run.Config(taskdefs.Trainer, model_size="8b")
    assert history[1].description == "first"
