"""Many processes on one experiment at once: readers, metadata writers and a supervisor
running tasks share the store without errors and without losing a write."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import runyard as run
import taskdefs

SECONDS = 10.0
READERS = 8
WRITERS = 2

WORKER = """\
import sys
import time

import runyard as run

role, experiment_id, n, end_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
exp = run.Experiment.from_id(experiment_id)
count = 0
while time.time() < end_at:
    if role == "read":
        state = exp.status()
        tasks = exp.tasks
        assert len(tasks) == 8, tasks
        assert all(t.status in run.State.__members__ for t in tasks), tasks
        exp.get_metadata()
    else:
        exp.add_metadata({f"writer{n}-{count}": count})
    count += 1
print(count)
"""


@pytest.mark.slow
def test_readers_and_writers_share_one_experiment_without_errors_or_lost_writes(tmp_path: Path) -> None:
    exp = run.Experiment("crowded", metadata={"given": "at creation"})
    for wave in range(4):  # four waves of two parallel tasks: the supervisor writes meanwhile
        exp.add(
            [run.Config(taskdefs.sleep_then_print, 1.0, f"wave {wave}") for _ in range(2)],
            name=f"wave{wave}",
            dependencies=[f"wave{wave - 1}-0", f"wave{wave - 1}-1"] if wave else None,
        )
    exp.run(detach=True)

    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    end_at = time.time() + SECONDS
    roles = [("read", i) for i in range(READERS)] + [("write", i) for i in range(WRITERS)]
    procs = [
        (role, n, subprocess.Popen(
            [sys.executable, str(worker), role, exp.id, str(n), str(end_at)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
        for role, n in roles
    ]  # fmt: skip
    results = {(role, n): proc.communicate(timeout=SECONDS + 120) for role, n, proc in procs}

    for (role, n), (out, err) in results.items():
        assert "Traceback" not in err, f"{role} {n} failed:\n{err}"
        assert out.strip().isdigit() and int(out) > 0, f"{role} {n} did no work: {out!r} {err!r}"
    assert all(proc.returncode == 0 for _, _, proc in procs)

    metadata = exp.get_metadata()
    assert metadata["given"] == "at creation"
    for n in range(WRITERS):
        written = int(results[("write", n)][0])
        missing = [i for i in range(written) if metadata.get(f"writer{n}-{i}") != i]
        assert not missing, f"writer {n}: {len(missing)} of {written} writes lost"
    assert len(metadata) == 1 + sum(int(results[("write", n)][0]) for n in range(WRITERS))

    assert exp.wait(timeout=60) == "SUCCEEDED"
    assert all(t.attempts == 1 for t in exp.tasks)
    deadline = time.monotonic() + 30
    while exp.store.experiment(exp.id).driver_pid is not None:  # the supervisor lets go, then exits
        assert time.monotonic() < deadline, "the supervisor did not end"
        time.sleep(0.05)
