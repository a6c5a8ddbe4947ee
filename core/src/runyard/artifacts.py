"""Artifacts: files and folders recorded with an experiment, through artifact stores.

A store is registered by the ``runyard_register_artifact_stores`` hook. Core's ``local``
store records a path on this machine in place, with its size and SHA-256.
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import os
import shutil
import stat
from typing import Any, ClassVar

import attrs

from runyard.errors import ArtifactError
from runyard.executor import Executor
from runyard.registries import ArtifactStoreRegistry as ArtifactStoreRegistry  # re-exported: its old home


@attrs.frozen
class Artifact:
    """A recorded artifact: ``path`` where the store keeps it, ``size`` in bytes, ``sha256``."""

    name: str
    path: str
    description: str | None
    size: int
    sha256: str
    created_at: dt.datetime
    store: str = "local"

    def to_row(self) -> dict[str, Any]:
        """The store's row of it (``Store.add_artifact``)."""
        return {**attrs.asdict(self), "created_at": self.created_at.timestamp()}

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Artifact:
        """An artifact from the store's row (``Store.artifacts``)."""
        return cls(**{**row, "created_at": dt.datetime.fromtimestamp(row["created_at"], tz=dt.timezone.utc)})


@attrs.frozen
class ExperimentInfo:
    """What an artifact store is told of the experiment it records an artifact for: its id,
    its folder on this machine, and the executors of its tasks (in add order), so that a
    store can find where the tasks ran (a cluster) without reading runyard's store."""

    id: str
    directory: str
    executors: tuple[Executor, ...] = ()


@attrs.frozen
class StoredFile:
    """What a store reports after ``put``."""

    path: str
    size: int
    sha256: str


class ArtifactStore(abc.ABC):
    """Puts, gets and lists artifact files. ``name`` is the key it registers under."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def put(self, experiment: ExperimentInfo, name: str, path: str) -> StoredFile:
        """Record (and maybe copy) ``path`` for ``experiment``; raise ArtifactError if it cannot be read."""

    @abc.abstractmethod
    def get(self, artifact: Artifact, dest: str | None = None) -> str:
        """A local path holding the artifact (copied to ``dest`` when given)."""

    @abc.abstractmethod
    def list(self, artifact: Artifact) -> list[str]:
        """Paths of the files the artifact holds, relative to it (``[""]`` for a file)."""


def digest(path: str) -> tuple[int, str]:
    """Size in bytes and SHA-256 of a file, or of a folder (over relative names and contents).
    Raises ArtifactError for what has no contents to record (a device, a FIFO, a socket),
    whether ``path`` or a file in the folder."""
    _check_regular(path)
    if os.path.isfile(path):
        return os.path.getsize(path), file_sha256(path)
    h = hashlib.sha256()
    size = 0
    for rel in _files(path):
        full = os.path.join(path, rel)
        _check_regular(full)
        size += os.path.getsize(full)
        h.update(folder_entry(rel, file_sha256(full)))
    return size, h.hexdigest()


def folder_entry(rel: str, file_digest: str) -> bytes:
    """What one file adds to its folder's SHA-256 (stores that hash remote folders use it too)."""
    return rel.encode() + b"\0" + file_digest.encode() + b"\n"


_SPECIAL = {
    stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}  # fmt: skip


def _check_regular(path: str) -> None:
    kind = _SPECIAL.get(stat.S_IFMT(os.stat(path).st_mode))
    if kind:  # reading one gives nothing, never ends, or blocks
        raise ArtifactError(
            f"{path!r} is {kind}, not a file or a folder: it has no contents to record "
            "(write what it gives to a file, and add that)"
        )


def file_sha256(path: str) -> str:
    """SHA-256 of a file's contents, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            out.append(os.path.relpath(os.path.join(root, name), folder))
    return out


class LocalArtifactStore(ArtifactStore):
    """Records files and folders on this machine where they are (no copy)."""

    name = "local"

    def put(self, experiment: ExperimentInfo, name: str, path: str) -> StoredFile:
        full = os.path.abspath(os.path.expanduser(path))
        if not os.path.exists(full):
            raise ArtifactError(
                f"artifact {name!r}: {path!r} does not exist; write the file first, then add it"
            )
        try:
            size, sha = digest(full)
        except OSError as exc:
            raise ArtifactError(f"artifact {name!r}: cannot read {path!r}: {exc}") from None
        except ArtifactError as exc:
            raise ArtifactError(f"artifact {name!r}: {exc}") from None
        return StoredFile(full, size, sha)

    def get(self, artifact: Artifact, dest: str | None = None) -> str:
        if not os.path.exists(artifact.path):
            raise ArtifactError(f"artifact {artifact.name!r}: {artifact.path!r} no longer exists")
        if dest is None:
            return artifact.path
        if os.path.isdir(artifact.path):
            shutil.copytree(artifact.path, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(artifact.path, dest)
        return dest

    def list(self, artifact: Artifact) -> list[str]:
        if os.path.isdir(artifact.path):
            return _files(artifact.path)
        return [""] if os.path.exists(artifact.path) else []
