"""Rendering sbatch scripts, and the one command that submits a batch of them.

Every value that comes from the user is quoted: in ``#SBATCH`` lines for sbatch's own
directive parser (:func:`directive_quote`), in the script body and in commands for the
POSIX shell (``shlex.quote``). Values that cannot be quoted safely for both (control
characters in option values) are refused when the executor is created.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import attrs
from runyard import naming
from runyard.errors import BackendError
from runyard.redact import masked

from runyard_slurm.executor import SlurmExecutor

_ENV_NAME_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_ENV_NAME_REST = _ENV_NAME_FIRST + "0123456789"

# Runs one task process of a multi-process job (under srun), given the runner's command line
# (PROGRAM RUNNER TASK_DIR ATTEMPT ...): rank 0 is the task (its files are the task's), the
# others run the same task with their files in ranks/<rank>/.
RANK_WRAPPER = (
    'p=$1 r=$2 t=$3; shift 3; if [ "${SLURM_PROCID:-0}" != 0 ]; then d="$t/ranks/$SLURM_PROCID"; '
    'mkdir -p "$d" && ln -sf "$t/task.json" "$d/task.json" || exit 70; t=$d; fi; '
    'exec "$p" "$r" "$t" "$@"'
)


@attrs.frozen
class JobFiles:
    """One task attempt as its job sees it: every path is on the cluster.

    ``command`` starts the in-job runner (``runyard.jobfiles.runner_command``) on
    ``task_dir``.
    """

    task_id: str
    attempt: int
    experiment_dir: str
    env: dict[str, str]
    command: tuple[str, ...]
    cwd: str | None = None

    @property
    def task_dir(self) -> str:
        return naming.task_dir(self.experiment_dir, self.task_id)

    @property
    def attempt_dir(self) -> str:
        return naming.attempt_dir(self.experiment_dir, self.task_id, self.attempt)


def directive_quote(value: str) -> str:
    """``value`` quoted for an ``#SBATCH`` line. sbatch's directive parser takes ``'...'``
    literally except that ``\\`` escapes the next character, and ends the option at an
    unquoted ``#`` or blank: escaping ``\\`` and ``'`` inside single quotes covers all."""
    if "\n" in value or "\r" in value:
        raise BackendError(f"an sbatch option value cannot contain a newline: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _output_path(path: str) -> str:
    return path.replace("%", "%%")  # sbatch expands %j, %A, ... in file names


def options(
    executor: SlurmExecutor,
    *,
    job_name: str,
    output: str,
    after: Sequence[str] = (),
    array_size: int | None = None,
) -> list[tuple[str, str | None]]:
    """The sbatch options of a job, as (name, value) pairs (value None: a bare flag)."""
    opts: list[tuple[str, str | None]] = [("job-name", executor.job_name or job_name), ("output", output)]
    if executor.partition:
        opts.append(("partition", executor.partition))
    opts.append(("nodes", str(executor.nodes)))
    opts.append(("ntasks-per-node", str(executor.ntasks_per_node)))
    if executor.gpus_per_node is not None:
        opts.append(("gpus-per-node", str(executor.gpus_per_node)))
    if executor.cpus_per_task is not None:
        opts.append(("cpus-per-task", str(executor.cpus_per_task)))
    if executor.mem is not None:
        opts.append(("mem", str(executor.mem)))
    if executor.time is not None:
        opts.append(("time", str(executor.time)))
    if executor.account:
        opts.append(("account", executor.account))
    if executor.qos:
        opts.append(("qos", executor.qos))
    if array_size is not None:
        opts.append(("array", f"0-{array_size - 1}"))
    if after:
        opts.append(("dependency", "afterok:" + ":".join(after)))
        opts.append(("kill-on-invalid-dep", "yes"))
    for key, value in executor.additional_parameters.items():
        if value is None or value is False:
            continue
        opts.append((key.replace("_", "-"), None if value is True else str(value)))
    return opts


def _env_name(name: str) -> str:
    if not name or name[0] not in _ENV_NAME_FIRST or any(c not in _ENV_NAME_REST for c in name):
        raise BackendError(
            f"environment variable name {name!r} cannot be exported by a shell: use letters, "
            "digits and '_', not starting with a digit"
        )
    return name


def _quote_value(name: str, value: str) -> str:
    if "\0" in value:
        raise BackendError(f"environment variable {name} contains a NUL character, which a job cannot carry")
    return shlex.quote(value)


def _task_lines(job: JobFiles, executor: SlurmExecutor, *, show: bool, output_link: str | None) -> list[str]:
    env = job.env if show else masked(job.env)
    lines = []
    if output_link is not None:  # a shell word: Slurm's output file of this array element
        lines.append(f"ln -sf {output_link} {shlex.quote(job.attempt_dir + '/slurm.out')}")
    for name in sorted(env):
        lines.append(f"export {_env_name(name)}={_quote_value(name, env[name])}")
    where = shlex.quote(job.task_dir)
    if job.cwd:
        lines.append(f"cd {shlex.quote(job.cwd)} 2>/dev/null || cd {where} || exit 70")
    else:
        lines.append(f"cd {where} || exit 70")
    command = list(job.command)
    if executor.processes > 1:
        command = ["srun", "--kill-on-bad-exit=1", "/bin/bash", "-c", RANK_WRAPPER, "runyard-rank", *command]
    lines.append("exec " + shlex.join(command))
    return lines


def render(
    executor: SlurmExecutor,
    jobs: Sequence[JobFiles],
    *,
    experiment_id: str,
    after: Sequence[str] = (),
    output_dir: str,
    array: bool = False,
    show_secrets: bool = True,
) -> str:
    """The sbatch script for one job, or for a job array of ``jobs`` (``array=True``).

    One job writes Slurm's own output to ``<attempt dir>/slurm.out``; an array to
    ``output_dir/<array id>_<index>.out``, linked from each element's attempt folder.
    ``show_secrets=False`` masks the values of secret variables (dry run).
    """
    if not jobs:
        raise ValueError("no jobs to render")
    if array:
        name = _group_name([j.task_id for j in jobs], experiment_id)
        output = _output_path(output_dir) + "/%A_%a.out"  # %A: the array's job id, %a: the index
        opts = options(executor, job_name=name, output=output, after=after, array_size=len(jobs))
    else:
        [job] = jobs
        opts = options(
            executor, job_name=job.task_id, output=_output_path(f"{job.attempt_dir}/slurm.out"), after=after
        )
    lines = ["#!/bin/bash"]
    for key, value in opts:
        lines.append(f"#SBATCH --{key}" + ("" if value is None else "=" + directive_quote(value)))
    what = (
        f"{len(jobs)} tasks as a job array" if array else f"task {jobs[0].task_id}, attempt {jobs[0].attempt}"
    )
    lines.append(f"# runyard: experiment {experiment_id}, {what}")
    if not array:
        lines += _task_lines(jobs[0], executor, show=show_secrets, output_link=None)
        return "\n".join(lines) + "\n"
    lines.append('case "${SLURM_ARRAY_TASK_ID:-}" in')
    for index, job in enumerate(jobs):
        link = f'{shlex.quote(output_dir)}/"$SLURM_ARRAY_JOB_ID"_{index}.out'
        body = _task_lines(job, executor, show=show_secrets, output_link=link)
        lines.append(f"{index})")
        lines += ["  " + line for line in body]
        lines.append("  ;;")
    lines.append("esac")
    lines.append('echo "runyard: no task for array index ${SLURM_ARRAY_TASK_ID:-?}" >&2')
    lines.append("exit 70")
    return "\n".join(lines) + "\n"


def _group_name(task_ids: Sequence[str], experiment_id: str) -> str:
    """``model-variants`` for ``model-variants-0``, ``model-variants-1``, ...; else the
    experiment's title."""
    stems = {t.rsplit("-", 1)[0] if t.rsplit("-", 1)[-1].isdigit() and "-" in t else t for t in task_ids}
    return stems.pop() if len(stems) == 1 else experiment_id.partition("_")[2] or experiment_id


# ------------------------------------------------------------------------------ submitting
def submit_command(job_dir: str, scripts: Sequence[str]) -> str:
    """One command that unpacks the job files (a tar on stdin) under ``job_dir`` and submits
    ``scripts`` with ``sbatch --parsable``, printing ``<exit code>\\t<stdout>\\t<stderr>`` per
    script, in order.

    Repeating it is safe: a script's job id is kept beside it (``<script>.id``) once
    submitted, and a script that has one is not submitted again (a dropped connection is
    retried without submitting twice).
    """
    quoted = " ".join(shlex.quote(s) for s in scripts)
    return (
        f"mkdir -p {shlex.quote(job_dir)} && cd {shlex.quote(job_dir)} && tar -x -o -f - && "
        "e=$(mktemp) && for s in " + quoted + "; do "
        'if [ -s "$s.id" ]; then o=$(cat "$s.id"); r=0; : >"$e"; '
        'else o=$(sbatch --parsable "$s" 2>"$e"); r=$?; '
        'if [ $r -eq 0 ]; then printf "%s\\n" "$o" >"$s.id"; fi; fi; '
        'printf "%s\\t%s\\t%s\\n" "$r" "$(printf "%s" "$o" | tr "\\n\\t" "  ")" "$(tr "\\n\\t" "\\r " <"$e")"; '
        'done; rm -f "$e"'
    )


@attrs.frozen
class Submitted:
    """What sbatch said for one script: the job id, or why it refused."""

    job_id: str | None
    error: str | None


def parse_submit_output(text: str, count: int) -> list[Submitted]:
    """The ``count`` results of :func:`submit_command`'s output."""
    out: list[Submitted] = []
    for line in text.split("\n"):  # not splitlines(): stderr's lines are joined by \r
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        code, stdout, stderr = int(parts[0]), parts[1].strip(), parts[2].strip()
        job_id = stdout.split(";")[0].strip() if stdout else ""
        if code == 0 and job_id.replace("_", "").isdigit():
            out.append(Submitted(job_id, None))
        else:
            lines = [" ".join(line.replace("sbatch: error:", "").split()) for line in stderr.split("\r")]
            said = "; ".join(line for line in lines if line) or stdout or f"exit code {code}"
            if code == 127:
                said += " (is sbatch on the PATH of a non-interactive login shell there?)"
            out.append(Submitted(None, f"sbatch refused the job: {said}"))
    if len(out) != count:
        raise BackendError(f"sbatch answered for {len(out)} of {count} jobs: {text.strip()[-500:]!r}")
    return out
