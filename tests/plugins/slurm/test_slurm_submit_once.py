"""One attempt, one Slurm job: a submission repeated after a dropped connection, or by a new
driver after the one that submitted died, finds the job the first one made (its tag, the
job's comment ``runyard:<experiment>/<task>/<attempt>``) instead of submitting it again.

``sbatch`` is made to block on cue without touching the shared slurmctld: the job is held
(``--hold``) and sbatch waits for it to end (``--wait``), so it answers only once the test
releases the job. The network drops through the relay (``conftest.relay``)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import runyard as run
import taskdefs
from _slurm_helpers import TESTS, Cluster, Relay, known_hosts_for, until
from runyard_slurm.tunnel import session_for

BLOCKING = {"hold": True, "wait": True}  # sbatch answers only once the job was released and ended


def jobs_named(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    """(job id, comment) of every job Slurm knows by this name, ended ones included (array
    elements as one job)."""
    out = cluster.sh(f"squeue -h -t all -n {shlex.quote(name)} -o '%F|%k' | sort -u")
    return [(line.split("|")[0], line.split("|", 1)[1]) for line in out.split("\n") if line.strip()]


def release(cluster: Cluster, name: str) -> None:
    cluster.sh(
        f"for j in $(squeue -h -t PD -n {shlex.quote(name)} -o %F | sort -u); do scontrol release $j; done"
    )


def test_a_submission_retried_after_the_connection_dropped_while_sbatch_blocked_is_one_job(
    cluster: Cluster, relay: Relay, tmp_path: Path
) -> None:
    name = f"once-{uuid.uuid4().hex[:8]}"
    kh = known_hosts_for(cluster, tmp_path / "kh", relay.port)
    tunnel = cluster.tunnel(port=relay.port, known_hosts=kh, retry_for=60)
    exp = run.Experiment("submit-once")
    exp.add(
        run.Config(taskdefs.hello, "once"),
        executor=cluster.executor(tunnel=tunnel, job_name=name, additional_parameters=BLOCKING),
        name="t",
    )
    launching = threading.Thread(target=exp.run, kwargs={"detach": True}, daemon=True)
    launching.start()
    [(job_id, comment)] = until(lambda: jobs_named(cluster, name), "the job to be submitted")
    assert comment == f"runyard:{exp.experiment_id}/t/1"
    session = session_for(tunnel)
    connects = session.connects

    relay.stop()  # sbatch still waits on the cluster; its answer can never come back
    relay.start()
    # the submission is sent again over a new connection and reaches the cluster
    until(lambda: session.connects > connects, "the connection to be opened again")
    submit = shlex.quote(f"tar -x -o -f - && e=.*{exp.experiment_id}")
    until(lambda: int(cluster.sh(f"pgrep -fc {submit} || true") or 0) >= 2, "the retried submission to run")
    release(cluster, name)  # (every job of that name: one, or two if it was submitted again)

    launching.join(timeout=120)
    assert not launching.is_alive()
    assert exp.wait(timeout=120) == "SUCCEEDED"
    assert jobs_named(cluster, name) == [(job_id, comment)]
    record = exp.store.task(exp.experiment_id, "t")
    assert record is not None and (record.job_id, record.attempts) == (job_id, 1)
    assert exp.get_logs("t").stdout == "hello once\n"


LAUNCHER = """
import json, sys
sys.path.insert(0, {tests!r})
import runyard as run, taskdefs
args = json.loads(sys.argv[1])
executor = run.SlurmExecutor(
    tunnel=run.SSHTunnel(**args["tunnel"]), code={tests!r}, job_name=args["name"], array=True,
    additional_parameters={blocking!r},
)
exp = run.Experiment("submit-once-takeover")
for i in range(2):
    exp.add(run.Config(taskdefs.hello, f"n{{i}}"), executor=executor, name=f"t-{{i}}")
print(exp.experiment_id, flush=True)
exp.run(detach=True)
"""


def test_a_driver_killed_while_its_sbatch_blocked_then_taken_over_leaves_one_job_array(
    cluster: Cluster, relay: Relay, tmp_path: Path
) -> None:
    name = f"once-{uuid.uuid4().hex[:8]}"
    f = cluster.facts
    tunnel = {
        "host": f.host, "port": relay.port, "user": f.user, "identity": f.key, "job_dir": cluster.job_dir,
        "known_hosts": known_hosts_for(cluster, tmp_path / "kh", relay.port),
    }  # fmt: skip
    code = LAUNCHER.format(tests=TESTS, blocking=BLOCKING)
    launcher = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps({"tunnel": tunnel, "name": name})],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    try:
        assert launcher.stdout is not None
        experiment_id = launcher.stdout.readline().strip()
        [(array_id, comment)] = until(lambda: jobs_named(cluster, name), "the job array to be submitted")
        assert comment.startswith(f"runyard:{experiment_id}/array-")
        relay.blackhole()  # the launch's answer is swallowed: the driver waits for it ...
        launcher.send_signal(signal.SIGKILL)  # ... and dies there, its tasks SUBMITTED without a job
        launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    relay.release()
    exp = run.Experiment.from_id(experiment_id)
    assert [(t.status, t.job_id) for t in exp.store.tasks(experiment_id)] == [("SUBMITTED", None)] * 2

    exp.takeover()  # a new supervisor: the attempts are found by their tag, not submitted again

    until(lambda: all(t.job_id for t in exp.store.tasks(experiment_id)), "the jobs to be adopted", timeout=90)
    release(cluster, name)
    assert exp.wait(timeout=120) == "SUCCEEDED"
    assert jobs_named(cluster, name) == [(array_id, comment)]
    records = exp.store.tasks(experiment_id)
    assert sorted((r.id, r.job_id, r.attempts) for r in records) == [
        ("t-0", f"{array_id}_0", 1), ("t-1", f"{array_id}_1", 1),
    ]  # fmt: skip
    assert [exp.get_logs(f"t-{i}").stdout for i in range(2)] == ["hello n0\n", "hello n1\n"]
