"""Output throughput and start cost of the in-job runners (runner.sh and runner.py).

    uv run --frozen python bench/bench_output.py [--repeat N] [--starts N] [--json]
        [--runner-sh PATH] [--runner-py PATH]

Throughput: a Script task ``cat FILE`` through each runner, timed from the runner's start
to its exit (the raw log, the journal and result.json are all written by then), against
the shell alone writing the same file to a file. The files: 50 MB of text lines (100
bytes each) and 20 MB of random bytes. Every run is checked: the raw log must have the
file's bytes (sha256), the journal one entry per text line. Start cost: ``bash runner.sh
DIR 1 true``, start to exit, many times over. Figures are medians (min..max); runs go
round-robin so that other work on the machine weighs on every figure alike. The target
(>= 50 MB/s for both runners) is a goal for this benchmark, never a timed assertion in
tests. ``--runner-sh`` / ``--runner-py`` measure other runner files (e.g. an older one:
``git show HEAD~1:core/src/runyard/runner.sh > /tmp/old.sh``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNERS = os.path.join(HERE, "..", "core", "src", "runyard")
TEXT_MB, BINARY_MB = 50, 20
TARGET_MBS = 50.0
TIMEOUT = 600.0


def make_text(path: str, size: int) -> int:
    """``size`` bytes of 100-byte text lines (words, digits); returns the line count."""
    rng = random.Random(8)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(500)
    ]
    lines: list[str] = []
    while len(lines) * 100 < size:
        line = f"step {len(lines)} " + " ".join(rng.choice(words) for _ in range(20))
        lines.append(line[:99].ljust(99))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, check=True, timeout=TIMEOUT)
    return time.perf_counter() - start


def task_dir(path: str, script: str) -> str:
    """A fresh task folder with a Script task ``script`` (runner.py reads task.json)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(path, "attempt-1"))
    task: dict[str, Any] = {
        "__runyard__": "script",
        "inline": script,
        "path": None,
        "entrypoint": "bash",
        "args": [],
        "env": {},
    }
    with open(os.path.join(path, "task.json"), "w") as f:
        json.dump({"task": task, "main_path": None, "python_path": []}, f)
    return path


def through(argv: list[str], folder: str, script: str, digest: str, lines: int | None) -> float:
    """Seconds the runner ``argv`` takes with the Script task ``script`` in ``folder``; its
    files are checked afterwards."""
    task_dir(folder, script)
    seconds = timed(argv)
    check(folder, digest, lines)
    return seconds


def check(path: str, digest: str, lines: int | None) -> None:
    attempt = os.path.join(path, "attempt-1")
    with open(os.path.join(attempt, "result.json")) as f:
        assert json.load(f)["exit_code"] == 0, f"the task failed in {attempt}"
    assert sha256(os.path.join(attempt, "stdout.log")) == digest, f"stdout.log differs in {attempt}"
    if lines is not None:
        with open(os.path.join(attempt, "journal.log"), "rb") as f:
            count = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        assert count == lines, f"journal.log has {count} entries for {lines} lines in {attempt}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per throughput figure (default 5)")
    parser.add_argument(
        "--starts", type=int, default=300, help="runs of the start-cost figures (default 300)"
    )
    parser.add_argument("--json", action="store_true", help="print every run as JSON after the table")
    parser.add_argument("--only", choices=["throughput", "start"], help="measure only these figures")
    parser.add_argument("--runner-sh", default=os.path.join(RUNNERS, "runner.sh"))
    parser.add_argument("--runner-py", default=os.path.join(RUNNERS, "runner.py"))
    parser.add_argument("--other-sh", help="also the start cost of this runner.sh (round-robin)")
    args = parser.parse_args()
    sh, py = os.path.abspath(args.runner_sh), os.path.abspath(args.runner_py)

    work = tempfile.mkdtemp(prefix="runyard-bench-output-")
    try:
        text, binary = os.path.join(work, "text.txt"), os.path.join(work, "random.bin")
        text_lines = make_text(text, TEXT_MB * 1_000_000)
        with open(binary, "wb") as f:
            f.write(os.urandom(BINARY_MB * 1_000_000))
        inputs = {"text": (text, sha256(text), text_lines), "binary": (binary, sha256(binary), None)}

        figures: dict[str, Callable[[], float]] = {}
        for kind, (path, digest, lines) in inputs.items():
            script = f"cat {shlex.quote(path)}"
            out = shlex.quote(os.path.join(work, kind + ".out"))
            figures[f"{kind}: shell writing to a file"] = functools.partial(
                timed, ["bash", "-c", f"{script} > {out}"]
            )
            for runner in ("runner.sh", "runner.py"):
                folder = os.path.join(work, "tasks", f"{kind}-{runner}")
                argv = (
                    ["bash", sh, folder, "1", "bash", "-c", script]
                    if runner == "runner.sh"
                    else [sys.executable, py, folder, "1"]
                )
                figures[f"{kind}: {runner}"] = functools.partial(through, argv, folder, script, digest, lines)

        sizes = {"text": TEXT_MB, "binary": BINARY_MB}
        runs: dict[str, list[float]] = {name: [] for name in figures}
        for round_ in range(
            0 if args.only == "start" else args.repeat + 1
        ):  # round 0 warms the page cache up, untimed
            for name, figure in figures.items():
                print(f"round {round_}: {name}", file=sys.stderr)
                seconds = figure()
                if round_:
                    runs[name].append(seconds)

        commands = {"bash -c true": ["bash", "-c", "true"], "bash runner.sh DIR 1 true": ["bash", sh]}
        if args.other_sh:
            commands["bash OTHER.sh DIR 1 true"] = ["bash", os.path.abspath(args.other_sh)]
        starts: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(0 if args.only == "throughput" else args.starts):
            for name, argv in commands.items():
                folder = task_dir(os.path.join(work, "tasks", "start"), "true")
                starts[name].append(timed(argv if "-c" in argv else [*argv, folder, "1", "true"]))
            if i % 50 == 0:
                print(f"start cost: run {i}", file=sys.stderr)

        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
        print(f"runner.sh: {sh}\nrunner.py: {py}" + (f"\nOTHER.sh: {args.other_sh}" if args.other_sh else ""))
        print(f"{'figure':34s} {'median':>10s} {'min..max':>20s}   target")
        for name, values in runs.items():
            if not values:
                continue
            mbs = [sizes[name.split(":")[0]] / v for v in values]
            target = (
                ""
                if "shell" in name
                else f">= {TARGET_MBS:.0f} MB/s "
                + ("met" if statistics.median(mbs) >= TARGET_MBS else "MISSED")
            )
            print(
                f"{name:34s} {statistics.median(mbs):7.1f} MB/s {min(mbs):8.1f}..{max(mbs):.1f} MB/s   {target}"
            )
        for name, values in starts.items():
            if not values:
                continue
            ms = [1000 * v for v in values]
            print(f"{name:34s} {statistics.median(ms):7.2f} ms   {min(ms):8.2f}..{max(ms):.2f} ms")
        if args.json:
            print(json.dumps({"throughput_seconds": runs, "start_seconds": starts}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
