"""Tasks as Ray Jobs on the test bed's real head: a pipeline with dependencies and a retry,
output, metrics and results brought home, cancel, logs while running, detach, the job-slot
cap, and what Ray cannot do (pause) said clearly."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers
import metrictasks
import pytest
import runyard as run
import taskdefs
from _ray_helpers import jobs_of
from runyard.states import FINAL_STATES

Executor = Callable[..., Any]


def task(exp: run.Experiment, task_id: str) -> Any:
    return next(t for t in exp.tasks if t.id == task_id)


def until(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    return helpers.until(predicate, what, timeout, 0.1)


@pytest.mark.alone
def test_the_guides_pipeline_runs_with_its_dependencies_a_retry_and_every_output_home(
    ray_executor: Executor, ray_address: str
) -> None:
    ray = ray_executor()
    exp = run.Experiment("ray-pipeline", max_retries=1)
    exp.add(run.Config(taskdefs.hello, "data"), executor=ray, name="prepare")
    sweep = exp.add(
        [
            run.Config(metrictasks.train, steps=3, lr=0.5),
            run.Config(metrictasks.train, steps=3, lr=0.25, fail_first=True),  # fails once, then passes
            run.Config(metrictasks.train, steps=3, lr=0.75),
        ],
        executor=ray,
        name="train",
        dependencies="prepare",
    )
    exp.add(run.Config(taskdefs.add, 2, 3), executor=ray, name="evaluate", dependencies=sweep)
    exp.run()

    assert {t.id: (t.status, t.attempts) for t in exp.tasks} == {
        "prepare": ("SUCCEEDED", 1), sweep[0]: ("SUCCEEDED", 1), sweep[1]: ("SUCCEEDED", 2),
        sweep[2]: ("SUCCEEDED", 1), "evaluate": ("SUCCEEDED", 1),
    }  # fmt: skip
    order = sorted(exp.tasks, key=lambda t: t.start_time)
    assert order[0].id == "prepare" and order[-1].id == "evaluate"
    assert all(task(exp, s).start_time >= task(exp, "prepare").end_time for s in sweep)
    assert exp.get_logs("prepare").stdout == "hello data\n"
    retried = exp.get_logs(sweep[1])
    assert "step 3/3 loss: 0.421875" in retried.stdout and retried.exit_code == 0
    assert exp.get_logs(sweep[1], attempt=1).exit_code == 3
    # metrics: printed (loss) and logged with runyard.job (accuracy), each with its step
    points = [(p.name, p.step, p.source) for p in exp.get_metrics(sweep[0])]
    assert ("loss", 3, "parsed") in points and ("accuracy", 3, "logged") in points
    assert jobs_of(ray_address, exp.experiment_id) == []  # every job forgotten once home


def test_a_failing_task_fails_with_its_exit_code_and_traceback(ray_executor: Executor) -> None:
    exp = run.Experiment("ray-fail")
    exp.add(run.Config(taskdefs.fail, "on purpose"), executor=ray_executor(), name="t")
    exp.run()
    t = task(exp, "t")
    assert (t.status, t.exit_code) == ("FAILED", 1)
    assert "RuntimeError: on purpose" in exp.get_logs("t").stderr


def test_a_script_task_runs_with_its_environment(ray_executor: Executor) -> None:
    exp = run.Experiment("ray-script")
    script = run.Script(
        inline='echo "value: $GREETING"; echo "here: $(basename "$PWD")"', env={"GREETING": "hi 'there'"}
    )
    exp.add(script, executor=ray_executor(code=None), name="t")
    exp.run()
    assert exp.get_logs("t").stdout.split("\n")[0] == "value: hi 'there'"


def test_cancel_stops_the_running_job_and_brings_its_output_home(
    ray_executor: Executor, ray_address: str
) -> None:
    exp = run.Experiment("ray-cancel")
    exp.add(run.Config(taskdefs.print_lines, 600, delay=0.1), executor=ray_executor(), name="t")
    exp.run(detach=True)
    until(lambda: "line 3" in exp.get_logs("t").stdout, "the task's output while it runs")
    exp.cancel("t")
    assert task(exp, "t").status == "CANCELLED"
    until(lambda: not jobs_of(ray_address, exp.experiment_id), "the job to be gone from the head", 30)
    assert exp.get_logs("t").stdout.startswith("line 0\nline 1\n")


def test_stream_logs_follows_a_running_task_to_its_end(ray_executor: Executor) -> None:
    exp = run.Experiment("ray-follow")
    exp.add(run.Config(taskdefs.print_lines, 8, delay=0.4), executor=ray_executor(), name="t")
    exp.run(detach=True)
    seen: list[tuple[str, str]] = []
    for entry in exp.stream_logs("t", follow=True):
        seen.append((entry.message, task(exp, "t").status))
    assert [m for m, _ in seen] == [f"line {i}" for i in range(8)]
    assert seen[0][1] == "RUNNING"  # the first line came while the task ran
    assert task(exp, "t").status == "SUCCEEDED"


def test_a_detached_experiment_is_followed_to_its_end_from_a_new_process(
    ray_executor: Executor, tmp_path: Path
) -> None:
    exp = run.Experiment("ray-detach")
    exp.add(run.Config(taskdefs.sleep_then_print, 2, "finished"), executor=ray_executor(), name="t")
    exp.run(detach=True)
    code = (
        "import runyard; e = runyard.Experiment.from_id(%r); e.wait(timeout=120);"
        " print(e.tasks[0].status, e.get_logs('t').stdout.strip())" % exp.experiment_id
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True
    )
    assert done.stdout.split("\n")[-2:] == ["SUCCEEDED finished", ""]


def test_pause_and_resume_are_refused_saying_ray_cannot(ray_executor: Executor) -> None:
    exp = run.Experiment("ray-pause")
    exp.add(run.Config(taskdefs.sleep_then_print, 60), executor=ray_executor(), name="t")
    exp.run(detach=True)
    until(lambda: task(exp, "t").status == "RUNNING", "the task to run")
    with pytest.raises(run.TaskStateError, match="cannot be paused: RayBackend cannot pause a running task"):
        exp.pause("t")
    assert task(exp, "t").status == "RUNNING"
    exp.cancel("t")


def test_max_jobs_caps_the_jobs_live_on_the_cluster_and_the_others_say_why_they_wait(
    ray_executor: Executor, ray_address: str, tmp_path: Path
) -> None:
    exp = run.Experiment("ray-cap")
    ids = exp.add(
        [run.Config(taskdefs.record_execution, str(tmp_path), f"t{i}", 1.0) for i in range(3)],
        executor=ray_executor(max_jobs=1),
        name="t",
    )
    exp.run(detach=True)
    reason = until(
        lambda: next((t.reason for t in exp.tasks if t.status == "PENDING" and t.reason), None),
        "a waiting task",
    )
    assert reason == f"waiting for 1 free Ray job slot on {ray_address}"
    live = []
    deadline = time.monotonic() + 120
    while any(t.status not in FINAL_STATES for t in exp.tasks) and time.monotonic() < deadline:
        live.append(len(jobs_of(ray_address, exp.experiment_id)))
        time.sleep(0.2)
    assert max(live) <= 1
    assert [task(exp, i).status for i in ids] == ["SUCCEEDED"] * 3
    runs = sorted(
        (
            float((tmp_path / f"t{i}.started").read_text().split()[0]),
            float((tmp_path / f"t{i}.finished").read_text().split()[0]),
        )
        for i in range(3)
    )
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(runs))  # one at a time


def test_a_submission_whose_answer_was_lost_is_found_again_never_submitted_twice(
    ray_executor: Executor, ray_address: str, runyard_plugins: Any
) -> None:
    exp = run.Experiment("ray-again")
    exp.add(run.Config(taskdefs.sleep_then_print, 60), executor=ray_executor(), name="t")
    exp.run(detach=True)
    t = until(lambda: (v := task(exp, "t")).status == "RUNNING" and v, "the task to run")
    backend = runyard_plugins.backend("ray")
    spec = exp._engine.task("t").spec(1, [], with_secrets=True)
    spec.env["RUNYARD_LAUNCH_ID"] = "another-launch"
    [again] = backend.launch_many([spec])
    assert again.job_id == t.job_id
    assert len(jobs_of(ray_address, exp.experiment_id)) == 1
    exp.cancel("t")


def test_env_vars_reach_the_task_and_secrets_are_stored_nowhere(
    ray_executor: Executor, runyard_home: str
) -> None:
    exp = run.Experiment("ray-env")
    executor = ray_executor(env_vars={"PLAIN": "visible", "API_TOKEN": "s3cr3t-value"}, code=None)
    exp.add(
        run.Script(inline='echo "plain: $PLAIN, token: ${#API_TOKEN} characters"'),
        executor=executor,
        name="t",
    )
    shown = exp.dry_run(file=io.StringIO())["t"]
    assert "s3cr3t-value" not in shown and '"API_TOKEN": "***"' in shown
    exp.run()
    assert exp.get_logs("t").stdout == "plain: visible, token: 12 characters\n"
    for folder, _, names in os.walk(runyard_home):
        for name in names:
            assert b"s3cr3t-value" not in Path(folder, name).read_bytes(), os.path.join(folder, name)


def test_a_task_under_torchrun_runs_every_rank_on_the_job(ray_executor: Executor, torch_python: str) -> None:
    import trainingdefs

    exp = run.Experiment("ray-torchrun")
    executor = ray_executor(python=torch_python, launcher=run.Torchrun(nproc_per_node=2))
    exp.add(run.Config(trainingdefs.allreduce), executor=executor, name="t")
    exp.run()
    assert task(exp, "t").status == "SUCCEEDED", exp.get_logs("t").stderr
    assert "rank=0 world=2 sum=1" in exp.get_logs("t").stdout
    rank1 = Path(task(exp, "t").local_directory, "attempt-1", "ranks", "1", "stdout.log").read_text()
    assert "rank=1 world=2 sum=1" in rank1


def test_the_guide_style_executor_needs_no_address(ray_address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_RAY_ADDRESS", ray_address)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1")  # RUNYARD_RAY_ADDRESS comes first
    assert run.RayExecutor().address == ray_address
    exp = run.Experiment("ray-default")
    exp.add(run.Config(taskdefs.hello), executor=run.RayExecutor(), name="t")
    exp.run()
    assert (task(exp, "t").status, exp.get_logs("t").stdout) == ("SUCCEEDED", "hello world\n")


def test_the_timeout_fails_a_running_job_and_the_head_forgets_it(
    ray_executor: Executor, ray_address: str
) -> None:
    exp = run.Experiment("ray-timeout", timeout=3)
    exp.add(run.Config(taskdefs.sleep_then_print, 60), executor=ray_executor(), name="t")
    exp.run()
    t = task(exp, "t")
    assert (t.status, t.reason) == ("FAILED", "timeout")
    until(lambda: not jobs_of(ray_address, exp.experiment_id), "the job to be gone from the head", 30)
