"""``NiceBackend``: runyard-local's backend, with the runner started through ``nice``."""

from __future__ import annotations

import shutil

from runyard.errors import BackendError
from runyard.executor import JobSpec
from runyard_local.backend import LocalBackend

from runyard_nice.executor import NiceExecutor


class NiceBackend(LocalBackend):
    """Launch, status, cancel, pause and resume are the local backend's; only the command differs."""

    def command(self, job: JobSpec, argv: list[str]) -> list[str]:
        executor = job.executor
        assert isinstance(executor, NiceExecutor)
        # both programs exec what follows, so the started process stays the runner
        prefix = ["nice", "-n", str(executor.niceness)]
        if executor.cpus is not None:
            prefix += ["taskset", "-c", executor.cpus]
        for program in ("nice", "taskset") if executor.cpus is not None else ("nice",):
            if shutil.which(program) is None:
                raise BackendError(f"NiceExecutor needs {program!r}, which is not on PATH")
        return prefix + argv
