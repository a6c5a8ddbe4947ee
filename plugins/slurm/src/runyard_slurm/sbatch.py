"""Rendering sbatch scripts, and the one command that submits a batch of them.

Every value that comes from the user is quoted: in ``#SBATCH`` lines for sbatch's own
directive parser (:func:`directive_quote`), in the script body and in commands for the
POSIX shell (``shlex.quote``). Values that cannot be quoted safely for both (control
characters in option values) are refused when the executor is created.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence

import attrs
from runyard.errors import BackendError
from runyard.executor import AttemptFolders
from runyard.launchers import Torchrun
from runyard.redact import masked

from runyard_slurm.executor import SlurmExecutor, parse_signal

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
# The rendezvous port on the first node of a multi-node launcher job when Torchrun.rdzv_port is
# None: derived from the job id, so that jobs sharing a first node mostly differ in it
RDZV_PORT_BASE = 29500
RDZV_PORT_SPREAD = 1000


@attrs.frozen
class JobFiles(AttemptFolders):
    """One task attempt as its job sees it: every path is on the cluster (``task_dir``,
    ``attempt_dir``: ``runyard.executor.AttemptFolders``).

    ``command`` starts the in-job runner (``runyard.jobfiles.runner_command``) on
    ``task_dir``; ``launcher``: the executor's launcher, which the runner starts (one runner
    per node under ``srun`` when the job has several nodes).
    """

    task_id: str
    attempt: int
    experiment_dir: str
    env: dict[str, str]
    command: tuple[str, ...]
    cwd: str | None = None
    launcher: Torchrun | None = None


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
    max_parallel: int | None = None,
    tag: str | None = None,
) -> list[tuple[str, str | None]]:
    """The sbatch options of a job, as (name, value) pairs (value None: a bare flag).

    ``max_parallel``: at most that many elements of the array run at once (``%N``).
    ``tag`` (see :func:`tag`) becomes the job's comment, before any comment of the user's."""
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
    if executor.requeue is not None:
        opts.append(("requeue" if executor.requeue else "no-requeue", None))
    if executor.signal is not None:  # to the batch shell, which runs the runner, unless R: is asked
        prefix, name, seconds = parse_signal(executor.signal)
        opts.append(("signal", f"{prefix or 'B'}:{name}" + (f"@{seconds}" if seconds is not None else "")))
    opts.append(("open-mode", "append"))  # a requeued job's run must not wipe what the one before wrote
    if array_size is not None:
        limit = f"%{max_parallel}" if max_parallel is not None else ""
        opts.append(("array", f"0-{array_size - 1}{limit}"))
    if after:
        opts.append(("dependency", "afterok:" + ":".join(after)))
        opts.append(("kill-on-invalid-dep", "yes"))
    comment = tag
    for key, value in executor.additional_parameters.items():
        if value is None or value is False:
            continue
        name = key.replace("_", "-")
        if name == "comment" and tag is not None and value is not True:
            comment = f"{tag} {value}"
            continue
        opts.append((name, None if value is True else str(value)))
    if comment is not None:
        opts.append(("comment", comment))
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
    """The lines that start one attempt. A job Slurm runs again by itself (requeued after a
    node failure or a preemption, ``SLURM_RESTART_COUNT`` set) runs the next attempt, in its
    own folder (``$a``: the attempt submitted plus the restarts): its runner claims that
    attempt, and the script's own output goes to that attempt's ``slurm.out``."""
    env = job.env if show else masked(job.env)
    lines = [f"a=$(({job.attempt} + ${{SLURM_RESTART_COUNT:-0}}))"]
    again = shlex.quote(job.task_dir) + '/attempt-"$a"'
    restarted = f"mkdir -p {again} && exec >{again}/slurm.out 2>&1 || exit 70"
    if output_link is not None:  # a shell word: Slurm's output file of this array element
        link = f"ln -sf {output_link} {shlex.quote(job.attempt_dir + '/slurm.out')}"
        lines.append(f'if [ "$a" = {job.attempt} ]; then {link}; else {restarted}; fi')
    else:
        lines.append(f'if [ "$a" != {job.attempt} ]; then {restarted}; fi')
    for name in sorted(env):
        value = '"$a"' if name == "RUNYARD_ATTEMPT" else _quote_value(name, env[name])
        lines.append(f"export {_env_name(name)}={value}")
    where = shlex.quote(job.task_dir)
    if job.cwd:
        lines.append(f"cd {shlex.quote(job.cwd)} 2>/dev/null || cd {where} || exit 70")
    else:
        lines.append(f"cd {where} || exit 70")
    words = [shlex.quote(word) for word in job.command]
    if len(words) < 4 or job.command[3] != str(job.attempt):
        raise ValueError(f"not a runner command line (TASK_DIR ATTEMPT third and fourth): {job.command}")
    words[3] = '"$a"'  # PROGRAM RUNNER TASK_DIR ATTEMPT ... (runyard.jobfiles.runner_command)
    wrapper = ["/bin/bash", "-c", RANK_WRAPPER, "runyard-rank"]
    if job.launcher is not None and executor.nodes > 1:
        lines += _rendezvous_lines(job.launcher)
        cpus = executor.ntasks_per_node * (executor.cpus_per_task or 1)  # the node's share of the job
        srun = (
            'srun --nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1'
            f" --cpus-per-task={cpus} --kill-on-bad-exit=1"
        )
        words = [srun, *(shlex.quote(word) for word in wrapper), *words]
    elif job.launcher is None and executor.processes > 1:
        words = [shlex.quote(word) for word in ["srun", "--kill-on-bad-exit=1", *wrapper]] + words
    # (a launcher on one node: the runner starts it here, with a free port on 127.0.0.1)
    lines.append("exec " + " ".join(words))
    return lines


def _rendezvous_lines(launcher: Torchrun) -> list[str]:
    """The lines that tell the runners of a multi-node launcher job where to meet: the first
    node of the allocation (its ``NodeAddr``: node names need not be host names), a port
    (``Torchrun.rdzv_port``, else ``RDZV_PORT_BASE`` + the job id modulo ``RDZV_PORT_SPREAD``),
    the node count and the job id. No address: the job ends at once (never a localhost that
    would let each node train alone)."""
    port = (
        str(launcher.rdzv_port)
        if launcher.rdzv_port
        else f"$(({RDZV_PORT_BASE} + SLURM_JOB_ID % {RDZV_PORT_SPREAD}))"
    )
    return [
        'rdzv_node=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-}" 2>/dev/null | head -n 1)',
        '[ -n "$rdzv_node" ] && rdzv_addr=$(scontrol -o show node "$rdzv_node" 2>/dev/null'
        ' | tr " " "\\n" | sed -n "s/^NodeAddr=//p" | head -n 1)',
        'if [ -z "${rdzv_addr:-}" ]; then echo "runyard: cannot start torchrun: Slurm knows no address'
        " (NodeAddr) of node '$rdzv_node', the first of job $SLURM_JOB_ID (its nodes:"
        " '${SLURM_JOB_NODELIST:-}'); the nodes would have no rendezvous\" >&2; exit 70; fi",
        'export RUNYARD_NNODES="$SLURM_NNODES" RUNYARD_RDZV_ID="$SLURM_JOB_ID"'
        f' RUNYARD_RDZV_ENDPOINT="$rdzv_addr:{port}"',
    ]


def render(
    executor: SlurmExecutor,
    jobs: Sequence[JobFiles],
    *,
    experiment_id: str,
    after: Sequence[str] = (),
    output_dir: str,
    array: bool = False,
    max_parallel: int | None = None,
    show_secrets: bool = True,
) -> str:
    """The sbatch script for one job, or for a job array of ``jobs`` (``array=True``; at most
    ``max_parallel`` of its elements run at once).

    One job writes Slurm's own output to ``<attempt dir>/slurm.out``; an array to
    ``output_dir/<array id>_<index>.out``, linked from each element's attempt folder.
    ``show_secrets=False`` masks the values of secret variables (dry run).
    """
    if not jobs:
        raise ValueError("no jobs to render")
    if array:
        name = _group_name([j.task_id for j in jobs], experiment_id)
        output = _output_path(output_dir) + "/%A_%a.out"  # %A: the array's job id, %a: the index
        opts = options(
            executor, job_name=name, output=output, after=after, array_size=len(jobs),
            max_parallel=max_parallel, tag=tag(experiment_id, jobs),
        )  # fmt: skip
    else:
        [job] = jobs
        opts = options(
            executor, job_name=job.task_id, output=_output_path(f"{job.attempt_dir}/slurm.out"), after=after,
            tag=tag(experiment_id, jobs),
        )  # fmt: skip
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


def tag(experiment_id: str, jobs: Sequence[JobFiles]) -> str:
    """The comment that names one submission of these attempts, the same every time they are
    submitted: ``runyard:<experiment>/<task>/<attempt>`` for one job, for a job array
    ``runyard:<experiment>/array-<digest of its tasks and attempts>``. Before a submission is
    repeated, the job that carries it is looked up (:func:`find_command`)."""
    if len(jobs) == 1:
        return f"runyard:{experiment_id}/{jobs[0].task_id}/{jobs[0].attempt}"
    listed = "\n".join(f"{j.task_id}/{j.attempt}" for j in jobs)
    return f"runyard:{experiment_id}/array-{hashlib.sha256(listed.encode()).hexdigest()[:16]}"


def _find(script: str, tag: str) -> str:
    """:func:`find_command` on shell words (quoted already, or variables)."""
    return (
        f"if [ -s {script}.id ]; then head -n 1 {script}.id; "
        f'else squeue -h -t all -u "$(id -un)" -o "%F|%k" 2>/dev/null'
        f" | awk -F'|' -v t={tag} '{{split($2, w, \" \")}} w[1] == t {{print $1; exit}}'; fi"
    )


def find_command(script: str, tag: str) -> str:
    """Prints the job id of ``script``'s submission tagged ``tag``, if one exists: the id kept
    beside the script (``<script>.id``), else the job of this user that Slurm knows by the
    tag (``squeue``; an array's job id for an array); prints nothing when there is none."""
    return _find(shlex.quote(script), shlex.quote(tag))


# ------------------------------------------------------------------------------ submitting
def submit_command(job_dir: str, scripts: Sequence[tuple[str, str]]) -> str:
    """One command that unpacks the job files (a tar on stdin) under ``job_dir`` and submits
    each ``(script, tag)`` with ``sbatch --parsable``, printing ``<exit code>\\t<stdout>\\t<stderr>``
    per script, in order.

    Repeating it submits nothing twice (a dropped connection is retried; a new driver
    launches an attempt a dead one may have submitted): a script is submitted under a lock
    (``flock`` on ``<script>.lock``, so a repeat waits for an ``sbatch`` still running), its job
    id is kept beside it (``<script>.id``), and a script tried before (``<script>.try``) is
    first looked up by its tag (:func:`find_command`: the job id kept, else Slurm's queue).
    """
    words = " ".join(f"{shlex.quote(script)} {shlex.quote(tag)}" for script, tag in scripts)
    return (
        f"mkdir -p {shlex.quote(job_dir)} && cd {shlex.quote(job_dir)} && tar -x -o -f - && "
        f"e=$(mktemp) && set -- {words} && while [ $# -gt 1 ]; do s=$1; t=$2; shift 2; "
        'exec 9>>"$s.lock"; if command -v flock >/dev/null 2>&1; then flock 9; fi; o=; '
        'if [ -s "$s.id" ] || [ -e "$s.try" ]; then o=$(' + _find('"$s"', '"$t"') + "); fi; "
        'if [ -n "$o" ]; then r=0; : >"$e"; [ -s "$s.id" ] || printf "%s\\n" "$o" >"$s.id"; '
        'else : >"$s.try"; o=$(sbatch --parsable "$s" 2>"$e"); r=$?; '
        'if [ $r -eq 0 ]; then printf "%s\\n" "$o" >"$s.id"; fi; fi; exec 9>&-; '
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
