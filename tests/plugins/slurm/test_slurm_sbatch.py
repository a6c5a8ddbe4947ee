"""The sbatch script: every user value quoted, every option where sbatch reads it, srun for
multi-process tasks, one script per job array; and reading what sbatch answered.

The quoting is also proven on the real cluster (test_jobs.py: a job name with quotes,
``$(...)`` and backticks reaches Slurm as written; env values and script arguments reach
the task as written)."""

from __future__ import annotations

import shlex
import subprocess

import pytest
import runyard as run
from runyard.errors import BackendError
from runyard_slurm import sbatch
from runyard_slurm.sbatch import JobFiles

NASTY = 'it\'s $(touch /tmp/pwned) `id` # \\ "x"'


@pytest.fixture(autouse=True)
def a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_SLURM_HOST", "login.example.org")
    monkeypatch.setenv("RUNYARD_SLURM_CONFIG", "/nonexistent/slurm.toml")


def job(env: dict[str, str] | None = None, argv: tuple[str, ...] = (), task_id: str = "train") -> JobFiles:
    command = ("python3", "/j/runner/abc/runner.py", f"/j/exp/tasks/{task_id}", "1", *argv)
    return JobFiles(
        task_id=task_id, attempt=1, experiment_dir="/j/exp", env=env or {}, command=command, cwd="/j/code/abc"
    )


def render(executor: run.SlurmExecutor, jobs: list[JobFiles] | None = None, **kw: object) -> str:
    return sbatch.render(executor, jobs or [job()], experiment_id="20260101-000000-000000_exp",
                         output_dir="/j/exp/slurm", **kw)  # type: ignore[arg-type]  # fmt: skip


def directives(script: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, sep, value = line[len("#SBATCH --") :].partition("=")
            out[key] = value if sep else None
    return out


def test_every_executor_field_becomes_its_sbatch_option() -> None:
    executor = run.SlurmExecutor(
        partition="gpu", nodes=2, ntasks_per_node=4, gpus_per_node=8, cpus_per_task=6, mem="64G",
        time="1:00:00", account="lab", qos="high", job_name="train-big", requeue=True,
    )  # fmt: skip

    found = directives(render(executor))

    assert found == {
        "job-name": "'train-big'", "output": "'/j/exp/tasks/train/attempt-1/slurm.out'",
        "partition": "'gpu'", "nodes": "'2'", "ntasks-per-node": "'4'", "gpus-per-node": "'8'",
        "cpus-per-task": "'6'", "mem": "'64G'", "time": "'1:00:00'", "account": "'lab'", "qos": "'high'",
        "requeue": None, "open-mode": "'append'", "comment": "'runyard:20260101-000000-000000_exp/train/1'",
    }  # fmt: skip


def test_additional_parameters_become_options_and_flags() -> None:
    executor = run.SlurmExecutor(
        additional_parameters={"constraint": "a100", "exclusive": True, "mail_type": "END", "hold": False,
                               "reservation": None, "priority": 5}
    )  # fmt: skip

    found = directives(render(executor))

    assert found["constraint"] == "'a100'" and found["mail-type"] == "'END'" and found["priority"] == "'5'"
    assert "exclusive" in found and found["exclusive"] is None
    assert "hold" not in found and "reservation" not in found


def test_the_job_name_defaults_to_the_task_id() -> None:
    assert directives(render(run.SlurmExecutor()))["job-name"] == "'train'"


def test_a_directive_value_is_quoted_for_sbatchs_parser() -> None:
    assert sbatch.directive_quote(NASTY) == "'it\\'s $(touch /tmp/pwned) `id` # \\\\ \"x\"'"


def test_env_values_and_arguments_are_shell_quoted_in_the_body() -> None:
    script = render(run.SlurmExecutor(), [job(env={"NASTY": NASTY, "LINES": "a\nb"}, argv=(NASTY, "a\nb"))])

    # the body, run by bash with every command replaced by a print of its words
    body = "\n".join(line for line in script.splitlines() if not line.startswith("#"))
    probe = body.replace("exec python3", "printf '<%s>' python3").replace("cd ", "true ")
    out = subprocess.run(["bash", "-c", probe + '\nprintf "[%s][%s]" "$NASTY" "$LINES"'],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip

    assert out.endswith(f"<{NASTY}><a\nb>[{NASTY}][a\nb]")


def test_an_env_name_a_shell_cannot_export_is_refused() -> None:
    with pytest.raises(BackendError, match="cannot be exported"):
        render(run.SlurmExecutor(), [job(env={"NOT-A-NAME": "x"})])


def test_secret_values_are_masked_when_asked() -> None:
    script = render(run.SlurmExecutor(), [job(env={"WANDB_API_KEY": "s3cret"})], show_secrets=False)

    assert "s3cret" not in script and "export WANDB_API_KEY='***'" in script


def test_a_one_process_task_runs_the_runner_directly() -> None:
    script = render(run.SlurmExecutor())

    assert script.splitlines()[-1] == 'exec python3 /j/runner/abc/runner.py /j/exp/tasks/train "$a"'
    assert "srun" not in script


def test_a_multi_process_task_runs_the_runner_under_srun() -> None:
    script = render(run.SlurmExecutor(nodes=2, ntasks_per_node=2))

    words = shlex.split(script.splitlines()[-1])
    assert words[:3] == ["exec", "srun", "--kill-on-bad-exit=1"]
    assert words[-5:] == ["runyard-rank", "python3", "/j/runner/abc/runner.py", "/j/exp/tasks/train", "$a"]
    assert words[3:6] == ["/bin/bash", "-c", sbatch.RANK_WRAPPER]


def test_dependencies_are_afterok_and_kill_the_dependent_if_they_fail() -> None:
    found = directives(render(run.SlurmExecutor(), after=["101", "102_3"]))

    assert found["dependency"] == "'afterok:101:102_3'"
    assert found["kill-on-invalid-dep"] == "'yes'"


def test_a_group_becomes_one_array_script_with_a_branch_per_task() -> None:
    jobs = [job(task_id=f"model-variants-{i}") for i in range(3)]

    script = render(run.SlurmExecutor(), jobs, array=True)

    found = directives(script)
    assert found["array"] == "'0-2'" and found["job-name"] == "'model-variants'"
    assert found["output"] == "'/j/exp/slurm/%A_%a.out'"
    for i in range(3):
        link = f'ln -sf /j/exp/slurm/"$SLURM_ARRAY_JOB_ID"_{i}.out /j/exp/tasks/model-variants-{i}/attempt-1/slurm.out'
        assert (
            f'\n{i})\n  a=$((1 + ${{SLURM_RESTART_COUNT:-0}}))\n  if [ "$a" = 1 ]; then {link}; else'
            in script
        )
        assert f'runner.py /j/exp/tasks/model-variants-{i} "$a"\n  ;;' in script


def test_a_percent_in_a_path_is_not_a_slurm_pattern() -> None:
    odd = JobFiles("t", 1, "/j/100%/exp", {}, ("python3", "/r/runner.py", "/j/100%/exp/tasks/t", "1"))

    assert (
        directives(render(run.SlurmExecutor(), [odd]))["output"]
        == "'/j/100%%/exp/tasks/t/attempt-1/slurm.out'"
    )


def test_sbatch_answers_are_read_per_script() -> None:
    text = (
        "0\t4242\t\n"
        "1\t\tsbatch: error: invalid partition specified: x\rsbatch: error: Batch job submission failed: Invalid\r\n"
        "0\t77;other\t\n"
    )

    answers = sbatch.parse_submit_output(text, 3)

    assert [a.job_id for a in answers] == ["4242", None, "77"]
    assert answers[1].error == (
        "sbatch refused the job: invalid partition specified: x; Batch job submission failed: Invalid"
    )


def test_a_short_answer_is_an_error() -> None:
    with pytest.raises(BackendError, match="answered for 1 of 2"):
        sbatch.parse_submit_output("0\t1\t\n", 2)
