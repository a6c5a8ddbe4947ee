"""Whole-process benchmark of runyard core and the local executor.

    uv run --frozen python bench/bench_core.py [--repeat N] [--quick] [--json] [--no-pyc-cache]

Every figure is the wall-clock time of a fresh Python process (``sys.executable``), the
median of N runs, each run in its own fresh RUNYARD_HOME (a temporary folder removed
afterwards). Runs go round-robin (one of each figure, N times over), so that other work on
the machine weighs on every figure alike. The targets come from the issue's "Performance"
section; they are goals for this benchmark, never timed assertions in tests. See
bench/README.md for what each figure means.
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
from collections.abc import Callable
from typing import Any

PYTHON = sys.executable
RUN_TIMEOUT = 900.0  # seconds one workload process may take before it is killed
FORBIDDEN_ON_IMPORT = ("paramiko", "docker", "runyard_")  # module name prefixes
MS_PER_TASK = 10.0  # the orchestration target, in milliseconds per task
MAX_PARALLEL = 4  # the queued run's Experiment(max_parallel=...)

# --------------------------------------------------------------------------- workloads
# Each runs as `python -c CODE ARGS...` with RUNYARD_HOME set, and ends by printing one line
# "BENCH {json}". Tasks are added one add() call each, as a user's loop would. RUN's third
# argument, when given, is the experiment's max_parallel.
RUN = r"""
import json, sys
import runyard as run
n, sequential = int(sys.argv[1]), sys.argv[2] == "sequential"
exp = run.Experiment("bench", max_parallel=int(sys.argv[3]) if len(sys.argv) > 3 else None)
for _ in range(n):
    exp.add(run.Script(inline="echo hi"))
state = exp.run(sequential=sequential)
print("BENCH " + json.dumps({"id": exp.experiment_id, "state": str(state)}))
"""

# Detached: launch, then follow until every task has ended. The supervisor is this
# process's child (start_supervisor uses Popen), so its pid cannot be recycled before we
# reap it: /proc/<pid>/status is the supervisor's all along. VmHWM is the kernel's peak-RSS
# mark (it only grows); a thread samples it every 10 ms, and it is read once more right
# after the last task ended, while the supervisor is still winding down. os.wait4 then
# reaps the supervisor and gives ru_maxrss: the kernel's peak over the supervisor's whole
# life (and over the task processes it reaped, which are far smaller), a cross-check.
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
    return None  # gone, or a zombie (its memory is released: nothing to report)

peak = {"kb": 0, "samples": 0}
done = threading.Event()

def sample():
    while not done.is_set():
        kb = vmhwm()
        if kb is None:
            return
        peak["kb"] = max(peak["kb"], kb)
        peak["samples"] += 1
        done.wait(0.01)

sampler = threading.Thread(target=sample, daemon=True)
if pid:
    sampler.start()
state = exp.wait(timeout=600, interval=0.02)
final = vmhwm() if pid else None
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
    except ChildProcessError:  # not our child (a supervisor that daemonizes): wait it out
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


class Result:
    """One whole process: wall seconds, CPU seconds of its whole tree, peak RSS, payload."""

    def __init__(self, wall: float, usage: Any, payload: dict[str, Any] | None) -> None:
        self.wall = wall
        # wait4's usage covers the process and every descendant it (or they) reaped: the
        # tasks, and the supervisor when the workload reaps it
        self.cpu = usage.ru_utime + usage.ru_stime
        self.maxrss_mb = usage.ru_maxrss / 1024
        self.payload = payload


class Runner:
    def __init__(self, pycache: str | None) -> None:
        self.pycache = pycache

    def run(self, args: list[str], home: str | None) -> Result:
        env = dict(os.environ)
        env.pop("RUNYARD_HOME", None)
        if home is not None:
            env["RUNYARD_HOME"] = home
        env["RUNYARD_PLAIN"] = "1"
        if self.pycache is not None:  # warm bytecode, as an installed runyard has it
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = self.pycache
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [PYTHON, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                cwd=home or tempfile.gettempdir(), start_new_session=True,
            )  # fmt: skip
            try:
                status, usage = _wait4(proc.pid, RUN_TIMEOUT)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                os.waitpid(proc.pid, 0)
                proc.returncode = -9
                raise WorkloadError(f"timed out after {RUN_TIMEOUT:.0f}s") from None
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
        if proc.returncode != 0:
            tail = "\n".join(stderr.strip().splitlines()[-8:])
            raise WorkloadError(f"exit code {proc.returncode}:\n{tail}")
        payload = None
        for line in stdout.splitlines():
            if line.startswith("BENCH "):
                payload = json.loads(line[6:])
        return Result(wall, usage, payload)

    def in_fresh_home(self, body: Callable[[str], None]) -> None:
        """Run ``body(home)`` in a new RUNYARD_HOME, removed afterwards (after ending any
        supervisor or task a failed run left behind)."""
        home = tempfile.mkdtemp(prefix="runyard-bench-")
        clean = False
        try:
            body(home)
            clean = True
        finally:
            if not clean:
                try:
                    self.run(["-c", CLEANUP], home)
                except WorkloadError as exc:
                    progress(f"  cleanup of {home} failed: {exc}")
            shutil.rmtree(home, ignore_errors=True)


def _wait4(pid: int, timeout: float) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            return status, usage
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(delay)  # short sleeps: polling must not blur a 10 ms figure
        delay = min(delay * 2, 0.002)


def expect_succeeded(payload: dict[str, Any] | None) -> dict[str, Any]:
    if payload is None:
        raise WorkloadError("the workload printed no BENCH line")
    if payload.get("state") != "SUCCEEDED":
        raise WorkloadError(f"the experiment ended {payload.get('state')}, not SUCCEEDED")
    return payload


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- figures
class Figure:
    def __init__(self, key: str, label: str, target: float | None, unit: str = "s", ref: str = "") -> None:
        self.key, self.label, self.target, self.unit = key, label, target, unit
        self.ref = ref  # what the issue measured for NeMo Run 0.11.1, on its machine
        self.values: list[float] = []
        self.cpu: list[float] = []
        self.error: str | None = None
        self.note = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    def status(self) -> str:
        if self.error:
            return "FAIL"
        if self.target is None or self.median is None:
            return ""
        return "OK" if self.median <= self.target else "MISS"

    def fail(self, exc: Exception) -> None:
        self.error = self.error or str(exc)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label.strip(), "unit": self.unit, "median": self.median,
            "values": self.values, "cpu_median_s": self.cpu_median, "cpu_s": self.cpu,
            "target": self.target, "status": self.status() or None, "error": self.error,
            "note": self.note or None, "nemo_run_0_11_1": self.ref or None,
        }  # fmt: skip


class Bench:
    def __init__(self, runner: Runner, repeat: int, big: int) -> None:
        self.runner, self.repeat, self.big_n = runner, repeat, big
        big_target = MS_PER_TASK * big / 1000
        self.baseline = Figure("baseline", "python -c pass (baseline)", None, ref="0.13 s")
        self.imp = Figure("import", "python -c 'import runyard'", 0.18, ref="1.97 s")
        self.par20 = Figure("tasks20_parallel", "20 echo tasks, parallel", 0.5, ref="3.42 s")
        self.seq20 = Figure("tasks20_sequential", "20 echo tasks, sequential", 0.5, ref="5.08 s")
        self.par100 = Figure("tasks100_parallel", "100 echo tasks, parallel", None, ref="7.4 s")
        self.big = Figure(f"tasks{big}_parallel", f"{big} echo tasks, parallel", big_target, ref="fails")
        self.big_per_task = Figure(f"tasks{big}_per_task", "  orchestration per task", MS_PER_TASK, "ms")
        self.big_rss = Figure(f"tasks{big}_rss", "  peak RSS of that process", None, "MB")
        # queued: MAX_PARALLEL at a time; target: no worse per task than the unlimited run (set after it)
        self.queued = Figure(
            f"tasks{big}_max_parallel{MAX_PARALLEL}", f"{big} echo tasks, max_parallel={MAX_PARALLEL}", None
        )
        self.queued_per_task = Figure(
            f"tasks{big}_max_parallel{MAX_PARALLEL}_per_task", "  orchestration per task", None, "ms"
        )
        self.det = Figure(f"tasks{big}_detached", f"{big} echo tasks, detached + follow", big_target)
        self.det_per_task = Figure(
            f"tasks{big}_detached_per_task", "  orchestration per task", MS_PER_TASK, "ms"
        )
        self.det_rss = Figure(f"tasks{big}_supervisor_rss", "  supervisor peak RSS", 100.0, "MB")
        self.reader = Figure("from_id", f"from_id + status() + tasks ({big} tasks)", 0.3)
        self.detached_detail: dict[str, list[Any]] = {
            "vmhwm_mb": [], "ru_maxrss_mb": [], "alive_at_end": [], "samples": []
        }  # fmt: skip
        self.imports: dict[str, Any] = {}

    @property
    def figures(self) -> list[Figure]:
        return [
            self.baseline, self.imp, self.par20, self.seq20, self.par100,
            self.big, self.big_per_task, self.big_rss, self.queued, self.queued_per_task,
            self.det, self.det_per_task, self.det_rss, self.reader,
        ]  # fmt: skip

    # --- one run of each figure --------------------------------------------------------
    def simple(self, fig: Figure, args: list[str], check: bool, i: int) -> None:
        if fig.error:
            return

        def body(home: str) -> None:
            r = self.runner.run(args, home)
            if check:
                expect_succeeded(r.payload)
            fig.values.append(r.wall)
            fig.cpu.append(r.cpu)
            progress(f"  [{i + 1}/{self.repeat}] {fig.label}: {r.wall:.3f} s (cpu {r.cpu:.3f} s)")

        try:
            self.runner.in_fresh_home(body)
        except WorkloadError as exc:
            fig.fail(exc)
            progress(f"  [{i + 1}/{self.repeat}] {fig.label}: FAILED: {exc}")

    def large(self, i: int) -> None:
        """An attached run of many tasks, then the fresh-process reader on its home."""
        if self.big.error:
            return

        def body(home: str) -> None:
            r = self.runner.run(["-c", RUN, str(self.big_n), "parallel"], home)
            exp_id = expect_succeeded(r.payload)["id"]
            self.big.values.append(r.wall)
            self.big.cpu.append(r.cpu)
            self.big_rss.values.append(r.maxrss_mb)
            progress(
                f"  [{i + 1}/{self.repeat}] {self.big.label}: {r.wall:.3f} s (cpu {r.cpu:.3f} s),"
                f" peak RSS {r.maxrss_mb:.1f} MB"
            )
            if self.reader.error:
                return
            try:
                rr = self.runner.run(["-c", FROM_ID, exp_id], home)
                if rr.payload is None or rr.payload.get("tasks") != self.big_n:
                    got = rr.payload and rr.payload.get("tasks")
                    raise WorkloadError(f"read {got} tasks, not {self.big_n}")
                self.reader.values.append(rr.wall)
                self.reader.cpu.append(rr.cpu)
                progress(f"  [{i + 1}/{self.repeat}] {self.reader.label}: {rr.wall:.3f} s")
            except WorkloadError as exc:
                self.reader.fail(exc)

        try:
            self.runner.in_fresh_home(body)
        except WorkloadError as exc:
            for f in (self.big, self.big_rss, self.reader):
                f.fail(exc)
            progress(f"  [{i + 1}/{self.repeat}] {self.big.label}: FAILED: {exc}")

    def detached(self, i: int) -> None:
        if self.det.error:
            return

        def body(home: str) -> None:
            r = self.runner.run(["-c", DETACHED, str(self.big_n)], home)
            p = expect_succeeded(r.payload)
            if not p.get("vmhwm_kb"):
                raise WorkloadError("could not read the supervisor's VmHWM")
            vmhwm = p["vmhwm_kb"] / 1024
            maxrss = (p["ru_maxrss_kb"] or 0) / 1024
            self.det.values.append(r.wall)
            self.det.cpu.append(r.cpu)
            self.det_rss.values.append(max(vmhwm, maxrss))
            d = self.detached_detail
            d["vmhwm_mb"].append(round(vmhwm, 2))
            d["ru_maxrss_mb"].append(round(maxrss, 2) if p["ru_maxrss_kb"] else None)
            d["alive_at_end"].append(p["alive_at_end"])
            d["samples"].append(p["vmhwm_samples"])
            progress(
                f"  [{i + 1}/{self.repeat}] {self.det.label}: {r.wall:.3f} s (cpu {r.cpu:.3f} s),"
                f" supervisor VmHWM {vmhwm:.1f} MB, ru_maxrss {maxrss:.1f} MB,"
                f" alive at the end: {p['alive_at_end']}"
            )

        try:
            self.runner.in_fresh_home(body)
        except WorkloadError as exc:
            for f in (self.det, self.det_rss):
                f.fail(exc)
            progress(f"  [{i + 1}/{self.repeat}] {self.det.label}: FAILED: {exc}")

    # --- all of it -----------------------------------------------------------------------
    def warm_up(self) -> None:
        """One untimed run of every workload: timed runs find warm bytecode and caches."""

        def body(home: str) -> None:
            self.runner.run(["-c", "pass"], home)
            r = self.runner.run(["-c", RUN, "5", "parallel"], home)
            self.runner.run(["-c", FROM_ID, expect_succeeded(r.payload)["id"]], home)
            expect_succeeded(self.runner.run(["-c", DETACHED, "5"], home).payload)

        self.runner.in_fresh_home(body)

    def check_import(self) -> None:
        payload = self.runner.run(["-c", IMPORT_CHECK], None).payload
        modules = payload["modules"] if payload else []
        bad = sorted(m for m in modules if m.startswith(FORBIDDEN_ON_IMPORT))
        self.imports = {"modules_loaded": len(modules), "forbidden": bad}
        if bad:
            self.imp.note = "LOADS " + ", ".join(bad)
            self.imp.fail(WorkloadError(f"import runyard loaded {', '.join(bad)}"))
        else:
            self.imp.note = "loads no plugin, paramiko or docker"

    def run(self) -> None:
        self.warm_up()
        for i in range(self.repeat):
            self.simple(self.baseline, ["-c", "pass"], False, i)
            self.simple(self.imp, ["-c", "import runyard"], False, i)
            self.simple(self.par20, ["-c", RUN, "20", "parallel"], True, i)
            self.simple(self.seq20, ["-c", RUN, "20", "sequential"], True, i)
            self.simple(self.par100, ["-c", RUN, "100", "parallel"], True, i)
            self.large(i)
            self.simple(self.queued, ["-c", RUN, str(self.big_n), "parallel", str(MAX_PARALLEL)], True, i)
            self.detached(i)
        self.check_import()  # after the timed runs: a failed check must not stop them
        base = self.baseline.median or 0.0
        pairs = (
            (self.big, self.big_per_task),
            (self.queued, self.queued_per_task),
            (self.det, self.det_per_task),
        )
        for total, per_task in pairs:
            if total.error or not total.values:
                per_task.fail(WorkloadError(total.error or "no run"))
                continue
            per_task.values = [(v - base) / self.big_n * 1000 for v in total.values]
            cpu = statistics.median(total.cpu) / self.big_n * 1000 if total.cpu else None
            per_task.note = f"cpu {cpu:.2f} ms per task" if cpu is not None else ""
        self.queued_per_task.target = self.big_per_task.median  # no worse per task than unlimited
        d = self.detached_detail
        if d["vmhwm_mb"]:
            maxrss = [m for m in d["ru_maxrss_mb"] if m is not None]
            self.det_rss.note = f"VmHWM {statistics.median(d['vmhwm_mb']):.1f}" + (
                f", wait4 ru_maxrss {statistics.median(maxrss):.1f}" if maxrss else ""
            )


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
        cells = [
            c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(bench: Bench, load_before: float, pycache: bool) -> str:
    base = bench.baseline.median or 0.0
    rows = [["figure", "median", "min..max", "- baseline", "cpu", "target", "result", "NeMo Run*", "note"]]
    for f in bench.figures:
        digits = 3 if f.unit == "s" else (2 if f.unit == "ms" else 1)
        spread = f"{min(f.values):.{digits}f}..{max(f.values):.{digits}f}" if f.values else "-"
        net = "-" if f.unit != "s" or f is bench.baseline or f.median is None else fmt(f.median - base, "s")
        cpu = fmt(f.cpu_median, "s") if f.cpu else "-"
        target = "-" if f.target is None else "<= " + fmt(f.target, f.unit)
        note = f.note if not f.error else f.error.splitlines()[0][:60]
        rows.append(
            [f.label, fmt(f.median, f.unit), spread, net, cpu, target, f.status(), f.ref or "-", note]
        )
    misses = [f.label.strip() for f in bench.figures if f.status() in ("MISS", "FAIL")]
    return "\n".join([
        f"runyard {_version()} | python {platform.python_version()} | {os.cpu_count()} CPUs | "
        f"{platform.machine()} | median of {bench.repeat} | {time.strftime('%Y-%m-%d %H:%M')}",
        f"load average before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f} | bytecode: "
        + ("private warmed PYTHONPYCACHEPREFIX" if pycache else "as the environment has it"),
        table(rows),
        "cpu: user+sys seconds of the whole process tree (tasks and supervisor included), median",
        "* NeMo Run 0.11.1 as the issue measured it, on a 2-core machine where python -c pass took 0.13 s",
        "",
        "all targets met" if not misses else "missed: " + "; ".join(misses),
    ])  # fmt: skip


def _version() -> str:
    try:
        from importlib import metadata

        return metadata.version("runyard")
    except Exception:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per figure (default 5, 3 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs, 200 tasks instead of 1000")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument(
        "--no-pyc-cache", action="store_true",
        help="run workloads with the environment's bytecode settings as they are (by default "
        "they share a private, warmed PYTHONPYCACHEPREFIX: with PYTHONDONTWRITEBYTECODE=1 and "
        "no __pycache__, every process would compile runyard and its dependencies again)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    repeat = args.repeat or (3 if args.quick else 5)
    pycache = None if args.no_pyc_cache else tempfile.mkdtemp(prefix="runyard-bench-pyc-")
    try:
        bench = Bench(Runner(pycache), repeat, 200 if args.quick else 1000)
        progress(f"runyard bench: {repeat} run(s) per figure, round-robin, python {PYTHON}")
        load_before = os.getloadavg()[0]
        if load_before > 1.0:
            progress(f"  note: load average {load_before:.1f}: other work on this machine skews the figures")
        bench.run()
        print(report(bench, load_before, pycache is not None))
        if args.json:
            print(json.dumps({
                "repeat": repeat, "tasks_large": bench.big_n, "python": platform.python_version(),
                "cpus": os.cpu_count(), "runyard": _version(), "pyc_cache": pycache is not None,
                "load_before": load_before, "load_after": os.getloadavg()[0],
                "figures": {f.key: f.as_json() for f in bench.figures},
                "import_check": bench.imports, "detached": bench.detached_detail,
            }, indent=2))  # fmt: skip
        return 1 if any(f.error for f in bench.figures) else 0
    finally:
        if pycache:
            shutil.rmtree(pycache, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
