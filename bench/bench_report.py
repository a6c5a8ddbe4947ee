"""Time the HTML report of a 1000-task experiment (target: <= 2 s).

    uv run --frozen python bench/bench_report.py                 # 1000 tasks, median of 5
    uv run --frozen python bench/bench_report.py --tasks 200 --repeat 3 --json

Set-up (untimed): in a fresh RUNYARD_HOME, one experiment of ``--tasks`` shell tasks on the
local executor, run attached to the end: 10 ``prep`` tasks, the training tasks (each depends on
one prep task; each prints ``step i/N loss: x`` lines, which the default patterns parse, and
writes ``accuracy`` to its attempt's metrics.jsonl as ``runyard.job.log_metrics`` does; every
tenth fails its first attempt and is retried), and 10 ``eval`` tasks that fan in; metadata,
an artifact and two config versions. Then, timed: ``exp.report(path)`` on the experiment
rebuilt with ``Experiment.from_id`` (the store read, every task's metrics read and parsed from
its files, the page built and written), median of ``--repeat`` calls, with ``get_all_metrics``
alone beside it; and ``runyard report ID -o FILE`` as a process of its own (interpreter start
and imports included). Progress goes to stderr, the figures to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TARGET = 2.0


def train_script(steps: int, fail_first: bool) -> str:
    metrics = '"$RUNYARD_TASK_DIR/attempt-$RUNYARD_ATTEMPT/metrics.jsonl"'
    fail = 'if [ "$RUNYARD_ATTEMPT" = 1 ]; then echo "diverged" >&2; exit 3; fi; ' if fail_first else ""
    return (
        f"i=1; while [ $i -le {steps} ]; do "
        f'echo "step $i/{steps} loss: 1.$(( 1000 - i * 9 ))"; '
        f'printf \'{{"time": %s, "step": %d, "values": {{"accuracy": 0.%03d}}}}\\n\' "$(date +%s.%N)" $i $(( i * 9 )) '
        f">> {metrics}; "
        f"i=$((i+1)); done; {fail}true"
    )


def build(tasks: int, steps: int, tmp: str) -> str:
    import runyard as run

    exp = run.Experiment(
        f"bench-report-{tasks}x{steps}", description="the report benchmark", tags=["bench"], max_retries=1
    )
    preps = [exp.add(run.Script(inline="echo prepared"), name=f"prep-{i}") for i in range(10)]
    trains = [
        exp.add(
            run.Script(inline=train_script(steps, i % 10 == 0)),
            name=f"train-{i}",
            dependencies=[preps[i % 10]],
        )
        for i in range(max(tasks - 20, 0))
    ]
    for i in range(10):
        exp.add(run.Script(inline="echo scored"), name=f"eval-{i}", dependencies=trains[i::10] or preps)
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # the progress lines
        state = exp.run()
    print(f"set-up: {tasks} tasks ran in {time.monotonic() - started:.1f} s: {state}", file=sys.stderr)
    model = os.path.join(tmp, "model.bin")
    with open(model, "wb") as f:
        f.write(os.urandom(1 << 16))
    exp.add_artifact("model", model, description="weights")
    exp.add_metadata({"dataset": "synthetic", "steps": steps})
    exp.track_config_version("trainer", {"lr": 0.1, "steps": steps})
    exp.track_config_version("trainer", {"lr": 0.01, "steps": steps, "warmup": 10})
    return exp.experiment_id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100, help="loss lines and logged points per training task")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--home", help="a RUNYARD_HOME to keep: the experiment is made there once, then reused")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-report-")
    os.environ["RUNYARD_HOME"] = os.path.abspath(args.home) if args.home else os.path.join(tmp, "home")
    os.environ["RUNYARD_PLAIN"] = "1"
    try:
        import runyard as run
        from runyard.errors import UnknownExperimentError

        try:
            exp_id = run.Experiment.from_title(f"bench-report-{args.tasks}x{args.steps}").experiment_id
            print(f"set-up: reusing {exp_id}", file=sys.stderr)
        except UnknownExperimentError:
            exp_id = build(args.tasks, args.steps, tmp)
        out = os.path.join(tmp, "report.html")
        inproc, metrics_only, cli = [], [], []
        for _ in range(args.repeat):
            exp = run.Experiment.from_id(exp_id)
            t0 = time.perf_counter()
            exp.get_all_metrics()
            metrics_only.append(time.perf_counter() - t0)
            exp = run.Experiment.from_id(exp_id)
            t0 = time.perf_counter()
            exp.report(out)
            inproc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "runyard", "report", exp_id, "-o", out], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            cli.append(time.perf_counter() - t0)
        exp = run.Experiment.from_id(exp_id)
        attempts = sum(t.attempts for t in exp.tasks)
        points = sum(len(v) for v in exp.get_all_metrics().values())
        events = len(exp.events())
        size = os.path.getsize(out)
        median = statistics.median(inproc)
        rows = [
            ("exp.report(path)", median, min(inproc), max(inproc), f"<= {TARGET:g} s"),
            ("  of which get_all_metrics()", statistics.median(metrics_only), min(metrics_only),
             max(metrics_only), "-"),
            ("runyard report ID -o FILE (a process)", statistics.median(cli), min(cli), max(cli), "-"),
        ]  # fmt: skip
        print(f"{args.tasks} tasks, {attempts} attempts, {points} metric points, {events} events; "
              f"report {size / 1e6:.2f} MB; median of {args.repeat}; load {os.getloadavg()[0]:.2f}")  # fmt: skip
        print(f"{'figure':<40} {'median':>8} {'min..max':>16}  target")
        for name, med, lo, hi, target in rows:
            print(f"{name:<40} {med:7.3f}s {lo:7.3f}..{hi:.3f}s  {target}")
        verdict = "met" if median <= TARGET else "MISSED"
        print(f"target {verdict}: exp.report() of {args.tasks} tasks in {median:.3f} s (<= {TARGET:g} s)")
        if args.json:
            print(json.dumps({"tasks": args.tasks, "attempts": attempts, "points": points, "events": events,
                              "size": size, "report": inproc, "get_all_metrics": metrics_only, "cli": cli}))  # fmt: skip
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
