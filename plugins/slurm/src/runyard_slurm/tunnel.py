"""Sessions: commands and files on a cluster's login side, over SSH or on this machine.

A :class:`Session` runs one-line POSIX shell commands (under ``/bin/sh -c``, whatever the
user's login shell is) and reads and writes files. :class:`SSHSession` does both over one
paramiko connection per host, kept alive, shared by every executor, experiment, log source
and artifact store of this process (:func:`session_for`). Every operation is safe to repeat
(submission included: see ``sbatch.submit_command``), so when the connection drops it is
opened again and the operation retried, with backoff, for ``SSHTunnel.retry_for`` seconds;
only then does it fail, with a ``BackendError`` (the driver takes that as "no news": a task
is never marked FAILED because the cluster could not be reached for a while).

Host keys are checked against known_hosts; an unknown host is refused unless
``trust_new_host`` is set (then its key is appended to known_hosts). Wrong host keys, a
refused login and unknown host names fail at once: retrying cannot fix them.
"""

from __future__ import annotations

import abc
import errno
import getpass
import os
import shlex
import socket
import stat
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs
from runyard.errors import BackendError

from runyard_slurm.executor import LocalTunnel, SSHTunnel

if TYPE_CHECKING:
    import paramiko

COMMAND_TIMEOUT = 300.0  # seconds a remote command may run (sbatch of a large batch included)
_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 8.0


@attrs.frozen
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stderr and stdout, one line, for error messages."""
        return " ".join((self.stderr + " " + self.stdout).split())


@attrs.frozen
class FileInfo:
    name: str
    size: int
    mtime: float
    is_dir: bool


class Session(abc.ABC):
    """Commands and files where Slurm is. ``commands`` counts the commands run (one
    ``run`` is one round trip), ``connects`` the connections opened."""

    def __init__(self) -> None:
        self.commands = 0
        self.connects = 0
        self._home: str | None = None

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """``user@host:port`` (or ``this machine``), for messages."""

    @abc.abstractmethod
    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> CommandResult:
        """Run a one-line POSIX shell command; its exit code and output."""

    @abc.abstractmethod
    def read(self, path: str, offset: int = 0) -> bytes:
        """Bytes of a file from ``offset``; ``b""`` when it does not exist."""

    @abc.abstractmethod
    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file atomically (its folder must exist)."""

    @abc.abstractmethod
    def stat(self, path: str) -> FileInfo | None:
        """Size, mtime and kind of a path, or None if it does not exist."""

    @abc.abstractmethod
    def listdir(self, path: str) -> list[FileInfo]:
        """Entries of a folder."""

    @abc.abstractmethod
    def download(self, path: str, local_path: str) -> None:
        """Copy a file to this machine."""

    @abc.abstractmethod
    def upload(self, local_path: str, path: str) -> None:
        """Copy a file of this machine there."""

    @abc.abstractmethod
    def _home_dir(self) -> str: ...

    def home(self) -> str:
        """The user's home folder there (cached)."""
        if self._home is None:
            self._home = self._home_dir()
        return self._home

    def resolve(self, path: str) -> str:
        """``path`` made absolute there: ``~`` and relative paths start at the home folder."""
        if path == "~":
            return self.home()
        if path.startswith("~/"):
            return self.home().rstrip("/") + "/" + path[2:]
        if not path.startswith("/"):
            return self.home().rstrip("/") + "/" + path
        return path

    def close(self) -> None:
        return None


# ------------------------------------------------------------------------------ this machine
class LocalSession(Session):
    """Slurm on this machine: commands are subprocesses, files are local files."""

    @property
    def where(self) -> str:
        return "this machine"

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> CommandResult:
        self.commands += 1
        try:
            done = subprocess.run(
                ["/bin/sh", "-c", command], input=stdin or b"", capture_output=True, timeout=timeout,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BackendError(f"a Slurm command on this machine took more than {timeout:.0f}s") from None
        except OSError as exc:
            raise BackendError(f"cannot run /bin/sh on this machine: {exc}") from None
        return CommandResult(
            done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        )

    def read(self, path: str, offset: int = 0) -> bytes:
        try:
            with open(path, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc}") from None

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def stat(self, path: str) -> FileInfo | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return FileInfo(os.path.basename(path), st.st_size, st.st_mtime, stat.S_ISDIR(st.st_mode))

    def listdir(self, path: str) -> list[FileInfo]:
        out = []
        for name in sorted(os.listdir(path)):
            info = self.stat(os.path.join(path, name))
            if info is not None:
                out.append(FileInfo(name, info.size, info.mtime, info.is_dir))
        return out

    def download(self, path: str, local_path: str) -> None:
        import shutil

        shutil.copyfile(path, local_path)

    def upload(self, local_path: str, path: str) -> None:
        import shutil

        shutil.copyfile(local_path, path)

    def _home_dir(self) -> str:
        return os.path.expanduser("~")


# ------------------------------------------------------------------------------ SSH
class _Permanent(BackendError):
    """A connection failure that retrying cannot fix (host key, login, host name)."""


def _is_transient(exc: BaseException) -> bool:
    import paramiko

    if isinstance(exc, _Permanent):
        return False
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException)):
        return False
    if isinstance(exc, (EOFError, ConnectionError, socket.timeout, paramiko.SSHException)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (None, errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN,
                             errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.ECONNREFUSED)  # fmt: skip
    return False


class _AcceptNewHost:
    """Host key policy of ``trust_new_host``: record an unknown host's key in known_hosts."""

    def __init__(self, path: str) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class SSHSession(Session):
    """One paramiko connection to a login node, opened on first use and kept alive."""

    def __init__(self, tunnel: SSHTunnel) -> None:
        super().__init__()
        self.tunnel = tunnel
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()  # the connection
        self._sftp_lock = threading.RLock()  # paramiko's SFTP client is not thread-safe

    @property
    def where(self) -> str:
        t = self.tunnel
        return f"{t.user or getpass.getuser()}@{t.host}:{t.port}"

    # --- connecting ---------------------------------------------------------------------
    def _known_hosts(self) -> str:
        return os.path.expanduser(self.tunnel.known_hosts or os.path.join("~", ".ssh", "known_hosts"))

    def _connect_once(self) -> paramiko.SSHClient:
        import paramiko

        t = self.tunnel
        known_hosts = self._known_hosts()
        client = paramiko.SSHClient()
        if os.path.exists(known_hosts):
            try:
                client.load_host_keys(known_hosts)
            except (OSError, paramiko.SSHException) as exc:
                raise _Permanent(f"cannot read known_hosts file {known_hosts}: {exc}") from None
        if t.trust_new_host:
            client.set_missing_host_key_policy(_AcceptNewHost(known_hosts))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        identity = os.path.expanduser(t.identity) if t.identity else None
        if identity is not None and not os.path.isfile(identity):
            raise _Permanent(f"SSH key file {identity} (SSHTunnel.identity) does not exist")
        try:
            client.connect(
                t.host, port=t.port, username=t.user or getpass.getuser(), key_filename=identity,
                allow_agent=identity is None, look_for_keys=identity is None, timeout=t.connect_timeout,
                banner_timeout=t.connect_timeout, auth_timeout=t.connect_timeout,
            )  # fmt: skip
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise _Permanent(
                f"the host key of {self.where} does not match the one in {known_hosts} "
                f"(got {exc.key.get_name()} {exc.key.get_fingerprint().hex()}): refusing to connect. "
                "If the server's key really changed, remove the old entry "
                f"(ssh-keygen -R '[{t.host}]:{t.port}' -f {known_hosts}) and connect again"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            how = f"key {identity}" if identity else "ssh-agent and ~/.ssh/id_* keys"
            raise _Permanent(
                f"SSH login to {self.where} was refused with {how}: {exc or type(exc).__name__}; "
                "check SSHTunnel.identity / RUNYARD_SLURM_KEY and the server's authorized_keys"
            ) from None
        except socket.gaierror as exc:
            client.close()
            raise _Permanent(f"cannot resolve host name {t.host!r}: {exc}") from None
        except paramiko.SSHException as exc:
            client.close()
            if "known_hosts" in str(exc):
                raise _Permanent(
                    f"host {self.where} is not in {known_hosts}: refusing to connect to an unknown "
                    f"host. Add its key (ssh-keyscan -p {t.port} {t.host} >> {known_hosts}, after "
                    "checking it), or pass trust_new_host=True / RUNYARD_SLURM_TRUST_NEW_HOST=1"
                ) from None
            raise
        except Exception:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None and t.keepalive:
            transport.set_keepalive(max(1, int(t.keepalive)))
        self.connects += 1
        return client

    def _connected(self) -> paramiko.SSHClient:
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if client is None or transport is None or not transport.is_active():
                self._drop()
                client = self._client = self._connect_once()
            return client

    def _drop(self) -> None:
        with self._lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:  # noqa: S110  closing a dead channel may fail: nothing to do
                    pass
            if self._client is not None:
                self._client.close()
            self._sftp = None
            self._client = None

    def _sftp_client(self) -> paramiko.SFTPClient:
        client = self._connected()
        with self._lock:
            if self._sftp is None:
                self._sftp = client.open_sftp()
            return self._sftp

    def _retrying(self, what: str, op: Any) -> Any:
        """``op()``; on a dropped or refused connection, reconnect and retry with backoff."""
        deadline = time.monotonic() + self.tunnel.retry_for
        delay = _BACKOFF_FIRST
        while True:
            try:
                return op()
            except Exception as exc:
                if not _is_transient(exc):
                    if isinstance(exc, BackendError):
                        raise
                    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
                        raise BackendError(f"{what} on {self.where}: {exc}") from None  # e.g. permission
                    raise
                self._drop()
                if time.monotonic() + delay > deadline:
                    raise BackendError(
                        f"cannot reach {self.where} ({type(exc).__name__}: {exc or 'connection lost'}) "
                        f"while {what}; retried for {self.tunnel.retry_for:g}s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    def close(self) -> None:
        self._drop()

    # --- commands -------------------------------------------------------------------------
    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> CommandResult:
        if "\n" in command:
            raise ValueError("remote commands are one line")  # the login shell may be csh

        def op() -> CommandResult:
            client = self._connected()
            transport = client.get_transport()
            assert transport is not None
            channel = transport.open_session(timeout=self.tunnel.connect_timeout)
            try:
                channel.settimeout(timeout)
                channel.exec_command("/bin/sh -c " + shlex.quote(command))
                if stdin:
                    channel.sendall(stdin)
                channel.shutdown_write()
                try:
                    out = channel.makefile("rb").read()
                    err = channel.makefile_stderr("rb").read()
                except TimeoutError:
                    raise BackendError(
                        f"a Slurm command on {self.where} took more than {timeout:.0f}s"
                    ) from None
                code = channel.recv_exit_status()
                if code == -1:  # the channel closed without an exit status: connection lost
                    raise EOFError("connection closed during a command")
            finally:
                channel.close()
            return CommandResult(code, out.decode(errors="replace"), err.decode(errors="replace"))

        self.commands += 1
        result: CommandResult = self._retrying("running a command", op)
        return result

    # --- files ----------------------------------------------------------------------------
    def _file_op(self, what: str, fn: Any) -> Any:
        def op() -> Any:
            sftp = self._sftp_client()
            with self._sftp_lock:
                return fn(sftp)

        return self._retrying(what, op)

    def read(self, path: str, offset: int = 0) -> bytes:
        def fn(sftp: paramiko.SFTPClient) -> bytes:
            try:
                f = sftp.open(path, "rb")
            except FileNotFoundError:
                return b""
            with f:
                size = f.stat().st_size or 0
                if size <= offset:
                    return b""
                if offset:
                    f.seek(offset)
                if size - offset > 65536:
                    f.prefetch(size - offset)
                data: bytes = f.read(size - offset)
                return data

        data: bytes = self._file_op(f"reading {path}", fn)
        return data

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        def fn(sftp: paramiko.SFTPClient) -> None:
            tmp = f"{path}.{os.getpid()}.tmp"
            with sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
            sftp.chmod(tmp, mode)
            try:
                sftp.posix_rename(tmp, path)
            except OSError:
                sftp.rename(tmp, path)

        self._file_op(f"writing {path}", fn)

    def stat(self, path: str) -> FileInfo | None:
        def fn(sftp: paramiko.SFTPClient) -> FileInfo | None:
            try:
                st = sftp.stat(path)
            except FileNotFoundError:
                return None
            return FileInfo(os.path.basename(path), st.st_size or 0, float(st.st_mtime or 0),
                            stat.S_ISDIR(st.st_mode or 0))  # fmt: skip

        info: FileInfo | None = self._file_op(f"reading {path}", fn)
        return info

    def listdir(self, path: str) -> list[FileInfo]:
        def fn(sftp: paramiko.SFTPClient) -> list[FileInfo]:
            return sorted(
                (FileInfo(a.filename, a.st_size or 0, float(a.st_mtime or 0), stat.S_ISDIR(a.st_mode or 0))
                 for a in sftp.listdir_attr(path)),
                key=lambda i: i.name,
            )  # fmt: skip

        entries: list[FileInfo] = self._file_op(f"listing {path}", fn)
        return entries

    def download(self, path: str, local_path: str) -> None:
        self._file_op(f"downloading {path}", lambda sftp: sftp.get(path, local_path))

    def upload(self, local_path: str, path: str) -> None:
        self._file_op(f"uploading to {path}", lambda sftp: sftp.put(local_path, path, confirm=True))

    def _home_dir(self) -> str:
        home: str = self._file_op("finding the home folder", lambda sftp: sftp.normalize("."))
        return home


# ------------------------------------------------------------------------------ the pool
_sessions: dict[tuple[Any, ...], Session] = {}
_pool_lock = threading.Lock()


def pool_key(tunnel: SSHTunnel | LocalTunnel) -> tuple[Any, ...]:
    """What identifies a connection: every tunnel field but ``job_dir``."""
    if isinstance(tunnel, LocalTunnel):
        return ("local",)
    # everything but job_dir: executors with different job folders share the connection
    return tuple(v for k, v in attrs.asdict(tunnel).items() if k != "job_dir")


def session_for(tunnel: SSHTunnel | LocalTunnel) -> Session:
    """This process's session for ``tunnel``'s host: one connection per host, reused."""
    key = pool_key(tunnel)
    with _pool_lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = (
                LocalSession() if isinstance(tunnel, LocalTunnel) else SSHSession(tunnel)
            )
        return session


def close_sessions() -> None:
    """Close every connection of this process (they reopen on next use)."""
    with _pool_lock:
        sessions = list(_sessions.values())
        _sessions.clear()
    for session in sessions:
        try:
            session.close()
        except Exception:  # noqa: S110  closing must not raise
            pass
