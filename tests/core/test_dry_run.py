"""``Experiment.dry_run()`` shows what each task would launch and launches nothing."""

from __future__ import annotations

import io

import runyard as run
import taskdefs
from runyard.redact import masked


def test_dry_run_describes_every_task_and_launches_nothing() -> None:
    exp = run.Experiment("dry")
    exp.add(run.Script(inline="echo hi"), name="shell")
    exp.add(run.Config(taskdefs.hello), name="py", dependencies=["shell"])
    out = io.StringIO()
    described = exp.dry_run(file=out)
    assert set(described) == {"shell", "py"}
    assert "echo hi" in described["shell"]
    assert "--- shell" in out.getvalue() and "--- py" in out.getvalue()
    assert all(t.status == "PENDING" and t.attempts == 0 for t in exp.tasks)
    assert exp.run() == "SUCCEEDED"  # a dry run does not count as a launch


def test_secret_values_are_masked_for_display() -> None:
    env = {
        "HF_TOKEN": "hf_abc",
        "api_key": "k",
        "DB_PASSWORD": "p",
        "AWS_SECRET_ACCESS_KEY": "s",
        "LR": "0.1",
    }
    assert masked(env) == {
        "HF_TOKEN": "***",
        "api_key": "***",
        "DB_PASSWORD": "***",
        "AWS_SECRET_ACCESS_KEY": "***",
        "LR": "0.1",
    }
