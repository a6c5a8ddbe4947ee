"""``SlurmArtifactStore`` (``store="slurm"``): artifacts that live on the cluster.

``exp.add_artifact(name, path, store="slurm")`` records a file or folder where it is, on
the cluster, with its size and SHA-256 computed there (nothing is copied). ``path`` is:

- ``ssh://user@host:port/abs/path``: that path on that host;
- an absolute path: on the cluster the experiment's Slurm tasks ran on (the default
  cluster when they ran on none, or on several);
- a relative path: inside the experiment's folder on that cluster
  (``<job_dir>/<experiment id>/``, so ``tasks/train/model.pt``).

The artifact's recorded ``path`` is the ``ssh://`` address (a plain path for a
``LocalTunnel``). ``exp.fetch_artifact(name, dest)`` downloads it over SFTP (into
``$RUNYARD_HOME/cache/slurm-artifacts`` when no ``dest`` is given) and checks that a
file's SHA-256 is still the recorded one.

The SHA-256 of a folder is over its files' relative paths and SHA-256s, in sorted order.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from urllib.parse import urlsplit

from runyard.artifacts import Artifact, ArtifactStore, ExperimentInfo, StoredFile, file_sha256, folder_entry
from runyard.errors import ArtifactError, BackendError

from runyard_slurm.config import load_defaults
from runyard_slurm.executor import LocalTunnel, SlurmExecutor, SSHTunnel, default_tunnel
from runyard_slurm.layout import layout
from runyard_slurm.tunnel import Session, session_for


def _address(tunnel: SSHTunnel | LocalTunnel, path: str) -> str:
    if isinstance(tunnel, LocalTunnel):
        return path
    port = f":{tunnel.port}" if tunnel.port is not None else ""  # None: the SSH config's, else 22
    return f"ssh://{tunnel.user + '@' if tunnel.user else ''}{tunnel.host}{port}{path}"


def _tunnel_for_address(address: str) -> tuple[SSHTunnel | LocalTunnel, str]:
    """The tunnel and the path of a recorded address."""
    if not address.startswith("ssh://"):
        return LocalTunnel(), address
    parts = urlsplit(address)
    host, port, user = parts.hostname or "", parts.port, parts.username
    default = default_tunnel()
    if isinstance(default, SSHTunnel) and (default.host, default.port, default.user) == (host, port, user):
        return default, parts.path
    d = load_defaults()
    return SSHTunnel(host=host, user=user, port=port, identity=d.identity, known_hosts=d.known_hosts,
                     trust_new_host=d.trust_new_host, ssh_config=d.ssh_config), parts.path  # fmt: skip


def _experiment_tunnel(experiment: ExperimentInfo) -> SSHTunnel | LocalTunnel:
    """The cluster the experiment's Slurm tasks ran on, if exactly one; else the default."""
    tunnels = {
        e.tunnel.cluster(): e.tunnel
        for e in experiment.executors
        if isinstance(e, SlurmExecutor) and e.tunnel is not None
    }
    return next(iter(tunnels.values())) if len(tunnels) == 1 else default_tunnel()


def _digest(session: Session, path: str, name: str) -> tuple[int, str, bool]:
    """Size, SHA-256 and whether it is a folder, computed on the cluster."""
    info = session.stat(path)
    if info is None:
        raise ArtifactError(
            f"artifact {name!r}: {path} does not exist on {session.where}; write the file first, then add it"
        )
    q = shlex.quote(path)
    if not info.is_dir:
        done = session.run(f"sha256sum < {q}")
        if done.exit_code != 0:
            raise ArtifactError(f"artifact {name!r}: cannot read {path} on {session.where}: {done.output}")
        return info.size, done.stdout.split()[0], False
    done = session.run(
        f'cd {q} && L=$(mktemp) && find . -type f -print0 | LC_ALL=C sort -z >"$L" && '
        'xargs -0 -r sha256sum <"$L" && echo @@ && xargs -0 -r stat -c %s <"$L"; r=$?; rm -f "$L"; exit $r'
    )
    if done.exit_code != 0:
        raise ArtifactError(f"artifact {name!r}: cannot read folder {path} on {session.where}: {done.output}")
    sums, _, sizes = done.stdout.partition("@@\n")
    h = hashlib.sha256()
    for line in sums.splitlines():
        digest, _, rel = line.partition("  ")
        h.update(folder_entry(rel.removeprefix("./"), digest.lstrip("\\")))
    size = sum(int(s) for s in sizes.split() if s.isdigit())
    return size, h.hexdigest(), True


class SlurmArtifactStore(ArtifactStore):
    """Records, lists and fetches artifacts on a Slurm cluster (see the module docstring)."""

    name = "slurm"

    def put(self, experiment: ExperimentInfo, name: str, path: str) -> StoredFile:
        try:
            if path.startswith("ssh://"):
                tunnel, remote = _tunnel_for_address(path)
            else:
                tunnel = _experiment_tunnel(experiment)
                remote = path
            session = session_for(tunnel)
            if not remote.startswith("/"):
                where = layout(session, tunnel)
                remote = f"{where.experiment_dir(experiment.id)}/{remote}"
            remote = os.path.normpath(remote)
            size, sha, _ = _digest(session, remote, name)
        except BackendError as exc:
            raise ArtifactError(f"artifact {name!r}: {exc}") from None
        return StoredFile(_address(tunnel, remote), size, sha)

    def get(self, artifact: Artifact, dest: str | None = None) -> str:
        tunnel, remote = _tunnel_for_address(artifact.path)
        session = session_for(tunnel)
        if dest is None:
            home = os.path.expanduser(os.environ.get("RUNYARD_HOME") or os.path.join("~", ".runyard"))
            folder = os.path.join(home, "cache", "slurm-artifacts", artifact.sha256[:16])
            dest = os.path.join(folder, os.path.basename(remote.rstrip("/")) or artifact.name)
        try:
            info = session.stat(remote)
            if info is None:
                raise ArtifactError(f"artifact {artifact.name!r}: {artifact.path} no longer exists")
            if info.is_dir:
                self._download_tree(session, remote, dest)
            else:
                os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
                tmp = dest + ".part"
                session.download(remote, tmp)
                got = file_sha256(tmp)
                if got != artifact.sha256:
                    os.remove(tmp)
                    raise ArtifactError(
                        f"artifact {artifact.name!r}: {artifact.path} has changed since it was recorded "
                        f"(SHA-256 {got[:12]}..., recorded {artifact.sha256[:12]}...)"
                    )
                os.replace(tmp, dest)
        except BackendError as exc:
            raise ArtifactError(f"artifact {artifact.name!r}: {exc}") from None
        return dest

    def _download_tree(self, session: Session, remote: str, dest: str) -> None:
        os.makedirs(dest, exist_ok=True)
        for entry in session.listdir(remote):
            source, target = f"{remote}/{entry.name}", os.path.join(dest, entry.name)
            if entry.is_dir:
                self._download_tree(session, source, target)
            else:
                session.download(source, target)

    def list(self, artifact: Artifact) -> list[str]:
        tunnel, remote = _tunnel_for_address(artifact.path)
        session = session_for(tunnel)
        try:
            info = session.stat(remote)
            if info is None:
                return []
            if not info.is_dir:
                return [""]
            done = session.run(f"cd {shlex.quote(remote)} && find . -type f | LC_ALL=C sort")
        except BackendError as exc:
            raise ArtifactError(f"artifact {artifact.name!r}: {exc}") from None
        return [line.removeprefix("./") for line in done.stdout.splitlines() if line]
