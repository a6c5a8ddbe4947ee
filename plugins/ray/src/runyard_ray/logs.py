"""``RayLogSource``: a Ray task's output files, from its attempt folder on this machine.

An ended job's files are home already (``home.HOME_MARK``). A live job's are brought home
first, at most once every ``REFRESH`` seconds per job (Ray's Jobs API gives a job's whole log
at each call, with no offset: a follower looks once a second). A head that cannot be reached
leaves what came home before.
"""

from __future__ import annotations

import threading
import time

from runyard.errors import BackendError
from runyard.executor import JobRef
from runyard.logs import LocalFileLogSource

from runyard_ray import home

REFRESH = 1.0


class RayLogSource(LocalFileLogSource):
    def __init__(self) -> None:
        self._looked: dict[tuple[str, str], float] = {}  # (address, job id) -> when last brought home
        self._lock = threading.Lock()

    def read(self, ref: JobRef, name: str, offset: int = 0) -> bytes:
        if ref.job_id and not home.is_home(ref.attempt_dir):
            self._refresh(ref)
        return super().read(ref, name, offset)

    def _refresh(self, ref: JobRef) -> None:
        from runyard_ray.backend import shared_backend

        key = (getattr(ref.executor, "address", ""), ref.job_id)
        with self._lock:
            if time.monotonic() - self._looked.get(key, -REFRESH) < REFRESH:
                return
            self._looked[key] = time.monotonic()
        try:
            shared_backend().refresh(ref)
        except BackendError:
            pass  # not there (yet, or any more), or the head is away: what is home is the answer
