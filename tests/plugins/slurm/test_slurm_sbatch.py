"""The sbatch script: every user value quoted, every option where sbatch reads it, srun for
multi-process tasks, one script per job array; and reading what sbatch answered.

The quoting is also proven on the real cluster (test_jobs.py: a job name with quotes,
``$(...)`` and backticks reaches Slurm as written; env values and script arguments reach
the task as written)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import attrs
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


# ------------------------------------------------------------------ launchers, signal, %N


def launched(task_id: str = "train") -> JobFiles:
    """A job whose executor has a launcher: its runner starts torchrun (runner.py, never runner.sh)."""
    command = ("python3", "/j/runner/abc/runner.py", f"/j/exp/tasks/{task_id}", "1")
    return JobFiles(task_id, 1, "/j/exp", {}, command, "/j/code/abc", run.Torchrun(nproc_per_node=2))


def test_a_multi_node_launcher_runs_one_runner_per_node_under_srun() -> None:
    script = render(run.SlurmExecutor(nodes=2, ntasks_per_node=2, cpus_per_task=3), [launched()])

    words = shlex.split(script.splitlines()[-1])
    assert words[:7] == [
        "exec",
        "srun",
        "--nodes=$SLURM_NNODES",
        "--ntasks=$SLURM_NNODES",
        "--ntasks-per-node=1",
        "--cpus-per-task=6",
        "--kill-on-bad-exit=1",
    ]  # fmt: skip  (each runner gets the node's share of the job: 2 tasks x 3 CPUs)
    assert words[7:11] == ["/bin/bash", "-c", sbatch.RANK_WRAPPER, "runyard-rank"]
    assert words[11:] == ["python3", "/j/runner/abc/runner.py", "/j/exp/tasks/train", "$a"]
    assert (
        'export RUNYARD_NNODES="$SLURM_NNODES" RUNYARD_RDZV_ID="$SLURM_JOB_ID"'
        ' RUNYARD_RDZV_ENDPOINT="$rdzv_addr:$((29500 + SLURM_JOB_ID % 1000))"'
    ) in script


def test_the_rendezvous_port_is_the_launchers_when_it_names_one() -> None:
    job = attrs.evolve(launched(), launcher=run.Torchrun(rdzv_port=41000))

    assert 'RUNYARD_RDZV_ENDPOINT="$rdzv_addr:41000"' in render(run.SlurmExecutor(nodes=2), [job])


def test_a_one_node_launcher_runs_the_runner_directly_with_a_local_rendezvous() -> None:
    """torchrun on the batch node itself: the runner picks a free port on 127.0.0.1."""
    script = render(run.SlurmExecutor(ntasks_per_node=4), [launched()])

    assert script.splitlines()[-1] == 'exec python3 /j/runner/abc/runner.py /j/exp/tasks/train "$a"'
    assert "srun" not in script and "RUNYARD_RDZV_ENDPOINT" not in script


def rendezvous_lines(script: str) -> str:
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rdzv_node="))
    return "\n".join(lines[start : start + 4])


def fake_scontrol(tmp_path: Path, show_node: str) -> str:
    """A PATH whose scontrol answers `show hostnames` with node7 and `show node` with ``show_node``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        '#!/bin/sh\ncase "$*" in "show hostnames"*) echo node7; echo node8;; *) printf "%s\\n" '
        + shlex.quote(show_node) + "; [ -n " + shlex.quote(show_node) + " ];; esac\n"
    )  # fmt: skip
    (bin_dir / "scontrol").chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def test_the_first_nodes_address_is_its_nodeaddr_not_its_name(tmp_path: Path) -> None:
    """Node names need not resolve: the rendezvous is at the NodeAddr Slurm has for the first node.
    (The bed's nodes are all 127.0.0.1; a stand-in scontrol shows a node whose address differs.)"""
    lines = rendezvous_lines(render(run.SlurmExecutor(nodes=2), [launched()]))
    env = {"PATH": fake_scontrol(tmp_path, "NodeName=node7 Arch=x86_64 NodeAddr=10.1.2.7 NodeHostName=n7"),
           "SLURM_JOB_NODELIST": "node[7-8]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "1234"}  # fmt: skip

    done = subprocess.run(["bash", "-c", lines + '\necho "$RUNYARD_RDZV_ENDPOINT $RUNYARD_NNODES $RUNYARD_RDZV_ID"'],
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip

    assert (done.returncode, done.stdout, done.stderr) == (0, "10.1.2.7:29734 2 1234\n", "")


def test_no_address_for_the_first_node_ends_the_job_at_once_and_says_why(tmp_path: Path) -> None:
    lines = rendezvous_lines(render(run.SlurmExecutor(nodes=2), [launched()]))
    env = {"PATH": fake_scontrol(tmp_path, ""), "SLURM_JOB_NODELIST": "node[7-8]", "SLURM_NNODES": "2",
           "SLURM_JOB_ID": "1234"}  # fmt: skip

    done = subprocess.run(["bash", "-c", lines + "\necho started"], env=env, capture_output=True, text=True,
                          check=False)  # fmt: skip

    assert (done.returncode, done.stdout) == (70, "")
    assert done.stderr == (
        "runyard: cannot start torchrun: Slurm knows no address (NodeAddr) of node 'node7', the first of job"
        " 1234 (its nodes: 'node[7-8]'); the nodes would have no rendezvous\n"
    )


@pytest.mark.parametrize(
    ("given", "rendered"),
    [
        ("USR1@90", "'B:USR1@90'"),
        ("R:SIGUSR2@30", "'R:USR2@30'"),
        ("B:10", "'B:USR1'"),
        ("usr1@5", "'B:USR1@5'"),
    ],
)
def test_the_signal_goes_to_the_batch_shell_unless_r_is_asked(given: str, rendered: str) -> None:
    assert directives(render(run.SlurmExecutor(signal=given)))["signal"] == rendered


def test_no_signal_by_default() -> None:
    assert "signal" not in directives(render(run.SlurmExecutor()))


def test_max_parallel_caps_the_running_elements_of_an_array() -> None:
    jobs = [job(task_id=f"v-{i}") for i in range(5)]

    assert directives(render(run.SlurmExecutor(), jobs, array=True, max_parallel=2))["array"] == "'0-4%2'"
