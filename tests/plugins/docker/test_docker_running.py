"""Tasks run in real containers of the test image: where they run, how they end (status from
the container cross-checked with the runner's result), what reaches them (environment,
volumes, code, engine options) and that nothing is left behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import runyard as run
import taskdefs
from _docker_helpers import containers_of, until

Executor = Callable[..., Any]


def run_one(task: Any, executor: Any, **experiment: Any) -> tuple[run.Experiment, Any]:
    """Run one task attached to its end; the experiment and the task's view."""
    exp = run.Experiment("docker", **experiment)
    exp.add(task, executor=executor, name="t")
    exp.run()
    return exp, exp.tasks[0]


# ----------------------------------------------------------------------------- where and how
@pytest.mark.alone
def test_a_python_task_runs_in_a_container_of_the_image(docker_executor: Executor) -> None:
    exp, t = run_one(run.Config(taskdefs.print_env, "HOSTNAME", "RUNYARD_TASK_DIR"), docker_executor())
    assert (t.status, t.exit_code) == ("SUCCEEDED", 0)
    # a container's host name is its short id: the task's job id
    assert exp.get_logs("t").stdout == f"HOSTNAME={t.job_id}\nRUNYARD_TASK_DIR=/runyard/task\n"


@pytest.mark.alone
def test_a_task_whose_command_fails_is_failed_with_its_exit_code(docker_executor: Executor) -> None:
    _, t = run_one(run.Config(taskdefs.exit_with, 7), docker_executor())
    assert (t.status, t.exit_code) == ("FAILED", 7)


def test_an_exception_fails_the_task_with_its_traceback(docker_executor: Executor) -> None:
    exp, t = run_one(run.Config(taskdefs.fail, "disk full"), docker_executor())
    assert (t.status, t.exit_code, t.reason) == ("FAILED", 1, "RuntimeError: disk full")
    logs = exp.get_logs("t")
    assert logs.stdout == "about to fail\n"
    assert "Traceback" in logs.stderr and logs.stderr.rstrip().endswith("RuntimeError: disk full")


@pytest.mark.alone
def test_a_bash_script_runs_in_the_container_and_its_exit_code_counts(docker_executor: Executor) -> None:
    script = run.Script(inline='echo "bash $BASH_VERSION in $PWD"; echo oops >&2; exit 3')
    exp, t = run_one(script, docker_executor())
    assert (t.status, t.exit_code) == ("FAILED", 3)
    logs = exp.get_logs("t")
    assert logs.stdout.startswith("bash 5.") and logs.stdout.rstrip().endswith("in /runyard/code")
    assert logs.stderr == "oops\n"


def test_a_script_of_another_interpreter_runs_under_the_python_runner(docker_executor: Executor) -> None:
    exp, t = run_one(run.Script(inline="print(6 * 7)", entrypoint="python3"), docker_executor())
    assert t.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == "42\n"


@pytest.mark.alone
def test_finished_containers_are_removed_once_result_and_logs_are_in_the_task_folder(
    docker_executor: Executor, client: Any
) -> None:
    exp = run.Experiment("docker-cleanup")
    exp.add([run.Config(taskdefs.hello, name=str(i)) for i in range(3)], executor=docker_executor(), name="t")
    assert exp.run() == "SUCCEEDED"
    until(lambda: not containers_of(client, exp.experiment_id), "the containers to be removed", timeout=30)
    for t in exp.tasks:
        attempt = Path(t.local_directory, "attempt-1")
        assert json.loads((attempt / "result.json").read_text())["exit_code"] == 0
        assert (attempt / "stdout.log").read_text() == f"hello {t.id[-1]}\n"


def test_get_all_logs_has_every_tasks_output(docker_executor: Executor) -> None:
    exp = run.Experiment("docker-logs")
    exp.add(run.Config(taskdefs.hello, "a"), executor=docker_executor(), name="a")
    exp.add(run.Config(taskdefs.fail, "b"), executor=docker_executor(), name="b")
    exp.run()
    logs = exp.get_all_logs()
    assert (logs["a"].exit_code, logs["a"].stdout) == (0, "hello a\n")
    assert logs["b"].exit_code == 1 and "RuntimeError: b" in logs["b"].stderr


# ----------------------------------------------------------------------------- what reaches the container
def test_env_vars_reach_the_container(docker_executor: Executor) -> None:
    executor = docker_executor(env_vars={"GREETING": "hello there", "EMPTY": ""})
    exp, _ = run_one(run.Config(taskdefs.print_env, "GREETING", "EMPTY"), executor)
    assert exp.get_logs("t").stdout == "GREETING=hello there\nEMPTY=\n"


def test_a_read_write_volume_is_shared_with_the_host(docker_executor: Executor, tasks_dir: str) -> None:
    Path(tasks_dir, "in.txt").write_text("from the host\n")
    script = run.Script(inline="cat /data/in.txt; echo from the container > /data/out.txt")
    exp, t = run_one(script, docker_executor(volumes=[f"{tasks_dir}:/data"]))
    assert t.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == "from the host\n"
    assert Path(tasks_dir, "out.txt").read_text() == "from the container\n"


def test_a_read_only_volume_cannot_be_written(docker_executor: Executor, tasks_dir: str) -> None:
    exp, t = run_one(
        run.Script(inline="echo x > /data/out.txt"), docker_executor(volumes=[f"{tasks_dir}:/data:ro"])
    )
    assert t.status == "FAILED"
    assert "Read-only file system" in exp.get_logs("t").stderr
    assert not Path(tasks_dir, "out.txt").exists()


def test_code_from_a_directory_is_importable_in_the_container(
    docker_executor: Executor, tmp_path: Path, monkeypatch: Any
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "shipped_module.py").write_text("def where():\n    print(__file__)\n")
    monkeypatch.syspath_prepend(str(project))  # add() checks that the target imports here
    import shipped_module

    exp, t = run_one(run.Config(shipped_module.where), docker_executor(code=str(project)))
    assert t.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == "/runyard/code/shipped_module.py\n"


def test_a_script_file_in_the_shipped_code_runs_from_the_containers_copy(
    docker_executor: Executor, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.sh").write_text('echo "running $0 with $1"\n')
    script = run.Script(path=str(project / "train.sh"), args=("--fast",))
    exp, t = run_one(script, docker_executor(code=str(project)))
    assert t.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == "running /runyard/code/train.sh with --fast\n"


def test_without_shipped_code_a_task_sees_only_the_image(docker_executor: Executor) -> None:
    _, t = run_one(run.Config(taskdefs.hello), docker_executor(code=None))
    assert (t.status, t.reason) == ("FAILED", "ModuleNotFoundError: No module named 'taskdefs'")


def test_user_runs_the_task_as_that_user_and_it_writes_its_logs(docker_executor: Executor) -> None:
    exp, t = run_one(run.Script(inline="id -u; id -g"), docker_executor(user="65534:65534"))
    assert t.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == "65534\n65534\n"


def test_engine_options_apply_in_the_container(docker_executor: Executor) -> None:
    executor = docker_executor(
        network="none", shm_size="64m", workdir="/tmp", run_kwargs={"hostname": "trainer-box"}
    )
    script = run.Script(
        inline="ls /sys/class/net; df -k --output=size /dev/shm | tail -1; pwd; cat /proc/sys/kernel/hostname"
    )
    exp, t = run_one(script, executor)
    assert t.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout.split() == ["lo", str(64 * 1024), "/tmp", "trainer-box"]


def test_a_task_killed_at_the_containers_memory_limit_fails_with_failure_oom(
    docker_executor: Executor,
) -> None:
    """The kernel kills the task at the memory limit (the runner survives to say so): the attempt
    is ``oom``, not a plain error, and ``retry_on`` decides whether it runs again."""
    limit = {"mem_limit": "64m", "memswap_limit": "64m"}
    task = run.Config(taskdefs.use_memory, 400)
    exp, t = run_one(task, docker_executor(run_kwargs=limit), max_retries=1, retry_on=["error"])
    assert (t.status, t.failure, t.exit_code, t.attempts) == ("FAILED", "oom", 137, 1)
    assert t.reason.startswith("out of memory")
    exp, t = run_one(task, docker_executor(run_kwargs=limit), max_retries=1)  # oom is retried by default
    assert (t.status, t.attempts) == ("FAILED", 2)
    assert [a.failure for a in exp.attempts("t")] == ["oom", "oom"]


# ----------------------------------------------------------------------------- the driver's features
def test_a_failed_attempt_is_retried_in_a_new_container(docker_executor: Executor, tasks_dir: str) -> None:
    task = run.Config(taskdefs.count_runs, "/data/runs.txt", fail_until=2)
    _, t = run_one(task, docker_executor(volumes=[f"{tasks_dir}:/data"]), max_retries=2)
    assert (t.status, t.attempts) == ("SUCCEEDED", 2)
    assert Path(tasks_dir, "runs.txt").read_text() == "run\nrun\n"
    first = json.loads(Path(t.local_directory, "attempt-1", "result.json").read_text())
    assert first["exit_code"] == 1


@pytest.mark.alone
def test_retry_runs_a_finished_task_again_in_a_new_container(
    docker_executor: Executor, tasks_dir: str
) -> None:
    task = run.Config(taskdefs.count_runs, "/data/runs.txt", fail_until=2)
    exp, first = run_one(task, docker_executor(volumes=[f"{tasks_dir}:/data"]))
    assert (first.status, first.attempts) == ("FAILED", 1)
    assert exp.retry("t") == ["t"]
    assert exp.wait(timeout=60) == "SUCCEEDED"
    again = exp.tasks[0]
    assert (again.attempts, again.exit_code) == (2, 0)
    assert again.job_id != first.job_id  # another container
    assert Path(tasks_dir, "runs.txt").read_text() == "run\nrun\n"


def test_dependencies_are_honoured_by_a_detached_experiment(
    docker_executor: Executor, tasks_dir: str
) -> None:
    executor = docker_executor(volumes=[f"{tasks_dir}:/data"])
    exp = run.Experiment("docker-detached")
    first = exp.add(
        run.Config(taskdefs.write_file, "/data/order.txt", "first "), executor=executor, name="first"
    )
    exp.add(run.Config(taskdefs.write_file, "/data/order.txt", "second"), executor=executor, name="second",
            dependencies=[first])  # fmt: skip
    exp.run(detach=True)
    assert run.Experiment.from_id(exp.experiment_id).wait(timeout=60) == "SUCCEEDED"
    assert Path(tasks_dir, "order.txt").read_text() == "first second"


def test_the_timeout_fails_a_running_container_and_removes_it(docker_executor: Executor, client: Any) -> None:
    exp, t = run_one(run.Config(taskdefs.sleep_then_print, 60), docker_executor(), timeout=1)
    assert (t.status, t.reason) == ("FAILED", "timeout")
    until(lambda: not containers_of(client, exp.experiment_id), "the container to be removed", timeout=30)
