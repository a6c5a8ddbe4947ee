"""tests/plugins/mixed_precision: needs core and runyard-mixed-precision only.

runyard-local may be absent (these tests also run in a venv holding only core and this
plugin), so tasks run on a small executor kind of the tests' own, registered per test by
the ``process_executor`` fixture.
"""

# No `from __future__ import annotations`: cattrs resolves ProcessExecutor's annotations by
# its module's name, "conftest", which names whichever conftest.py pytest imported last.

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import attrs
import pytest
from runyard.executor import Backend, Executor, JobRef, JobSpec, JobStatus, Launched
from runyard.hookspecs import hookimpl
from runyard.jobfiles import read_local_result, runner_path, status_of_ended_job
from runyard.plugins import ExecutorRegistry, Plugins
from runyard.states import State
from runyard.testing import registered_plugin


@attrs.define
class ProcessExecutor(Executor):
    """Each task a child process of the driver (a test executor kind, not runyard-local)."""

    kind: ClassVar[str] = "mixed-precision-test-process"


# Resolve its annotations now, while this module is the one named "conftest" (pytest names
# every conftest.py so; cattrs would otherwise look them up in whichever came last).
attrs.resolve_types(ProcessExecutor)


class ProcessBackend(Backend):
    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _launch(self, job: JobSpec) -> Launched:
        os.makedirs(job.attempt_dir, exist_ok=True)
        if job.is_script:
            argv = ["bash", runner_path("runner.sh"), job.task_dir, str(job.attempt), *job.argv]
        else:
            argv = [sys.executable, runner_path("runner.py"), job.task_dir, str(job.attempt)]
        proc = subprocess.Popen(
            argv, env={**os.environ, **job.env}, cwd=job.cwd, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.procs[str(proc.pid)] = proc
        return Launched(job_id=str(proc.pid))

    def _poll(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        out = {}
        for job in jobs:
            proc = self.procs.get(job.job_id)
            if proc is not None:
                running = proc.poll() is None
                out[job.job_id] = (
                    JobStatus(State.RUNNING)
                    if running
                    else status_of_ended_job(read_local_result(job.attempt_dir))
                )
        return out

    def _cancel(self, job: JobRef) -> None:
        proc = self.procs.get(job.job_id)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def poll_interval(self) -> float:
        return 0.05

    def _close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class ProcessPlugin:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(ProcessExecutor, ProcessBackend)


@pytest.fixture
def process_executor(runyard_plugins: Plugins) -> Iterator[type[ProcessExecutor]]:
    """The tests' executor class, registered with a fresh plugin manager for the test."""
    with registered_plugin(ProcessPlugin(), name="mixed-precision-test-process"):
        yield ProcessExecutor


@pytest.fixture
def guide_block() -> Any:
    """The experiment guide's "Using Plugins" code block (from tests/e2e/experiment-guide.md)."""
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[2] / "e2e" / "experiment-guide.md").read_text()
    section = guide.split("### Using Plugins", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None
    return match.group(1)
