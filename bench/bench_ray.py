"""Benchmark of runyard-ray: submitting 50 one-line Python tasks to a Ray head and one status
poll of them all, through runyard and through Ray's own tools.

    uv run --frozen python bench/bench_ray.py [--tasks 50] [--address URL] [--ray-python PY] [--json]

Needs a Ray head (``--address``, else ``$RUNYARD_TEST_RAY_ADDRESS``: the test bed's, ``./dev.sh
services``) and, for Ray's own figures, a Python that has ``ray`` (``--ray-python``, else
``$RUNYARD_TEST_RAY_PYTHON``). Each task prints ``hello`` (``python3 -c "print('hello')"`` for
Ray's tools, ``run.Config(print, "hello")`` for runyard). Figures, in seconds:

- ``ray job submit`` alone: N times the CLI, ``ray job submit --no-wait -- python3 -c ...``, one
  after the other (as a user would script it); then one ``ray job list``.
- Ray's SDK: one process that imports ``ray.job_submission`` (timed apart) and calls
  ``JobSubmissionClient.submit_job`` N times; then one ``list_jobs()``.
- runyard, submit phase: ``RayBackend.launch_many`` for the N attempts (what the driver calls:
  one listing of the head's jobs, the working dir uploaded once, N submissions); then one
  ``RayBackend.poll`` of the N jobs (one call for them all). And, whole: a fresh process that
  makes the experiment and ``run(detach=True)``, until every task has its job id.

Every job is waited for and deleted from the head afterwards. One run of each (a Ray head keeps
what it did before: repeated rounds would measure a fuller head); the figures are goals for this
benchmark, never timed assertions in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

LINE = "print('hello')"

RUNYARD = r"""
import json, sys, time
import runyard as run
from runyard.plugins import plugin_manager
address, n, whole = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "whole"
start = time.perf_counter()
exp = run.Experiment("bench-ray")
executor = run.RayExecutor(address=address, code=None, max_jobs=n)
ids = [exp.add(run.Config(print, "hello"), executor=executor, name=f"t{i}") for i in range(n)]
if whole:
    exp.run(detach=True)
    while any(t.job_id is None and t.status.value not in ("SUCCEEDED", "FAILED") for t in exp.tasks):
        time.sleep(0.01)
    print(json.dumps({"whole": time.perf_counter() - start, "experiment": exp.experiment_id}))
    exp.wait(timeout=600)
    sys.exit(0)
backend = plugin_manager().backend("ray")
specs = []
for i in ids:
    spec = exp._engine.task(i).spec(1, [], with_secrets=True)
    spec.env["RUNYARD_LAUNCH_ID"] = f"bench{i}"
    specs.append(spec)
t0 = time.perf_counter()
launched = backend.launch_many(specs)
submit = time.perf_counter() - t0
bad = [r for r in launched if isinstance(r, Exception)]
if bad:
    sys.exit(f"bench_ray: {len(bad)} launches failed: {bad[0]}")
refs = [s.ref(r.job_id, r.handle) for s, r in zip(specs, launched)]
t0 = time.perf_counter()
backend.poll(refs)
poll = time.perf_counter() - t0
deadline = time.monotonic() + 600
while refs and time.monotonic() < deadline:  # until each ended (poll brings it home, deletes it)
    statuses = backend.poll(refs)
    refs = [r for r in refs if statuses[r.job_id].state.value not in ("SUCCEEDED", "FAILED")]
    time.sleep(0.5)
print(json.dumps({"submit": submit, "poll": poll}))
"""

SDK = r"""
import json, sys, time
t0 = time.perf_counter()
from ray.job_submission import JobSubmissionClient
imported = time.perf_counter() - t0
address, n, line = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = JobSubmissionClient(address)
t0 = time.perf_counter()
ids = [client.submit_job(entrypoint=f"python3 -c {line!r}") for _ in range(n)]
submit = time.perf_counter() - t0
t0 = time.perf_counter()
client.list_jobs()
poll = time.perf_counter() - t0
print(json.dumps({"import": imported, "submit": submit, "poll": poll, "ids": ids}))
"""


def head_jobs(address: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{address}/api/jobs/", timeout=30) as r:
        return list(json.load(r))


def clean(address: str, ids: set[str]) -> None:
    """Wait for the jobs ``ids`` to end, then delete them from the head."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        live = [
            j
            for j in head_jobs(address)
            if j["submission_id"] in ids and j["status"] in ("PENDING", "RUNNING")
        ]
        if not live:
            break
        time.sleep(1)
    for submission_id in ids:
        req = urllib.request.Request(f"{address}/api/jobs/{submission_id}", method="DELETE")
        try:
            urllib.request.urlopen(req, timeout=30).close()
        except OSError:
            pass


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"bench_ray: {argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--address", default=os.environ.get("RUNYARD_TEST_RAY_ADDRESS"))
    parser.add_argument("--ray-python", default=os.environ.get("RUNYARD_TEST_RAY_PYTHON"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.address:
        raise SystemExit("bench_ray: no Ray head: give --address or start the test bed (./dev.sh services)")
    n, address = args.tasks, args.address.rstrip("/")
    home = tempfile.mkdtemp(prefix="bench-ray-")
    env = {**os.environ, "RUNYARD_HOME": home, "RAY_ADDRESS": address}
    figures: dict[str, float] = {}
    try:
        before = {j["submission_id"] for j in head_jobs(address)}
        print(f"runyard: {n} submissions and one poll ...", file=sys.stderr)
        _, out = timed([sys.executable, "-c", RUNYARD, address, str(n), "parts"], env)
        parts = json.loads(out.splitlines()[-1])
        figures["runyard: submit phase (launch_many)"] = parts["submit"]
        figures["runyard: one status poll of all"] = parts["poll"]
        print("runyard: the whole experiment, run(detach=True) ...", file=sys.stderr)
        _, out = timed([sys.executable, "-c", RUNYARD, address, str(n), "whole"], env)
        figures["runyard: new process to every job submitted"] = json.loads(out.splitlines()[-1])["whole"]
        if args.ray_python:
            print("Ray's SDK ...", file=sys.stderr)
            _, out = timed([args.ray_python, "-c", SDK, address, str(n), LINE], env)
            sdk = json.loads(out.splitlines()[-1])
            clean(address, set(sdk["ids"]))
            figures["Ray SDK: import ray.job_submission"] = sdk["import"]
            figures["Ray SDK: submit phase (submit_job x N)"] = sdk["submit"]
            figures["Ray SDK: one list_jobs()"] = sdk["poll"]
            ray = shutil.which("ray", path=os.path.dirname(args.ray_python)) or "ray"
            print(f"`ray job submit` x {n} ...", file=sys.stderr)
            start = time.perf_counter()
            for _ in range(n):
                timed(
                    [ray, "job", "submit", "--address", address, "--no-wait", "--", "python3", "-c", LINE],
                    env,
                )
            figures["ray job submit x N (CLI)"] = time.perf_counter() - start
            figures["ray job list (CLI)"] = timed([ray, "job", "list", "--address", address], env)[0]
        left = {j["submission_id"] for j in head_jobs(address)} - before
        clean(address, left)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"{n} tasks on the Ray head at {address}")
    with open("/proc/loadavg") as f:
        print(f"load average: {' '.join(f.read().split()[:3])}")
    print(f"{'figure':<48} {'seconds':>8} {'per task':>9}")
    for name, seconds in figures.items():
        per = f"{seconds / n * 1000:.1f} ms" if "submit" in name and "process" not in name else ""
        print(f"{name:<48} {seconds:>8.3f} {per:>9}")
    if "ray job submit x N (CLI)" in figures:
        cli, ours = figures["ray job submit x N (CLI)"], figures["runyard: submit phase (launch_many)"]
        print(
            f"runyard's submit phase is {cli / ours:.0f}x faster than `ray job submit` alone,"
            f" {figures['Ray SDK: submit phase (submit_job x N)'] / ours:.1f}x the SDK's"
        )
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
