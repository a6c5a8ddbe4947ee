"""Ctrl+C on an attached Slurm run: the tasks are cancelled, runyard says so in one line, and
the program stops as on any Ctrl+C (killed by SIGINT) without a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import runyard as run
from _slurm_helpers import TESTS, Cluster, until
from runyard.store import open_store

SCRIPT = f"""
import sys
sys.path.insert(0, {TESTS!r})
import runyard as run, taskdefs
exp = run.Experiment("interrupted")
exp.add(run.Config(taskdefs.sleep_then_print, 120), executor=run.SlurmExecutor(code={TESTS!r}), name="t")
exp.run()
"""


def test_ctrl_c_of_an_attached_run_cancels_and_prints_no_traceback(
    cluster: Cluster, runyard_home: str
) -> None:
    attached = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ.copy(),
    )  # fmt: skip
    try:
        store = open_store(runyard_home)
        until(
            lambda: [t.job_id is not None for r in store.experiments() for t in store.tasks(r.id)] == [True],
            "the job to be submitted",
        )
        attached.send_signal(signal.SIGINT)
        out, err = attached.communicate(timeout=60)
    finally:
        if attached.poll() is None:
            attached.kill()
            attached.wait()

    assert attached.returncode == -signal.SIGINT  # stopped by the Ctrl+C, as Python does
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted: cancelled the tasks of" in out
    [record] = open_store(runyard_home).experiments()
    task = run.Experiment.from_id(record.id).tasks[0]
    assert (task.status, task.reason) == ("CANCELLED", "cancelled (interrupted)")
    until(lambda: cluster.state(task.job_id) == "CANCELLED", "Slurm to cancel the job")
