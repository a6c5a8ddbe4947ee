"""Shipping the user's code to where tasks run (a cluster node, a container).

Remote backends share this: they ask for a :class:`CodePackage`, copy its tarball once per
experiment, unpack it into the job's code folder, and relocate the task's paths into it.

``code`` (an executor field of remote executors) says what to ship:

- ``"git"`` (default): the git work tree holding the experiment's working directory, as
  it is now: every tracked file and every untracked file git does not ignore, so HEAD plus
  the uncommitted changes (deleted files stay deleted). Outside a git work tree, nothing.
- a directory path: that directory as it is (without ``.git``, ``__pycache__``, ``.venv``).
- ``None``: nothing; the code must already be where the task runs.

Tarballs are deterministic (sorted names, zero mtimes, no owners), so the same code gives
the same SHA-256 and is shipped once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable

import attrs

from runyard.errors import ConfigError

SKIP_DIRS = {".git", "__pycache__", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


@attrs.frozen
class CodePackage:
    """A tarball of the user's code.

    ``root`` is the local folder it was made from, ``cwd`` the working directory relative
    to it (tasks start there, relocated), ``commit``/``dirty`` the git state if any.
    """

    path: str
    sha256: str
    root: str
    cwd: str
    kind: str  # "git" or "dir"
    commit: str | None = None
    dirty: bool = False

    def relocate(self, path: str, remote_root: str) -> str:
        """``path`` (local, absolute) inside ``remote_root`` if it lies in the package; as is otherwise."""
        rel = os.path.relpath(os.path.abspath(path), self.root)
        if rel == os.curdir:
            return remote_root
        if rel.startswith(os.pardir + os.sep) or rel == os.pardir or os.path.isabs(rel):
            return path
        return remote_root.rstrip("/") + "/" + rel.replace(os.sep, "/")


def relocated_pythonpath(
    package: CodePackage | None, env_pythonpath: str | None, cwd: str | None, remote_root: str
) -> list[str]:
    """Entries of the launching process's ``PYTHONPATH`` (relative ones from ``cwd``) that lie
    in the shipped code, as paths in ``remote_root``: what imports here imports where the job runs."""
    if package is None or not env_pythonpath:
        return []
    out = []
    for entry in env_pythonpath.split(os.pathsep):
        if not entry:
            continue
        path = os.path.normpath(os.path.join(cwd or os.getcwd(), entry))
        moved = package.relocate(path, remote_root)
        if moved != path and moved not in out:
            out.append(moved)
    return out


def _git(args: list[str], cwd: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode() if out.returncode == 0 else None


def _git_files(root: str) -> list[str]:
    listing = _git(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], root) or ""
    names = sorted({n for n in listing.split("\0") if n})
    return [n for n in names if os.path.lexists(os.path.join(root, n))]


def _dir_files(root: str) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            out.append(os.path.relpath(os.path.join(folder, name), root))
    return out


def _tarball(root: str, names: Iterable[str], dest_dir: str) -> tuple[str, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            full = os.path.join(root, name)
            info = tar.gettarinfo(full, arcname=name.replace(os.sep, "/"))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            elif info.issym() or info.isdir():
                tar.addfile(info)
    data = gzip.compress(buf.getvalue(), mtime=0)
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(dest_dir, exist_ok=True)
    path = os.path.join(dest_dir, f"code-{digest[:16]}.tar.gz")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".code-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path, digest


def package_code(code: str | None, cwd: str, dest_dir: str) -> CodePackage | None:
    """Make (or reuse) the tarball ``code`` asks for; None when there is nothing to ship."""
    if code is None:
        return None
    if code == "git":
        top = _git(["rev-parse", "--show-toplevel"], cwd)
        if top is None:
            return None
        root = top.strip()
        path, digest = _tarball(root, _git_files(root), dest_dir)
        commit = _git(["rev-parse", "HEAD"], root)
        status = _git(["status", "--porcelain"], root) or ""
        return CodePackage(
            path, digest, root, os.path.relpath(cwd, root), "git",
            commit.strip() if commit else None, bool(status.strip()),
        )  # fmt: skip
    root = os.path.abspath(os.path.expanduser(code))
    if not os.path.isdir(root):
        raise ConfigError(f"code={code!r}: no such directory; give 'git', a directory, or None")
    path, digest = _tarball(root, _dir_files(root), dest_dir)
    rel = os.path.relpath(cwd, root)
    return CodePackage(path, digest, root, rel if not rel.startswith(os.pardir) else os.curdir, "dir")
