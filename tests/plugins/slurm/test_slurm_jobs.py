"""Tasks as real Slurm jobs over SSH: what the job carries, what it runs on, the sbatch
options it gets, and values that must reach it as written (no injection)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest
import runyard as run
import taskdefs
from _slurm_helpers import Cluster
from runyard.errors import ConfigError

NASTY = 'it\'s $(echo INJECTED) `echo INJECTED` "q" \\ # end'


def run_one(
    cluster: Cluster, task: object, name: str = "t", **fields: object
) -> tuple[run.Experiment, object]:
    """One task on the cluster, run attached to its end; the experiment and the task view."""
    exp = run.Experiment("slurm-job")
    exp.add(task, executor=cluster.executor(**fields), name=name)
    exp.run()
    [view] = exp.tasks
    return exp, view


@pytest.mark.alone
def test_a_python_task_runs_as_a_slurm_job(cluster: Cluster) -> None:
    exp, task = run_one(cluster, run.Config(taskdefs.hello, "cluster"))

    assert task.status == "SUCCEEDED" and task.exit_code == 0
    assert task.job_id.isdigit()
    assert cluster.state(task.job_id) == "COMPLETED"
    assert exp.get_logs("t").stdout == "hello cluster\n"


@pytest.mark.alone
def test_a_failing_task_is_failed_with_its_exit_code_and_traceback(cluster: Cluster) -> None:
    exp, task = run_one(cluster, run.Config(taskdefs.fail, "broken on the cluster"))

    assert (task.status, task.exit_code) == ("FAILED", 1)
    assert task.reason == "RuntimeError: broken on the cluster"
    assert "Traceback" in exp.get_logs("t").stderr


def test_an_exit_code_comes_from_the_runner(cluster: Cluster) -> None:
    _, task = run_one(cluster, run.Config(taskdefs.exit_with, 7))

    assert (task.status, task.exit_code) == ("FAILED", 7)
    assert cluster.state(task.job_id) == "FAILED"


@pytest.mark.alone
def test_the_job_needs_no_runyard_on_the_cluster(cluster: Cluster) -> None:
    """Only the in-task helper runyard.job, which the job carries, is there."""
    modules = ("runyard.experiment", "runyard_slurm", "taskdefs", "runyard.job")
    exp, task = run_one(cluster, run.Config(taskdefs.report_imports, *modules))

    assert task.status == "SUCCEEDED"
    said = exp.get_logs("t").stdout.splitlines()
    assert said == ["runyard.experiment=False", "runyard_slurm=False", "taskdefs=True", "runyard.job=True"]


def test_python_selects_the_clusters_interpreter(cluster: Cluster) -> None:
    exp, task = run_one(cluster, run.Config(taskdefs.print_executable), python="/usr/bin/python3")

    assert task.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout.strip() == "/usr/bin/python3"


def test_a_missing_interpreter_fails_the_task_with_the_jobs_own_words(cluster: Cluster) -> None:
    _, task = run_one(cluster, run.Config(taskdefs.hello), python="/no/such/python3")

    assert task.status == "FAILED"
    assert "without a result" in task.reason and "/no/such/python3" in task.reason


@pytest.mark.alone
def test_a_script_task_runs_with_its_arguments_as_written(cluster: Cluster) -> None:
    script = run.Script(inline='printf "[%s]" "$@"', args=[NASTY, "two\nlines", ""])

    exp, task = run_one(cluster, script)

    assert task.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == f"[{NASTY}][two\nlines][]"


def test_env_vars_are_exported_as_written(cluster: Cluster) -> None:
    env = {"NASTY": NASTY, "LINES": "one\ntwo", "EMPTY": ""}

    exp, task = run_one(cluster, run.Config(taskdefs.print_env, "NASTY", "LINES", "EMPTY"), env_vars=env)

    assert task.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == f"NASTY={NASTY}\nLINES=one\ntwo\nEMPTY=\n"


def test_secrets_reach_the_job_only_in_its_sbatch_script_which_only_its_owner_reads(cluster: Cluster) -> None:
    token, password = "tok-slurm-6e1d0c9b", "pw-slurm-2a8f7e41"
    script = run.Script(
        inline='printf %s "$API_TOKEN $DB_PASSWORD" | sha256sum', env={"DB_PASSWORD": password}
    )

    exp, task = run_one(cluster, script, env_vars={"API_TOKEN": token})

    assert task.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == hashlib.sha256(f"{token} {password}".encode()).hexdigest() + "  -\n"
    task_dir = f"{cluster.job_dir}/{exp.experiment_id}/tasks/t"
    holding = cluster.sh(f"grep -rlF -e {token} -e {password} {task_dir}").split()
    assert holding == [f"{task_dir}/attempt-1/job.sh"]  # not task.json
    assert cluster.sh(f"stat -c %a {task_dir}/attempt-1/job.sh").strip() == "700"


def test_the_task_sees_its_folder_on_the_cluster(cluster: Cluster) -> None:
    exp, _ = run_one(cluster, run.Config(taskdefs.print_env, "RUNYARD_TASK_DIR", "RUNYARD_TASK_ID"))

    assert (
        exp.get_logs("t").stdout
        == f"RUNYARD_TASK_DIR={cluster.job_dir}/{exp.experiment_id}/tasks/t\nRUNYARD_TASK_ID=t\n"
    )


def test_a_job_name_with_quotes_and_substitutions_reaches_slurm_as_written(cluster: Cluster) -> None:
    exp, task = run_one(cluster, run.Config(taskdefs.print_env, "SLURM_JOB_NAME"), job_name=NASTY)

    assert task.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == f"SLURM_JOB_NAME={NASTY}\n"  # nothing substituted


def test_a_job_name_with_a_newline_is_refused_before_anything_is_submitted(cluster: Cluster) -> None:
    with pytest.raises(ConfigError, match="one line"):
        cluster.executor(job_name="first\n#SBATCH --partition=gpu")


def test_the_executors_resources_are_what_slurm_gives_the_job(cluster: Cluster) -> None:
    fields = {"partition": cluster.facts.gpu_partition, "gpus_per_node": 1, "cpus_per_task": 2, "mem": "100M",
              "time": 5, "account": "root", "qos": "normal", "additional_parameters": {"comment": NASTY}}  # fmt: skip
    exp, task = run_one(
        cluster, run.Config(taskdefs.print_env, "SLURM_JOB_PARTITION", "SLURM_CPUS_PER_TASK", "CUDA_VISIBLE_DEVICES"),
        **fields,
    )  # fmt: skip

    assert task.status == "SUCCEEDED"
    assert (
        exp.get_logs("t").stdout == "SLURM_JOB_PARTITION=gpu\nSLURM_CPUS_PER_TASK=2\nCUDA_VISIBLE_DEVICES=0\n"
    )
    job = cluster.job(task.job_id)
    assert (job["TimeLimit"], job["Account"], job["QOS"], job["MinMemoryNode"]) == (
        "00:05:00",
        "root",
        "normal",
        "100M",
    )
    assert job["TresPerNode"] == "gres:gpu:1"
    # the comment, after runyard's tag of the submission (sbatch.tag)
    assert (
        cluster.sh(f"squeue -h -t all -j {task.job_id} -o %k") == f"runyard:{exp.experiment_id}/t/1 {NASTY}\n"
    )


def test_a_multi_process_task_runs_once_per_process_under_srun(cluster: Cluster) -> None:
    script = run.Script(inline='echo "rank $SLURM_PROCID of $SLURM_NTASKS"')

    exp, task = run_one(cluster, script, ntasks_per_node=2)

    assert task.status == "SUCCEEDED"
    assert exp.get_logs("t").stdout == "rank 0 of 2\n"  # the task's own output is rank 0's
    rank1 = cluster.read(f"{cluster.job_dir}/{exp.experiment_id}/tasks/t/ranks/1/attempt-1/stdout.log")
    assert rank1 == b"rank 1 of 2\n"


def test_a_failing_process_of_a_multi_process_task_fails_it(cluster: Cluster) -> None:
    # rank 0 is the sleep itself (exec): when srun ends the step, it dies of the signal, never
    # reaching `exit 3` (the shell of a plain `sleep` may run it first: a race, not the point)
    script = run.Script(inline='[ "$SLURM_PROCID" = 0 ] && exec sleep 30; exit 3')

    _, task = run_one(cluster, script, ntasks_per_node=2)

    assert task.status == "FAILED"
    assert "task 1: Exited with exit code 3" in task.reason  # srun's words, from the job's output


def test_an_unknown_partition_fails_the_task_with_sbatchs_words(cluster: Cluster) -> None:
    _, task = run_one(cluster, run.Config(taskdefs.hello), partition="no-such-partition")

    assert task.status == "FAILED" and task.job_id is None
    assert task.reason == (
        "launch failed: sbatch refused the job: invalid partition specified: no-such-partition; "
        "Batch job submission failed: Invalid partition name specified"
    )


def test_a_dry_run_prints_the_script_and_submits_nothing(cluster: Cluster) -> None:
    from runyard_slurm.tunnel import session_for

    exp = run.Experiment("dry")
    exp.add(run.Config(taskdefs.hello), executor=cluster.executor(env_vars={"API_TOKEN": "s3cret"}), name="t")
    commands = session_for(cluster.tunnel()).commands
    printed = io.StringIO()

    scripts = exp.dry_run(file=printed)

    assert scripts["t"].splitlines()[2] == "#!/bin/bash" and "export API_TOKEN='***'" in scripts["t"]
    assert "#SBATCH --job-name='t'" in printed.getvalue() and "s3cret" not in printed.getvalue()
    assert session_for(cluster.tunnel()).commands == commands  # nothing ran on the cluster
    assert [t.status for t in exp.tasks] == ["PENDING"]


# ------------------------------------------------------------------------------ shipping code
def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_the_code_ships_as_the_git_head_plus_uncommitted_changes(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "lab.py").write_text("def show():\n    print('committed')\n")
    git(repo, "add", "lab.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    (repo / "lab.py").write_text("import extra\n\ndef show():\n    print('uncommitted', extra.VALUE)\n")
    (repo / "extra.py").write_text("VALUE = 42\n")  # untracked
    monkeypatch.chdir(repo)
    monkeypatch.syspath_prepend(str(repo))
    import lab  # type: ignore[import-not-found]

    exp = run.Experiment("ships-git")
    exp.add(run.Config(lab.show), executor=cluster.executor(code="git"), name="t")
    exp.run()

    assert exp.tasks[0].status == "SUCCEEDED", exp.tasks[0].reason
    assert exp.get_logs("t").stdout == "uncommitted 42\n"


def test_a_named_folder_ships_as_the_code(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "job.sh").write_text('echo "from $(basename "$PWD")"; cat data.txt\n')
    (folder / "data.txt").write_text("shipped data\n")
    monkeypatch.chdir(folder)

    exp, task = run_one(cluster, run.Script(path=str(folder / "job.sh")), code=str(folder))

    assert task.status == "SUCCEEDED", task.reason
    stdout = exp.get_logs("t").stdout
    assert stdout.endswith("shipped data\n") and not stdout.startswith("from code")  # ran in the copy
    assert os.path.exists(folder / "job.sh")
