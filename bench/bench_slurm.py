"""runyard-slurm against NeMo Run's SlurmExecutor, on the test bed's Slurm cluster over SSH.

    ./dev.sh services                                   # sshd + Slurm (docs/testing.md)
    uv run --frozen python bench/bench_slurm.py         # runyard, then NeMo Run if installed
    uv run --frozen python bench/bench_slurm.py --nemo-python /tmp/nemo-venv/bin/python --json

Workload: 100 one-second tasks (``run.Script(inline="sleep 1")``), one ``exp.add`` each,
on one SlurmExecutor over one SSH connection (key login, host key checked), no code
shipped (``code=None``; NeMo Run: the no-op ``run.Packager()``), launched with
``run(detach=True)``.

Figures (targets from the issue; goals for this benchmark, never timed assertions in tests):

- submit phase: ``exp.run(detach=True)``, until every task has its Slurm job id (≤ 5 s);
- status poll of the 100 live jobs: one ``backend.poll`` (runyard: one ``squeue`` round
  trip, ≤ 0.3 s); NeMo Run: ``exp.status()``;
- runyard only: commands and connections used, and the time until all 100 SUCCEEDED.

runyard runs twice: one Slurm job per task (``array=False``) and the default, where the 100
tasks launched together on identical executors become one job array. NeMo Run 0.11.1 runs
in its own venv (``pip install nemo-run==0.11.1 "leptonai<0.28"``); it shells out to
``ssh``/``rsync``, which get the test bed's known_hosts through a small ``ssh`` wrapper put
first on its PATH (nothing of the machine's SSH set-up is changed). Its jobs are cancelled
once measured; every job folder is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

N = 100
POLL_REPEAT = 5
SUBMIT_TARGET = 5.0
POLL_TARGET = 0.3


def _wait_for_job_ids(exp: Any) -> None:
    """Until every task of a detached experiment has its Slurm job id (at most 120 s)."""
    deadline = time.monotonic() + 120
    while not all(r.job_id for r in exp.store.tasks(exp.experiment_id)):
        assert time.monotonic() < deadline, "tasks still without a Slurm job id after 120 s"
        time.sleep(0.05)


def facts() -> dict[str, str]:
    """The test bed's facts, from the environment or $RUNYARD_INFRA_DIR/env.sh."""
    path = os.path.join(os.environ.get("RUNYARD_INFRA_DIR", "/tmp/runyard-infra"), "env.sh")
    out: dict[str, str] = {}
    if os.path.exists(path):
        for line in open(path).read().splitlines():
            if line.startswith("export ") and "=" in line:
                name, _, value = line[len("export ") :].partition("=")
                words = shlex.split(value)
                out[name] = words[0] if words else ""
    out.update({k: v for k, v in os.environ.items() if k.startswith(("RUNYARD_TEST_", "SLURM_CONF"))})
    needed = [
        "RUNYARD_TEST_SSH_HOST",
        "RUNYARD_TEST_SSH_PORT",
        "RUNYARD_TEST_SSH_KEY",
        "RUNYARD_TEST_SLURM_JOB_DIR",
    ]
    missing = [n for n in needed if n not in out]
    if missing:
        sys.exit(f"no {', '.join(missing)}: start the test services with ./dev.sh services")
    return out


def log(message: str) -> None:
    print(f"[bench_slurm] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- runyard
def bench_runyard(f: dict[str, str], job_dir: str, array: bool, wait: bool) -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix="runyard-bench-slurm-")
    os.environ.update({
        "RUNYARD_HOME": home, "RUNYARD_PLAIN": "1",
        "RUNYARD_SLURM_HOST": f["RUNYARD_TEST_SSH_HOST"], "RUNYARD_SLURM_PORT": f["RUNYARD_TEST_SSH_PORT"],
        "RUNYARD_SLURM_USER": f.get("RUNYARD_TEST_SSH_USER", "root"), "RUNYARD_SLURM_KEY": f["RUNYARD_TEST_SSH_KEY"],
        "RUNYARD_SLURM_KNOWN_HOSTS": f["RUNYARD_TEST_SSH_KNOWN_HOSTS"], "RUNYARD_SLURM_JOB_DIR": job_dir,
        "RUNYARD_SLURM_CONFIG": os.path.join(home, "none.toml"),
    })  # fmt: skip
    import runyard as run
    from runyard.plugins import plugin_manager, reset_plugin_manager
    from runyard.scheduler import job_ref
    from runyard_slurm.backend import SlurmBackend
    from runyard_slurm.tunnel import close_sessions, session_for

    reset_plugin_manager()
    close_sessions()
    executor = run.SlurmExecutor(
        partition=f.get("RUNYARD_TEST_SLURM_DEFAULT_PARTITION", "cpu"), code=None, array=array
    )
    session = session_for(executor.tunnel)
    session.run("true")  # connect first: the figures are about submitting, not the SSH handshake
    connects, commands = session.connects, session.commands

    exp = run.Experiment("bench-slurm")
    for _ in range(N):
        exp.add(run.Script(inline="sleep 1"), executor=executor)
    t0 = time.perf_counter()
    exp.run(detach=True)
    returned = time.perf_counter() - t0
    # the launching process submits the first wave (64 tasks: core's launch batch); when
    # tasks are left, a supervisor submits the rest
    deadline = time.monotonic() + 120
    records = exp.store.tasks(exp.experiment_id)
    while not all(r.job_id for r in records):
        assert time.monotonic() < deadline, "tasks still without a Slurm job id after 120 s"
        time.sleep(0.01)
        records = exp.store.tasks(exp.experiment_id)
    submit = time.perf_counter() - t0
    submit_commands = session.commands - commands  # this process's; a supervisor has its own

    refs = [job_ref(exp.store, r, executor) for r in records]
    polls, poll_commands = [], []
    for _ in range(POLL_REPEAT):
        backend = SlurmBackend()  # a fresh one: due at once (no backoff)
        before = session.commands
        t = time.perf_counter()
        statuses = backend.poll(refs)
        polls.append(time.perf_counter() - t)
        poll_commands.append(session.commands - before)
        assert len(statuses) == N, f"the poll answered for {len(statuses)} of {N} jobs"
        time.sleep(0.2)
    result: dict[str, Any] = {
        "mode": "job array" if array else "one job per task",
        "submit_s": submit,
        "run_returned_s": returned,
        "submit_commands": submit_commands,
        "poll_s": statistics.median(polls),
        "poll_s_all": polls,
        "poll_commands": max(poll_commands),
        "connections": session.connects - connects + 1,
    }
    if wait:
        t = time.perf_counter()
        state = exp.wait(timeout=900)
        result["all_done_s"] = submit + time.perf_counter() - t
        result["state"] = str(state)
        assert state == "SUCCEEDED", f"the experiment ended {state}"
    else:
        exp.cancel_all()
    result["connections"] = session.connects - connects + 1
    plugin_manager().close_backends()
    from runyard.store import close_store

    close_store(home)
    shutil.rmtree(home, ignore_errors=True)
    return result


def bench_cancel(f: dict[str, str], job_dir: str) -> dict[str, Any]:
    """``exp.cancel_all()`` of 100 pending Slurm jobs (one job per task, held back an hour by
    ``--begin``): seconds, and commands on the connection (one ``scancel`` per cluster)."""
    home = tempfile.mkdtemp(prefix="runyard-bench-slurm-")
    os.environ.update({"RUNYARD_HOME": home, "RUNYARD_SLURM_JOB_DIR": job_dir})
    import runyard as run
    from runyard.plugins import plugin_manager, reset_plugin_manager
    from runyard.store import close_store
    from runyard_slurm.tunnel import close_sessions, session_for

    reset_plugin_manager()
    close_sessions()
    executor = run.SlurmExecutor(
        partition=f.get("RUNYARD_TEST_SLURM_DEFAULT_PARTITION", "cpu"), code=None, array=False,
        additional_parameters={"begin": "now+3600"},
    )  # fmt: skip
    exp = run.Experiment("bench-slurm-cancel")
    for _ in range(N):
        exp.add(run.Script(inline="sleep 1"), executor=executor)
    exp.run(detach=True)
    _wait_for_job_ids(exp)
    session = session_for(executor.tunnel)
    commands = session.commands
    t = time.perf_counter()
    cancelled = exp.cancel_all()
    seconds = time.perf_counter() - t
    result = {
        "cancel_s": seconds,
        "cancel_commands": session.commands - commands,
        "cancelled": len(cancelled),
    }
    tag = shlex.quote(f"runyard:{exp.experiment_id}/")  # their comment (sbatch.tag)
    left = session.run(f"squeue -h -t PD -o %k | grep -c -F {tag} || true").stdout.strip()
    assert len(cancelled) == N and left == "0", f"cancelled {len(cancelled)} of {N}; {left} still pending"
    plugin_manager().close_backends()
    close_store(home)
    shutil.rmtree(home, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- NeMo Run
NEMO = r"""
import json, os, sys, time
import nemo_run as run
n, job_dir, key, port, partition = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
tunnel = run.SSHTunnel(host="127.0.0.1", user="root", port=port, identity=key, job_dir=job_dir)
executor = run.SlurmExecutor(account="root", partition=partition, tunnel=tunnel, time="00:10:00",
                             packager=run.Packager())
with run.Experiment("bench-slurm-nemo") as exp:
    for i in range(n):
        exp.add(run.Script(inline="sleep 1"), executor=executor, name=f"t{i}")
    t0 = time.perf_counter()
    exp.run(detach=True)
    submit = time.perf_counter() - t0
polls = []
for _ in range(int(sys.argv[6])):
    t = time.perf_counter()
    status = exp.status(return_dict=True)
    polls.append(time.perf_counter() - t)
jobs = [v["job_id"] for v in status.values()]
print("BENCH " + json.dumps({"submit_s": submit, "poll_s_all": polls, "jobs": jobs}))
"""


def bench_nemo(f: dict[str, str], python: str, job_dir: str, workdir: str) -> dict[str, Any]:
    shim = os.path.join(workdir, "bin")
    os.makedirs(shim, exist_ok=True)
    with open(os.path.join(shim, "ssh"), "w") as out:  # rsync/ssh: the test bed's known_hosts
        out.write(
            "#!/bin/sh\nexec /usr/bin/ssh -o UserKnownHostsFile="
            f'{shlex.quote(f["RUNYARD_TEST_SSH_KNOWN_HOSTS"])} -o StrictHostKeyChecking=yes "$@"\n'
        )
    os.chmod(os.path.join(shim, "ssh"), 0o755)
    home = os.path.join(workdir, "home")
    os.makedirs(os.path.join(home, ".ssh"), exist_ok=True)
    with open(os.path.join(home, ".ssh", "known_hosts"), "w") as out:  # for paramiko (fabric)
        out.write(open(f["RUNYARD_TEST_SSH_KNOWN_HOSTS"]).read())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update({"HOME": home, "PATH": shim + os.pathsep + env.get("PATH", "")})
    argv = [python, "-c", NEMO, str(N), job_dir, f["RUNYARD_TEST_SSH_KEY"], f["RUNYARD_TEST_SSH_PORT"],
            f.get("RUNYARD_TEST_SLURM_DEFAULT_PARTITION", "cpu"), str(POLL_REPEAT)]  # fmt: skip
    done = subprocess.run(
        argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=1800, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"NeMo Run failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    data = json.loads(lines[-1][len("BENCH ") :])
    return {"submit_s": data["submit_s"], "poll_s": statistics.median(data["poll_s_all"]),
            "poll_s_all": data["poll_s_all"], "jobs": data["jobs"]}  # fmt: skip


# --------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nemo-python", default="/tmp/nemo-venv/bin/python", help="python of a venv with nemo-run"
    )
    parser.add_argument("--no-nemo", action="store_true", help="measure runyard only")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON too")
    args = parser.parse_args()
    f = facts()
    os.environ["SLURM_CONF"] = f.get("SLURM_CONF", os.environ.get("SLURM_CONF", ""))
    base = f"{f['RUNYARD_TEST_SLURM_JOB_DIR']}/bench-{os.getpid()}"
    results: dict[str, Any] = {}
    try:
        log("runyard, one Slurm job per task (waits for all 100 to succeed)")
        results["runyard_jobs"] = bench_runyard(f, f"{base}/runyard-jobs", array=False, wait=True)
        log("runyard, default: the 100 tasks as one job array")
        results["runyard_array"] = bench_runyard(f, f"{base}/runyard-array", array=True, wait=False)
        log("runyard, cancel of 100 pending jobs")
        results["runyard_cancel"] = bench_cancel(f, f"{base}/runyard-cancel")
        results["runyard_unreachable"] = bench_unreachable(f, f"{base}/runyard-unreachable")
        if not args.no_nemo:
            if not os.path.exists(args.nemo_python):
                log(f"no {args.nemo_python}: create it with `python3 -m venv /tmp/nemo-venv && "
                    "/tmp/nemo-venv/bin/pip install nemo-run==0.11.1 'leptonai<0.28'`, or pass --no-nemo")  # fmt: skip
            else:
                log("NeMo Run 0.11.1")
                with tempfile.TemporaryDirectory(prefix="nemo-bench-") as workdir:
                    results["nemo"] = bench_nemo(f, args.nemo_python, f"{base}/nemo", workdir)
    finally:
        from runyard_slurm.executor import SSHTunnel
        from runyard_slurm.tunnel import session_for

        session = session_for(SSHTunnel(
            f["RUNYARD_TEST_SSH_HOST"], f.get("RUNYARD_TEST_SSH_USER", "root"), port=int(f["RUNYARD_TEST_SSH_PORT"]),
            identity=f["RUNYARD_TEST_SSH_KEY"], known_hosts=f["RUNYARD_TEST_SSH_KNOWN_HOSTS"], job_dir=base,
        ))  # fmt: skip
        nemo_jobs = ",".join((results.get("nemo") or {}).get("jobs") or [])
        if nemo_jobs:
            session.run(f"scancel {shlex.quote(nemo_jobs)}")
        session.run(f"rm -rf {shlex.quote(base)}")

    jobs, array, nemo = results["runyard_jobs"], results["runyard_array"], results.get("nemo")
    rows = [
        ("submit phase, 100 tasks (s)", SUBMIT_TARGET, "submit_s"),
        ("status poll of 100 jobs (s)", POLL_TARGET, "poll_s"),
    ]
    print(
        f"\n{'figure':32} {'target':>7} {'runyard jobs':>13} {'runyard array':>14} {'NeMo Run':>9} {'NeMo/runyard':>13}"
    )
    for label, target, key in rows:
        theirs = f"{nemo[key]:9.3f}" if nemo else f"{'-':>9}"
        ratio = f"{nemo[key] / jobs[key]:12.1f}x" if nemo else f"{'-':>13}"
        print(f"{label:32} {target:7.1f} {jobs[key]:13.3f} {array[key]:14.3f} {theirs} {ratio}")
    print(f"\nrunyard: submit = {jobs['submit_commands']} command(s) one job per task, "
          f"{array['submit_commands']} as an array; a poll = {jobs['poll_commands']} command (squeue); "
          f"{jobs['connections']} SSH connection; all 100 SUCCEEDED {jobs['all_done_s']:.1f} s after run() "
          "(2 CPUs: 50 rounds of two 1-second jobs)")  # fmt: skip
    cancel = results["runyard_cancel"]
    print(f"runyard: cancel of 100 jobs (one job per task, pending) = {cancel['cancel_commands']} command(s), "
          f"{cancel['cancel_s']:.2f} s")  # fmt: skip
    u = results["runyard_unreachable"]
    print(f"runyard: status with the cluster unreachable (refused / black hole), seconds: a backend poll, "
          f"first of the outage {u['stop_poll_first_s']:.2f} / {u['blackhole_poll_first_s']:.2f}, next "
          f"{u['stop_poll_next_s']:.3f} / {u['blackhole_poll_next_s']:.3f}; then exp.status() {u['stop_status_s']:.3f}"
          f" / {u['blackhole_status_s']:.3f}; `runyard status` {u['stop_cli_s']:.2f} / {u['blackhole_cli_s']:.2f}")  # fmt: skip
    if nemo:
        print("NeMo Run/runyard ratio: against runyard's one-job-per-task figures (the like-for-like case)")
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    missed = jobs["submit_s"] > SUBMIT_TARGET or jobs["poll_s"] > POLL_TARGET
    if missed:
        log("a target was missed (see the table)")
    return 0


def bench_unreachable(f: dict[str, str], job_dir: str) -> dict[str, Any]:
    """Status latency with the cluster unreachable: 10 live Slurm jobs reached through a relay
    that then refuses connections (``stop``) or swallows every byte (``blackhole``); seconds of
    a backend poll, the first of the outage (it retries for ``retry_for``) and the next (the
    session knows the outage: it fails at once), then of ``exp.status()`` in this process and
    of ``runyard status`` as a process of its own (which knows nothing of the outage)."""
    home = tempfile.mkdtemp(prefix="runyard-bench-slurm-")
    os.environ.update({"RUNYARD_HOME": home, "RUNYARD_SLURM_JOB_DIR": job_dir})
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import runyard as run
    from helpers import Relay  # tests/helpers.py: the test bed's network, failed on cue
    from runyard.errors import UnreachableError
    from runyard.executor import JobRef
    from runyard.plugins import plugin_manager, reset_plugin_manager
    from runyard.store import close_store
    from runyard_slurm.backend import SlurmBackend
    from runyard_slurm.tunnel import close_sessions, session_for

    reset_plugin_manager()
    close_sessions()
    relay = Relay((f["RUNYARD_TEST_SSH_HOST"], int(f["RUNYARD_TEST_SSH_PORT"])))
    relay.start()
    known = os.path.join(home, "known_hosts")
    key = open(f["RUNYARD_TEST_SSH_KNOWN_HOSTS"]).read().split(None, 1)[1]
    with open(known, "w") as out:
        out.write(f"[127.0.0.1]:{relay.port} {key}")
    tunnel = run.SSHTunnel(
        f["RUNYARD_TEST_SSH_HOST"], f.get("RUNYARD_TEST_SSH_USER", "root"), port=relay.port,
        identity=f["RUNYARD_TEST_SSH_KEY"], known_hosts=known, job_dir=job_dir,
    )  # fmt: skip
    executor = run.SlurmExecutor(
        partition=f.get("RUNYARD_TEST_SLURM_DEFAULT_PARTITION", "cpu"), code=None, array=False, tunnel=tunnel
    )
    exp = run.Experiment("bench-slurm-unreachable")
    for _ in range(10):
        exp.add(run.Script(inline="sleep 600"), executor=executor)
    exp.run(detach=True)
    _wait_for_job_ids(exp)
    result: dict[str, Any] = {}
    refs = [JobRef(r.experiment_id, r.id, r.attempts, exp.directory, executor, r.job_id or "", r.handle)
            for r in exp.store.tasks(exp.experiment_id)]  # fmt: skip
    for fault in ("stop", "blackhole"):
        getattr(relay, fault)()
        for call in ("first", "next"):  # the backend's poll: the first retries for retry_for (30 s)
            t = time.perf_counter()
            try:
                SlurmBackend().poll(refs)
            except UnreachableError:
                pass
            result[f"{fault}_poll_{call}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        exp.status()
        result[f"{fault}_status_s"] = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "runyard", "status", exp.experiment_id], capture_output=True,
                       timeout=600, check=False)  # fmt: skip
        result[f"{fault}_cli_s"] = time.perf_counter() - t
        relay.stop()  # back: connections through it open again
        relay.start()
        session = session_for(tunnel)
        deadline = time.monotonic() + 60
        while True:  # until the session has noticed
            try:
                session.run("true")
                break
            except Exception:
                assert time.monotonic() < deadline, "still unreachable a minute after the relay is back"
                time.sleep(0.5)
    exp.cancel_all()
    relay.stop()
    plugin_manager().close_backends()
    close_store(home)
    shutil.rmtree(home, ignore_errors=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
