"""Benchmark of runyard-docker: 20 one-line Python tasks in containers, by ``docker run``
alone and through runyard, and runyard's overhead per task.

    uv run --frozen python bench/bench_docker.py [--repeat N] [--tasks 20] [--image IMG] [--as-is] [--json]

Needs a Docker engine (``$DOCKER_HOST``) and a local Python image: ``--image``, else
``$RUNYARD_TEST_DOCKER_IMAGE`` (the test bed's, ``./dev.sh services``). Figures (each the
median of N runs, run round-robin after one warm-up round, so other work on the machine
weighs on each alike):

- ``docker run`` alone: N times ``docker run --rm IMAGE python3 -c "print('hello')"``, one
  after the other (the CLI, as a user would type it); time per task.
- runyard, sequential: a fresh ``python`` process that creates an experiment, adds the
  tasks (``run.Config(print, "hello")`` on ``DockerExecutor(image=IMAGE)``) and runs them
  with ``run(sequential=True)``; its whole wall time (interpreter start, imports and all)
  per task. Also the time of ``exp.run()`` alone, measured in that process.
- both in parallel: N ``docker run --rm`` started at once, and the same experiment with
  ``run()``; time per task.

Overhead per task = (runyard - docker run) / tasks; the target is ≤ 50 ms, for the
sequential whole-process figure. The target is a goal for this benchmark, never a timed
assertion in the tests.

Bytecode: the runyard workloads share a private ``PYTHONPYCACHEPREFIX`` (and
``PYTHONDONTWRITEBYTECODE`` is dropped for them), so that they find compiled bytecode as
an installed runyard and docker SDK have it (as bench_core.py does; see bench/README.md).
Without it every process would compile runyard and the docker SDK again (~0.3 s).

The image: unless ``--as-is``, the benchmark uses a copy of it whose standard library is
compiled (``python3 -m compileall``, committed as ``runyard-bench/python:compiled-<id>``),
as every released Python image is. The test bed's image is unpacked Debian packages whose
install scripts never ran, so it has no ``.pyc`` files: each container would compile the
modules runyard's runner imports again (~70 ms) while ``python3 -c "print('hello')"``
imports almost nothing, and the figure would measure that rather than runyard.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

PYTHON = sys.executable
TARGET_MS = 50.0
LINE = "print('hello')"

WORKLOAD = r"""
import json, sys, time
import runyard as run
image, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
exp = run.Experiment("bench-docker")
executor = run.DockerExecutor(image=image, code=None)
for _ in range(n):
    exp.add(run.Config(print, "hello"), executor=executor, name="line")
t0 = time.perf_counter()
state = exp.run(sequential=(mode == "sequential"))
seconds = time.perf_counter() - t0
out = [exp.get_logs(t.id).stdout for t in exp.tasks]
print("BENCH " + json.dumps({"id": exp.experiment_id, "state": str(state), "run": seconds,
                              "ok": out == ["hello\n"] * n}))
"""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def docker_image(args: argparse.Namespace) -> str:
    image = args.image or os.environ.get("RUNYARD_TEST_DOCKER_IMAGE")
    if not image:
        env_sh = os.path.join(os.environ.get("RUNYARD_INFRA_DIR", "/tmp/runyard-infra"), "env.sh")
        if os.path.exists(env_sh):
            with open(env_sh) as f:
                for line in f:
                    if line.startswith("export RUNYARD_TEST_DOCKER_IMAGE="):
                        image = line.split("=", 1)[1].strip()
    if not image:
        sys.exit("no image: give --image, or start the test bed (./dev.sh services)")
    return image


def compiled_copy(client: Any, image: str) -> str:
    """A copy of ``image`` with its standard library compiled (made once, then reused)."""
    source = client.images.get(image)
    tag = f"runyard-bench/python:compiled-{source.id.split(':')[-1][:12]}"
    try:
        client.images.get(tag)
        return tag
    except Exception:  # not made yet
        pass
    progress(f"making {tag}: {image} with its standard library compiled")
    container = client.containers.run(
        image,
        [
            "python3",
            "-c",
            "import compileall, sys; compileall.compile_path(quiet=1, legacy=False) or sys.exit(0)",
        ],
        detach=True,
    )
    try:
        container.wait()
        repository, _, version = tag.partition(":")
        container.commit(repository=repository, tag=version, conf={"Cmd": ["python3"]})
    finally:
        container.remove(force=True)
    return tag


class Runs:
    def __init__(self, image: str, tasks: int) -> None:
        self.image = image
        self.tasks = tasks
        self.experiments: list[str] = []
        self.homes: list[str] = []
        self.pycache = tempfile.mkdtemp(prefix="bench-docker-pyc-")

    def docker_sequential(self) -> dict[str, float]:
        t0 = time.perf_counter()
        for _ in range(self.tasks):
            out = subprocess.run(
                ["docker", "run", "--rm", self.image, "python3", "-c", LINE],
                capture_output=True, text=True, check=True, timeout=120,
            )  # fmt: skip
            assert out.stdout == "hello\n", out
        return {"wall": time.perf_counter() - t0}

    def docker_parallel(self) -> dict[str, float]:
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                ["docker", "run", "--rm", self.image, "python3", "-c", LINE], stdout=subprocess.PIPE
            )
            for _ in range(self.tasks)
        ]
        for p in procs:
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0 and out == b"hello\n"
        return {"wall": time.perf_counter() - t0}

    def runyard(self, mode: str) -> dict[str, float]:
        home = tempfile.mkdtemp(prefix="bench-docker-home-")
        cwd = tempfile.mkdtemp(prefix="bench-docker-cwd-")  # no code to ship: print needs none
        self.homes += [home, cwd]
        env = {**os.environ, "RUNYARD_HOME": home, "RUNYARD_PLAIN": "1", "PYTHONPYCACHEPREFIX": self.pycache}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        t0 = time.perf_counter()
        done = subprocess.run(
            [PYTHON, "-c", WORKLOAD, self.image, str(self.tasks), mode],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"the runyard workload failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        payload = json.loads(lines[-1][6:])
        self.experiments.append(payload["id"])
        if payload["state"] != "SUCCEEDED" or not payload["ok"]:
            raise RuntimeError(f"the runyard workload did not succeed: {payload}")
        return {"wall": wall, "run": payload["run"]}

    def cleanup(self, client: Any) -> int:
        """Remove the temporary folders; the number of containers runyard left behind."""
        for path in [*self.homes, self.pycache]:
            shutil.rmtree(path, ignore_errors=True)
        left = 0
        for experiment in self.experiments:
            for c in client.containers.list(all=True, filters={"label": f"runyard.experiment={experiment}"}):
                left += 1
                c.remove(force=True)
        return left


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks per run (default 20)")
    parser.add_argument("--image", help="a local Python image (default: the test bed's)")
    parser.add_argument("--as-is", action="store_true", help="use the image as it is (no compiled copy)")
    parser.add_argument("--json", action="store_true", help="also print every run's figures as JSON")
    args = parser.parse_args()

    import docker

    client = docker.from_env()
    image = docker_image(args)
    if not args.as_is:
        image = compiled_copy(client, image)
    runs = Runs(image, args.tasks)
    figures: dict[str, Any] = {
        "docker run, sequential": runs.docker_sequential,
        "runyard, sequential": lambda: runs.runyard("sequential"),
        "docker run, parallel": runs.docker_parallel,
        "runyard, parallel": lambda: runs.runyard("parallel"),
    }
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in figures}
    load = os.getloadavg()[0]
    try:
        for round_ in range(args.repeat + 1):
            for name, fn in figures.items():
                progress(f"{'warm-up' if round_ == 0 else f'round {round_}/{args.repeat}'}: {name}")
                result = fn()
                if round_:
                    samples[name].append(result)
    finally:
        left = runs.cleanup(client)

    n = args.tasks

    def per_task(name: str, key: str = "wall") -> tuple[float, float, float]:
        values = [s[key] * 1000 / n for s in samples[name]]
        return statistics.median(values), min(values), max(values)

    rows = [("figure", "ms per task (median)", "min..max")]
    for name, key, label in [
        ("docker run, sequential", "wall", "docker run alone, one after the other"),
        ("runyard, sequential", "wall", "runyard sequential, whole process"),
        ("runyard, sequential", "run", "  of which exp.run()"),
        ("docker run, parallel", "wall", "docker run alone, all at once"),
        ("runyard, parallel", "wall", "runyard parallel, whole process"),
    ]:
        med, lo, hi = per_task(name, key)
        rows.append((label, f"{med:.0f}", f"{lo:.0f}..{hi:.0f}"))
    base = per_task("docker run, sequential")[0]
    overhead = per_task("runyard, sequential")[0] - base
    overhead_run = per_task("runyard, sequential", "run")[0] - base
    parallel = per_task("runyard, parallel")[0] - per_task("docker run, parallel")[0]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{n} one-line Python tasks ({LINE}) in containers of {image}; median of {args.repeat};"
          f" load average {load:.2f} before")  # fmt: skip
    for r in rows:
        print(f"{r[0]:<{width[0]}}  {r[1]:>{width[1]}}  {r[2]:>{width[2]}}")
    verdict = "met" if overhead <= TARGET_MS else "MISSED"
    print(
        f"runyard overhead per task, sequential: {overhead:+.0f} ms whole process"
        f" ({overhead_run:+.0f} ms in exp.run() alone); target <= {TARGET_MS:.0f} ms: {verdict}"
    )
    print(f"runyard overhead per task, parallel:   {parallel:+.0f} ms")  # fmt: skip
    print(f"containers left behind by runyard: {left}")
    if args.json:
        print(json.dumps({"image": image, "tasks": n, "samples": samples}, indent=2))
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
