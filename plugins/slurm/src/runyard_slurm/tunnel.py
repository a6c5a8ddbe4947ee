"""Sessions: commands and files on a cluster's login side, over SSH or on this machine.

A :class:`Session` runs one-line POSIX shell commands (under ``/bin/sh -c``, whatever the
user's login shell is) and reads and writes files. :class:`SSHSession` does both over one
paramiko connection per host, kept alive, shared by every executor, experiment, log source
and artifact store of this process (:func:`session_for`). Every operation is safe to repeat
(submission included: see ``sbatch.submit_command``), so when the connection drops it is
opened again and the operation retried, with backoff, for ``SSHTunnel.retry_for`` seconds
(:meth:`Session.patience`: fewer, for a read a person waits on); only then does it fail, with
an ``UnreachableError`` (core takes that as "no news": a task is never marked FAILED because
the cluster could not be reached for a while). The session then remembers the outage: until
the cluster answers again, each operation fails at once with an ``UnreachableError`` naming
the time it began, and a new connection is tried at most every ``_OUTAGE_RETRY_MAX`` seconds.

A peer that stops answering without closing the connection (a network that swallows
packets) is found by a watchdog: a keepalive that asks for a reply, every
``SSHTunnel.keepalive`` seconds on an idle connection and every ``dead_after / 2`` seconds
while an operation waits on it; one left unanswered for ``SSHTunnel.dead_after`` seconds
closes the connection, which wakes every operation waiting on it (they retry as above).

Where the connection goes comes from the tunnel's fields and the user's OpenSSH config
(``sshconfig.py``: ``Host`` aliases, ``HostName``, ``User``, ``Port``, ``IdentityFile``,
``ProxyJump``). Through jump hosts, each hop is a paramiko client whose socket is a
``direct-tcpip`` channel of the hop before it; the watchdog watches the last one (the login
node's), whose keepalives cross every hop, so a jump host that goes away or swallows packets
is found like a login node that does, and the whole chain is opened again.

Host keys are checked against known_hosts, at every hop; an unknown host is refused unless
``trust_new_host`` is set (then its key is appended to known_hosts). Wrong host keys, a
refused login, unknown host names, a jump host that may not forward and an unusable SSH config
fail at once, with a ``BackendError`` that says what to fix and which hop (never an
``UnreachableError``): retrying cannot fix them.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import getpass
import logging
import os
import shlex
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
from runyard.errors import BackendError, BackendRefusedError, UnreachableError

from runyard_slurm.executor import LocalTunnel, SSHTunnel
from runyard_slurm.sshconfig import Hop, Route, resolve_route

if TYPE_CHECKING:
    import paramiko

COMMAND_TIMEOUT = 300.0  # seconds a remote command may run (sbatch of a large batch included)
_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 8.0
_OUTAGE_RETRY_FIRST = 1.0  # during a known outage: seconds until the first new connection attempt,
_OUTAGE_RETRY_MAX = 5.0  # doubling up to this
_PROBE = "keepalive@openssh.com"  # a global request any sshd answers (with "unknown request")
_OPEN_ADMINISTRATIVELY_PROHIBITED = 1  # a direct-tcpip channel refused by the jump host's sshd config

# paramiko logs a failed connection's traceback from its own thread; the errors raised here say it
logging.getLogger("paramiko").addHandler(logging.NullHandler())


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
        self._local = threading.local()  # this thread's patience (see patience())

    @contextlib.contextmanager
    def patience(self, seconds: float) -> Iterator[None]:
        """Operations of this thread inside the block give up on an unreachable cluster after
        ``seconds`` (when less than the tunnel's ``retry_for``): for reads a person waits on."""
        before = getattr(self._local, "patience", None)
        self._local.patience = seconds if before is None else min(before, seconds)
        try:
            yield
        finally:
            self._local.patience = before

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
class _Permanent(BackendRefusedError):
    """A connection failure that retrying cannot fix (host key, login, host name)."""


def _is_transient(exc: BaseException) -> bool:
    import paramiko

    if isinstance(exc, BackendRefusedError):  # _Permanent, SSHConfigError
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
        self._client: paramiko.SSHClient | None = None  # the login node's
        self._jumps: list[paramiko.SSHClient] = []  # the jump hosts' on the way, first opened first
        self._route: Route | None = None  # where the last connection went (resolved then)
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()  # the connection
        self._sftp_lock = threading.RLock()  # paramiko's SFTP client is not thread-safe
        self._watch_stop: threading.Event | None = None  # set: the watchdog of the connection ends
        self._dead_peer = ""  # why the watchdog closed the connection, if it did
        self._busy = 0  # operations waiting on the connection now
        self._busy_changed = threading.Condition()
        # the outage, if the cluster could not be reached lately: since when (unix time), why,
        # and when (monotonic) a new connection may be tried
        self._outage_lock = threading.Lock()
        self._down_since: float | None = None
        self._down_why = ""
        self._retry_at = 0.0
        self._retry_delay = _OUTAGE_RETRY_FIRST

    @property
    def where(self) -> str:
        """``user@host:port`` of the login node (and ``via`` the jump hosts), as last resolved."""
        if self._route is not None:
            return self._route.where
        t = self.tunnel
        return f"{t.user or getpass.getuser()}@{t.host}:{t.port or 22}"

    # --- connecting ---------------------------------------------------------------------
    def _known_hosts(self) -> str:
        return os.path.expanduser(self.tunnel.known_hosts or os.path.join("~", ".ssh", "known_hosts"))

    def _connect_once(self, timeout: float) -> paramiko.SSHClient:
        """Resolve the route (the SSH config is read again), open each jump host's connection
        through the one before, then the login node's through the last; start the watchdog."""
        route = self._route = resolve_route(self.tunnel)
        opened: list[paramiko.SSHClient] = []
        sock: paramiko.Channel | None = None
        try:
            for index, hop in enumerate(route.jumps):
                client = self._login(route, hop, index, timeout, sock)
                opened.append(client)
                following = route.jumps[index + 1] if index + 1 < len(route.jumps) else route.target
                sock = self._forward(route, index, client, following, timeout)
            client = self._login(route, route.target, None, timeout, sock)
        except BaseException:
            for jump in reversed(opened):
                jump.close()
            raise
        self._jumps = opened
        transport = client.get_transport()
        t = self.tunnel
        if transport is not None and (t.keepalive or t.dead_after):
            self._watch_stop = threading.Event()
            threading.Thread(
                target=self._watch, args=(transport, self._watch_stop), name=f"runyard-ssh-watch {self.where}",
                daemon=True,
            ).start()  # fmt: skip
        self.connects += 1
        return client

    def _label(self, route: Route, index: int | None) -> str:
        """The hop, for messages: the login node (``index`` None) or jump host ``index``."""
        return self.where if index is None else route.jump_label(index, self.tunnel.host)

    def _login(
        self, route: Route, hop: Hop, index: int | None, timeout: float, sock: paramiko.Channel | None
    ) -> paramiko.SSHClient:
        """An authenticated client of one hop (``index``: the jump host's, None: the login
        node's), over ``sock`` (a channel of the hop before) or a TCP connection of its own."""
        import paramiko

        t = self.tunnel
        known_hosts = self._known_hosts()
        label = self._label(route, index)
        behind = route.jumps[:index] if index is not None else route.jumps  # the hops it is reached through
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
        if hop.keys_from == "SSHTunnel.identity" and index is None and not os.path.isfile(hop.key_files[0]):
            raise _Permanent(f"SSH key file {hop.key_files[0]} (SSHTunnel.identity) does not exist")
        try:
            client.connect(
                hop.host, port=hop.port, username=hop.user, key_filename=list(hop.key_files) or None,
                allow_agent=hop.agent, look_for_keys=hop.default_keys, timeout=timeout,
                banner_timeout=timeout, auth_timeout=timeout, sock=sock,
            )  # fmt: skip
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise _Permanent(
                f"the host key of {label} does not match the one in {known_hosts} "
                f"(got {exc.key.get_name()} {exc.key.get_fingerprint().hex()}): refusing to connect. "
                "If the server's key really changed, remove the old entry "
                f"(ssh-keygen -R '{hop.known_hosts_name}' -f {known_hosts}) and connect again"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            if hop.key_files and not hop.agent:
                how = f"key {', '.join(hop.key_files)}"
            elif hop.key_files:
                how = f"key {', '.join(hop.key_files)}, ssh-agent" + (
                    " and ~/.ssh/id_* keys" if hop.default_keys else ""
                )
            else:
                how = "ssh-agent and ~/.ssh/id_* keys"
            check = (
                f"check the {hop.keys_from}" if hop.keys_from.startswith("IdentityFile")
                else "check SSHTunnel.identity / RUNYARD_SLURM_KEY"
            )  # fmt: skip
            raise _Permanent(
                f"SSH login to {label} was refused with {how}: {exc or type(exc).__name__}; "
                f"{check} and the server's authorized_keys"
            ) from None
        except socket.gaierror as exc:
            client.close()
            raise _Permanent(self._unknown_name(route, hop, index, exc)) from None
        except paramiko.SSHException as exc:
            client.close()
            if "known_hosts" in str(exc):
                if behind:
                    jumps = ",".join(j.spec for j in behind)
                    add = (
                        "It is reached through a jump host, so ssh-keyscan cannot reach it from here: log "
                        f"in once with OpenSSH (ssh -o UserKnownHostsFile={shlex.quote(known_hosts)} -J {jumps} "
                        f"-p {hop.port} {hop.user}@{hop.host}) after checking the key it shows"
                    )
                else:
                    add = f"Add its key (ssh-keyscan -p {hop.port} {hop.host} >> {known_hosts}, after checking it)"
                raise _Permanent(
                    f"host {label} is not in {known_hosts}: refusing to connect to an unknown host. {add}, "
                    "or pass trust_new_host=True / RUNYARD_SLURM_TRUST_NEW_HOST=1"
                ) from None
            raise
        except Exception:
            client.close()
            raise
        return client

    def _unknown_name(self, route: Route, hop: Hop, index: int | None, exc: socket.gaierror) -> str:
        t = self.tunnel
        said = f"cannot resolve host name {hop.host!r}"
        if index is None:
            if route.config is not None and hop.host == t.host:
                return f"{said}: it is no Host alias in {route.config} and DNS does not know it ({exc})"
            if route.config is not None:
                return f"{said} (HostName of {t.host!r} in {route.config}): {exc}"
            return f"{said}: {exc}"
        where = f" in {route.config}" if route.config is not None else ""
        if hop.host == hop.name:
            return (
                f"{said}, a jump host in the ProxyJump of {t.host!r}{where}: it is no Host alias there and "
                f"DNS does not know it ({exc})"
            )
        return (
            f"{said} (HostName of the jump host {hop.name!r}{where}, in the ProxyJump of {t.host!r}): {exc}"
        )

    def _forward(
        self, route: Route, index: int, client: paramiko.SSHClient, following: Hop, timeout: float
    ) -> paramiko.Channel:
        """A channel from jump host ``index`` to the next hop: the next hop's socket."""
        import paramiko

        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise EOFError("the jump host's connection closed")
        destination = f"{following.host}:{following.port}"
        try:
            channel: paramiko.Channel = transport.open_channel(
                "direct-tcpip", (following.host, following.port), ("127.0.0.1", 0), timeout=timeout
            )
        except paramiko.ChannelException as exc:
            if exc.code == _OPEN_ADMINISTRATIVELY_PROHIBITED:
                raise _Permanent(
                    f"{route.jump_label(index, self.tunnel.host)} refuses to forward a connection to "
                    f"{destination} ({exc.text}): its sshd's AllowTcpForwarding or PermitOpen forbids it; "
                    "check the ProxyJump and HostName in the SSH config, or ask the jump host's admins"
                ) from None
            # a host that is down, or a name the jump host cannot resolve: it cannot tell which
            raise ConnectionError(
                f"the jump host {route.jumps[index].address} cannot connect to {destination} ({exc.text})"
            ) from None
        return channel

    def _watch(self, transport: paramiko.Transport, stop: threading.Event) -> None:
        """The connection's watchdog: a keepalive that wants a reply, every ``keepalive``
        seconds while idle and every ``dead_after / 2`` while an operation waits; if none comes
        within ``dead_after`` seconds the peer is gone: close the transport, which wakes every
        operation waiting on it (they see the connection lost, and retry)."""
        t = self.tunnel
        while not stop.is_set() and transport.is_active():
            with self._busy_changed:
                busy = bool(self._busy and t.dead_after)
                if not busy:  # idle: a keepalive every `keepalive` s; an operation starting wakes us
                    started = self._busy_changed.wait(t.keepalive or None)
                    if started:
                        continue
            if (busy and stop.wait(t.dead_after / 2)) or not transport.is_active():
                return  # dropped meanwhile
            timer = threading.Timer(t.dead_after, self._dead, (transport,)) if t.dead_after else None
            if timer is not None:
                timer.daemon = True
                timer.start()
            try:
                transport.global_request(_PROBE, wait=timer is not None)
            except Exception:  # noqa: S110  the transport is closing: the loop ends
                pass
            finally:
                if timer is not None:
                    timer.cancel()

    def _dead(self, transport: paramiko.Transport) -> None:
        self._dead_peer = f"no answer to a keepalive within {self.tunnel.dead_after:g}s"
        transport.close()

    def _connected(self) -> paramiko.SSHClient:
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if client is None or transport is None or not transport.is_active():
                self._drop()
                self._dead_peer = ""
                client = self._client = self._connect_once(self._connect_timeout())
            return client

    def _connect_timeout(self) -> float:
        """A connection attempt lasts no longer than this thread's patience allows."""
        patience = getattr(self._local, "patience", None)
        timeout = self.tunnel.connect_timeout
        return timeout if patience is None else max(0.5, min(timeout, patience))

    def _drop(self) -> None:
        with self._lock:
            if self._watch_stop is not None:
                self._watch_stop.set()
                self._watch_stop = None
                with self._busy_changed:
                    self._busy_changed.notify_all()  # the watchdog sees its stop at once
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:  # noqa: S110  closing a dead channel may fail: nothing to do
                    pass
            if self._client is not None:
                self._client.close()
            for jump in reversed(self._jumps):  # after the login node's, which runs through them
                jump.close()
            self._sftp = None
            self._client = None
            self._jumps = []

    def _sftp_client(self) -> paramiko.SFTPClient:
        client = self._connected()
        with self._lock:
            if self._sftp is None:
                self._sftp = client.open_sftp()
            return self._sftp

    def _retrying(self, what: str, op: Any) -> Any:
        """``op()``; on a dropped or refused connection, reconnect and retry with backoff for
        ``retry_for`` seconds (or this thread's patience), then raise ``UnreachableError``.
        During a known outage: one attempt if one is due, else ``UnreachableError`` at once."""
        retry_for = self.tunnel.retry_for
        patience = getattr(self._local, "patience", None)
        if patience is not None:
            retry_for = min(retry_for, patience)
        with self._outage_lock:
            if self._down_since is not None:
                if time.monotonic() < self._retry_at:
                    raise self._unreachable(what)
                retry_for = 0.0  # one attempt: is it back?
        delay = _BACKOFF_FIRST
        first_failure: float | None = None
        why = ""
        # retry_for seconds from the first failure, or this thread's patience from now
        deadline = time.monotonic() + patience if patience is not None else float("inf")
        while True:
            try:
                with self._busy_changed:
                    self._busy += 1
                    self._busy_changed.notify_all()
                try:
                    result = op()
                finally:
                    with self._busy_changed:
                        self._busy -= 1
            except Exception as exc:
                if not _is_transient(exc):
                    if isinstance(exc, BackendError):
                        raise
                    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
                        raise BackendError(f"{what} on {self.where}: {exc}") from None  # e.g. permission
                    raise
                if first_failure is None:  # what went wrong first says most
                    why = self._dead_peer or f"{type(exc).__name__}: {exc or 'connection lost'}"
                    first_failure, deadline = time.time(), min(deadline, time.monotonic() + retry_for)
                self._drop()
                if time.monotonic() + delay > deadline:
                    with self._outage_lock:
                        if self._down_since is None:  # a new outage
                            self._down_since, self._down_why = first_failure, why
                            self._retry_delay = _OUTAGE_RETRY_FIRST
                        self._retry_at = time.monotonic() + self._retry_delay
                        self._retry_delay = min(self._retry_delay * 2, _OUTAGE_RETRY_MAX)
                        raise self._unreachable(what, retry_for) from None
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
            else:
                with self._outage_lock:
                    self._down_since = None
                return result

    def _unreachable(self, what: str, retried: float | None = None) -> UnreachableError:
        """The error of an operation during an outage: where, since when, why."""
        since = self._down_since or time.time()
        then = time.strftime("%H:%M:%S", time.localtime(since))
        tried = f"retried for {retried:g}s" if retried else "trying again every few seconds"
        return UnreachableError(
            f"cannot reach {self.where} ({self._down_why}) while {what}: unreachable since {then} "
            f"({time.time() - since:.0f}s ago; {tried})",
            since=since,
        )

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
