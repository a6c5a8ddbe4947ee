"""Whole-process benchmark of runyard core and the local executor.

    uv run --frozen python bench/bench_core.py [--repeat N] [--quick] [--json]

Every figure is the wall-clock time of a fresh Python process (``sys.executable``), the
median of N runs, each run in its own fresh RUNYARD_HOME (a temporary folder removed
afterwards). The targets come from the issue's "Performance" section; they are goals for
this benchmark, never timed assertions in tests. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

PYTHON = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TIMEOUT = 900.0  # seconds one workload process may take before it is killed
FORBIDDEN_ON_IMPORT = ("paramiko", "docker", "runyard_")  # module name prefixes
MS_PER_TASK = 0.010  # the orchestration target: 10 ms per task

# --------------------------------------------------------------------------- workloads
# Each runs as `python -c CODE ARGS...` with RUNYARD_HOME set, and ends by printing one line
# "BENCH {json}". Tasks are added one add() call each, as a user's loop would.
RUN = r"""
import json, sys
import runyard as run
n, sequential = int(sys.argv[1]), sys.argv[2] == "sequential"
exp = run.Experiment("bench")
for _ in range(n):
    exp.add(run.Script(inline="echo hi"))
state = exp.run(sequential=sequential)
print("BENCH " + json.dumps({"id": exp.experiment_id, "state": str(state)}))
"""

# Detached: launch, then follow until every task has ended. The supervisor is this
# process's child (started with Popen), so its pid cannot be recycled before we reap it:
# /proc/<pid>/status is the supervisor's while we sample it. VmHWM is the kernel's peak-RSS
# mark (monotonic), sampled every 5 ms and read once more right after the last task ended;
# os.wait4 then reaps the supervisor and gives its ru_maxrss, the kernel's exact peak for
# its whole life (max over it and the task processes it reaped, which are far smaller).
DETACHED = r"""
import json, os, sys, threading, time
import runyard as run
n = int(sys.argv[1])
exp = run.Experiment("bench")
for _ in range(n):
    exp.add(run.Script(inline="echo hi"))
exp.run(detach=True)
pid = exp.store.experiment(exp.experiment_id).driver_pid

def vmhwm():
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None  # gone, or a zombie (no memory left to report)

peak = {"kb": 0, "samples": 0}
done = threading.Event()

def sample():
    while not done.is_set():
        kb = vmhwm()
        if kb is None:
            return
        peak["kb"] = max(peak["kb"], kb)
        peak["samples"] += 1
        time.sleep(0.005)

sampler = threading.Thread(target=sample, daemon=True)
if pid:
    sampler.start()
state = exp.wait(timeout=600, interval=0.02)
final = vmhwm() if pid else None  # read at the end: the supervisor is normally still alive
done.set()
if pid:
    sampler.join()
if final is not None:
    peak["kb"] = max(peak["kb"], final)
maxrss = None
if pid:
    try:
        _, _, usage = os.wait4(pid, 0)
        maxrss = usage.ru_maxrss
    except ChildProcessError:  # not our child (a future daemonizing supervisor): poll it out
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.01)
print("BENCH " + json.dumps({
    "id": exp.experiment_id, "state": str(state), "supervisor_pid": pid,
    "vmhwm_kb": peak["kb"] or None, "vmhwm_samples": peak["samples"],
    "alive_at_end": final is not None, "ru_maxrss_kb": maxrss,
}))
"""

FROM_ID = r"""
import json, sys
import runyard as run
exp = run.Experiment.from_id(sys.argv[1])
state = exp.status()
tasks = exp.tasks
print("BENCH " + json.dumps({"id": exp.experiment_id, "state": str(state), "tasks": len(tasks)}))
"""

IMPORT_CHECK = r"""
import json, sys
import runyard
print("BENCH " + json.dumps({"modules": sorted(sys.modules)}))
"""

CLEANUP = r"""
import os, signal
import runyard as run
from runyard.store import open_store, pid_alive
store = open_store()
for rec in store.experiments():
    if rec.driver_pid and rec.driver_pid != os.getpid() and pid_alive(rec.driver_pid):
        try:
            os.kill(rec.driver_pid, signal.SIGTERM)
        except OSError:
            pass
    run.Experiment.from_id(rec.id).cancel_all()
"""


# --------------------------------------------------------------------------- running
class WorkloadError(RuntimeError):
    pass


def run_process(args: list[str], home: str | None) -> tuple[float, dict[str, Any] | None, int]:
    """Run one whole process; return (wall seconds, its BENCH payload, its peak RSS in KB)."""
    env = dict(os.environ)
    env.pop("RUNYARD_HOME", None)
    if home is not None:
        env["RUNYARD_HOME"] = home
    env["RUNYARD_PLAIN"] = "1"
    cwd = home or tempfile.gettempdir()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [PYTHON, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
        try:
            status, usage = _wait4(proc.pid, RUN_TIMEOUT)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
            proc.returncode = -9
            raise WorkloadError(f"timed out after {RUN_TIMEOUT:.0f}s") from None
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        raise WorkloadError(f"exit code {proc.returncode}:\n{tail}")
    payload = None
    for line in stdout.splitlines():
        if line.startswith("BENCH "):
            payload = json.loads(line[6:])
    return elapsed, payload, usage.ru_maxrss


def _wait4(pid: int, timeout: float) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            return status, usage
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(delay)  # short sleeps: the timer resolution must not blur 20 ms figures
        delay = min(delay * 2, 0.002)


def fresh_home() -> str:
    return tempfile.mkdtemp(prefix="runyard-bench-")


def remove_home(home: str, clean: bool) -> None:
    if not clean:  # a failed run may have left a supervisor or tasks: end them first
        try:
            run_process(["-c", CLEANUP], home)
        except WorkloadError as exc:
            print(f"  cleanup of {home} failed: {exc}", file=sys.stderr)
    shutil.rmtree(home, ignore_errors=True)


def expect_succeeded(payload: dict[str, Any] | None) -> dict[str, Any]:
    if payload is None:
        raise WorkloadError("the workload printed no BENCH line")
    if payload.get("state") != "SUCCEEDED":
        raise WorkloadError(f"the experiment ended {payload.get('state')}, not SUCCEEDED")
    return payload


# --------------------------------------------------------------------------- figures
class Figure:
    def __init__(self, key: str, label: str, target: float | None, unit: str = "s") -> None:
        self.key, self.label, self.target, self.unit = key, label, target, unit
        self.values: list[float] = []
        self.error: str | None = None
        self.note = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def status(self) -> str:
        if self.error:
            return "FAIL"
        if self.target is None or self.median is None:
            return ""
        return "OK" if self.median <= self.target else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label, "unit": self.unit, "median": self.median, "values": self.values,
            "target": self.target, "status": self.status() or None, "error": self.error,
            "note": self.note or None,
        }  # fmt: skip


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_simple(fig: Figure, repeat: int, args: list[str], check: bool = False) -> None:
    for i in range(repeat):
        home = fresh_home()
        clean = False
        try:
            elapsed, payload, _ = run_process(args, home)
            if check:
                expect_succeeded(payload)
            fig.values.append(elapsed)
            clean = True
            progress(f"  {fig.label} [{i + 1}/{repeat}] {elapsed:.3f} s")
        except WorkloadError as exc:
            fig.error = str(exc)
            progress(f"  {fig.label} [{i + 1}/{repeat}] FAILED: {exc}")
            return
        finally:
            remove_home(home, clean)


def measure_large(run_fig: Figure, rss_fig: Figure, from_id_fig: Figure, n: int, repeat: int) -> None:
    """N attached runs of n tasks; the from_id reader runs on each one's home, fresh process."""
    for i in range(repeat):
        home = fresh_home()
        clean = False
        try:
            elapsed, payload, rss_kb = run_process(["-c", RUN, str(n), "parallel"], home)
            exp_id = expect_succeeded(payload)["id"]
            run_fig.values.append(elapsed)
            rss_fig.values.append(rss_kb / 1024)
            progress(f"  {run_fig.label} [{i + 1}/{repeat}] {elapsed:.3f} s, peak RSS {rss_kb / 1024:.1f} MB")
            if from_id_fig.error is None:
                try:
                    t, p, _ = run_process(["-c", FROM_ID, exp_id], home)
                    if p is None or p.get("tasks") != n:
                        raise WorkloadError(f"read {p and p.get('tasks')} tasks, not {n}")
                    from_id_fig.values.append(t)
                    progress(f"  {from_id_fig.label} [{i + 1}/{repeat}] {t:.3f} s")
                except WorkloadError as exc:
                    from_id_fig.error = str(exc)
            clean = True
        except WorkloadError as exc:
            run_fig.error = rss_fig.error = str(exc)
            progress(f"  {run_fig.label} [{i + 1}/{repeat}] FAILED: {exc}")
            return
        finally:
            remove_home(home, clean)


def measure_detached(run_fig: Figure, rss_fig: Figure, n: int, repeat: int) -> dict[str, Any]:
    extra: dict[str, Any] = {"ru_maxrss_mb": [], "vmhwm_mb": [], "alive_at_end": [], "samples": []}
    for i in range(repeat):
        home = fresh_home()
        clean = False
        try:
            elapsed, payload, _ = run_process(["-c", DETACHED, str(n)], home)
            p = expect_succeeded(payload)
            if not p.get("vmhwm_kb"):
                raise WorkloadError("could not read the supervisor's VmHWM")
            vmhwm = p["vmhwm_kb"] / 1024
            maxrss = (p["ru_maxrss_kb"] or 0) / 1024
            peak = max(vmhwm, maxrss)
            run_fig.values.append(elapsed)
            rss_fig.values.append(peak)
            extra["vmhwm_mb"].append(round(vmhwm, 2))
            extra["ru_maxrss_mb"].append(round(maxrss, 2) if p["ru_maxrss_kb"] else None)
            extra["alive_at_end"].append(p["alive_at_end"])
            extra["samples"].append(p["vmhwm_samples"])
            progress(
                f"  {run_fig.label} [{i + 1}/{repeat}] {elapsed:.3f} s, supervisor VmHWM {vmhwm:.1f} MB"
                f" (ru_maxrss {maxrss:.1f} MB, alive at end: {p['alive_at_end']})"
            )
            clean = True
        except WorkloadError as exc:
            run_fig.error = rss_fig.error = str(exc)
            progress(f"  {run_fig.label} [{i + 1}/{repeat}] FAILED: {exc}")
            break
        finally:
            remove_home(home, clean)
    if extra["vmhwm_mb"]:
        rss_fig.note = (
            f"VmHWM {statistics.median(extra['vmhwm_mb']):.1f}, wait4 ru_maxrss "
            f"{statistics.median([m or 0 for m in extra['ru_maxrss_mb']]):.1f}"
        )
    return extra


def check_import() -> dict[str, Any]:
    _, payload, _ = run_process(["-c", IMPORT_CHECK], None)
    modules = payload["modules"] if payload else []
    bad = sorted(m for m in modules if m.startswith(FORBIDDEN_ON_IMPORT))
    return {"modules_loaded": len(modules), "forbidden": bad}


# --------------------------------------------------------------------------- report
def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:.1f} {unit}"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 or i == len(row) - 1 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (default 5, 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer runs, 200 instead of 1000 tasks")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 5)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    big = 200 if args.quick else 1000
    big_target = MS_PER_TASK * big

    baseline = Figure("baseline", "python -c pass (baseline)", None)
    imp = Figure("import", "python -c 'import runyard'", 0.18)
    par20 = Figure("tasks20_parallel", "20 echo tasks, parallel", 0.5)
    seq20 = Figure("tasks20_sequential", "20 echo tasks, sequential", 0.5)
    par100 = Figure("tasks100_parallel", "100 echo tasks, parallel", None)
    big_fig = Figure(f"tasks{big}_parallel", f"{big} echo tasks, parallel", big_target)
    big_rss = Figure(f"tasks{big}_attached_rss", f"  peak RSS of that process", None, "MB")
    det = Figure(f"tasks{big}_detached", f"{big} echo tasks, detached + follow", big_target)
    det_rss = Figure(f"tasks{big}_supervisor_rss", "  supervisor peak RSS", 100.0, "MB")
    overhead = Figure(f"tasks{big}_overhead", f"  orchestration per task ({big})", MS_PER_TASK * 1000, "ms")
    reader = Figure("from_id", f"from_id + status() + tasks ({big} tasks)", 0.3)

    progress(f"runyard bench: {repeat} run(s) per figure, python {PYTHON}")
    measure_simple(baseline, repeat, ["-c", "pass"])
    measure_simple(imp, repeat, ["-c", "import runyard"])
    imports = check_import()
    measure_simple(par20, repeat, ["-c", RUN, "20", "parallel"], check=True)
    measure_simple(seq20, repeat, ["-c", RUN, "20", "sequential"], check=True)
    measure_simple(par100, repeat, ["-c", RUN, "100", "parallel"], check=True)
    measure_large(big_fig, big_rss, reader, big, repeat)
    detached = measure_detached(det, det_rss, big, repeat)
    if big_fig.median is not None and baseline.median is not None:
        overhead.values = [(v - baseline.median) / big * 1000 for v in big_fig.values]
    else:
        overhead.error = big_fig.error or "no baseline"
    if not imports["forbidden"]:
        imp.note = "loads no plugin, paramiko or docker"
    else:
        imp.note = "LOADS " + ", ".join(imports["forbidden"])
        imp.error = imp.error or f"import runyard loaded {', '.join(imports['forbidden'])}"

    figures = [baseline, imp, par20, seq20, par100, big_fig, big_rss, overhead, det, det_rss, reader]
    base = baseline.median or 0.0
    rows = [["figure", "median", "min..max", "minus baseline", "target", "result", "note"]]
    for f in figures:
        spread = f"{fmt(min(f.values), f.unit)}..{fmt(max(f.values), f.unit)}" if f.values else "-"
        net = "-" if f.unit != "s" or f is baseline or f.median is None else fmt(f.median - base, "s")
        target = "-" if f.target is None else "<= " + fmt(f.target, f.unit)
        note = f.note if not f.error else f.error.splitlines()[0][:60]
        rows.append([f.label, fmt(f.median, f.unit), spread, net, target, f.status(), note])
    print()
    print(
        f"runyard {_version()} | python {platform.python_version()} | {os.cpu_count()} CPUs | "
        f"{platform.machine()} | median of {repeat} | {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(table(rows))
    misses = [f.label.strip() for f in figures if f.status() in ("MISS", "FAIL")]
    print()
    print("all targets met" if not misses else "missed: " + "; ".join(misses))
    if args.json:
        print(json.dumps({
            "repeat": repeat, "tasks_large": big, "python": platform.python_version(),
            "cpus": os.cpu_count(), "runyard": _version(),
            "figures": {f.key: f.as_json() for f in figures},
            "import_check": imports, "detached": detached,
        }, indent=2))  # fmt: skip
    return 1 if any(f.error for f in figures) else 0


def _version() -> str:
    try:
        from importlib import metadata

        return metadata.version("runyard")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
