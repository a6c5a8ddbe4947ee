"""Where an ``SSHTunnel`` goes: its host looked up in an OpenSSH client config, as ssh does.

``SSHTunnel(host="alias")`` reads ``~/.ssh/config`` (or the file ``SSHTunnel.ssh_config``
names; ``"none"``: no file) with paramiko's parser (``Host`` patterns, ``Match`` partly;
``Include`` is read in place here) and takes from it, for that host, ``HostName``, ``User``,
``Port``, ``IdentityFile`` (with ``IdentitiesOnly``) and ``ProxyJump``. A field given to the
tunnel beats the config, and the config beats the built-in defaults (your local user name,
port 22, ssh-agent and ``~/.ssh/id_*``).

``ProxyJump`` names one or more jump hosts (bastions), comma-separated, each
``[user@]host[:port]`` or an alias of the same config, which then brings its own
``HostName``, ``User``, ``Port`` and ``IdentityFile``; as with OpenSSH, the first hop's own
``ProxyJump`` is followed too, and ``ProxyJump none`` turns jumping off. A jump host without
an ``IdentityFile`` of its own logs in with ``SSHTunnel.identity`` (if given), ssh-agent and
``~/.ssh/id_*``. Every hop's host key is checked against the tunnel's known_hosts
(``tunnel.py``).

The config is read again for every new connection (an edit applies from the next one), and
nothing of it reaches a shell. A problem found here (an unreadable config, a bad ``Port``, a
missing ``IdentityFile``, a ``ProxyJump`` loop, a ``ProxyCommand``) is an
:class:`SSHConfigError`: retrying cannot fix it.
"""

from __future__ import annotations

import getpass
import glob
import os
import re
import shlex
from typing import TYPE_CHECKING, Any

import attrs
from runyard.errors import BackendRefusedError

if TYPE_CHECKING:
    import paramiko

    from runyard_slurm.executor import SSHTunnel

DEFAULT_CONFIG = os.path.join("~", ".ssh", "config")
MAX_HOPS = 16  # jump hosts in one route, and Include files within each other
_INCLUDE = re.compile(r"include(?:\s*=\s*|\s+)(.+)", re.IGNORECASE)
_BLOCK = re.compile(r"(?:host|match)(?:\s*=\s*|\s+)", re.IGNORECASE)


class SSHConfigError(BackendRefusedError):
    """The SSH config (or what it names) cannot be used as it is: fix it, then connect again."""


@attrs.frozen
class Hop:
    """One SSH server on the way: a jump host, or the login node itself.

    ``name`` is the host as the tunnel or a ``ProxyJump`` named it (an alias, maybe), ``host``
    where it is reached (``HostName``). Login: the key files ``key_files`` (what gave them:
    ``keys_from``), then ssh-agent if ``agent``, then ``~/.ssh/id_*`` if ``default_keys``."""

    name: str
    host: str
    port: int
    user: str
    key_files: tuple[str, ...] = ()
    keys_from: str = ""
    agent: bool = True
    default_keys: bool = True

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names it (``host``, or ``[host]:port`` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def spec(self) -> str:
        """As one hop of ``ssh -J``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


@attrs.frozen
class Route:
    """The login node (``target``) and the jump hosts before it, in the order they are opened;
    ``config``: the SSH config file read (None: none)."""

    target: Hop
    jumps: tuple[Hop, ...] = ()
    config: str | None = None

    @property
    def where(self) -> str:
        """``user@host:port`` of the login node, and the jump hosts it is reached through."""
        via = f" via {', '.join(j.address for j in self.jumps)}" if self.jumps else ""
        return self.target.address + via

    def jump_label(self, index: int, tunnel_host: str) -> str:
        """The jump host ``index`` (0: the first opened), for messages."""
        hop = self.jumps[index]
        named = f" {hop.name!r}" if hop.name != hop.host else ""
        source = f" in {self.config}" if self.config else ""
        return (
            f"the jump host {hop.address} (ProxyJump hop {index + 1} of {len(self.jumps)}{named}, "
            f"on the way to {tunnel_host!r}{source})"
        )


def config_file(value: str | None) -> str | None:
    """The SSH config file to read for ``SSHTunnel.ssh_config = value``: None reads
    ``~/.ssh/config`` if it exists, ``"none"`` reads nothing, and a path must exist."""
    if value is None:
        path = os.path.expanduser(DEFAULT_CONFIG)
        return path if os.path.isfile(path) else None
    if value.strip().lower() == "none":
        return None
    path = os.path.expanduser(value)
    if not os.path.isfile(path):
        raise SSHConfigError(f"SSH config file {path} (SSHTunnel.ssh_config) does not exist")
    return path


def _config_text(path: str, depth: int = 0) -> str:
    """The file's lines, each ``Include`` replaced by the files it names (relative names are in
    ``~/.ssh``, globs sorted, missing ones skipped, as OpenSSH does). The block an Include
    stood in is opened again after the included files, so that the lines after it stay there."""
    if depth > MAX_HOPS:
        raise SSHConfigError(f"SSH config {path}: Include nested more than {MAX_HOPS} deep (a loop?)")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise SSHConfigError(f"cannot read SSH config {path}: {exc}") from None
    out: list[str] = []
    block = ""  # the Host or Match line of the block we are in
    for line in lines:
        stripped = line.strip()
        found = _INCLUDE.fullmatch(stripped)
        if found is None:
            if _BLOCK.match(stripped):
                block = stripped
            out.append(line)
            continue
        try:
            patterns = shlex.split(found.group(1))
        except ValueError as exc:
            raise SSHConfigError(f"SSH config {path}: cannot read {stripped!r}: {exc}") from None
        for pattern in patterns:
            pattern = os.path.expanduser(pattern)
            if not os.path.isabs(pattern):
                pattern = os.path.join(os.path.expanduser(os.path.join("~", ".ssh")), pattern)
            for included in sorted(glob.glob(pattern)):
                if os.path.isfile(included):
                    out.append(_config_text(included, depth + 1))
        out.append(block or "Host *")
    return "\n".join(out) + "\n"


def load_config(path: str) -> paramiko.SSHConfig:
    """The parsed SSH config file (``Include`` read in place)."""
    import paramiko

    text = _config_text(path)
    try:
        return paramiko.SSHConfig.from_text(text)
    except Exception as exc:
        raise SSHConfigError(f"cannot read SSH config {path}: {exc}") from None


def _lookup(config: paramiko.SSHConfig | None, path: str | None, name: str) -> dict[str, Any]:
    if config is None:
        return {}
    try:
        return dict(config.lookup(name))
    except Exception as exc:  # Match exec without invoke, CanonicalizeHostname that finds nothing, ...
        raise SSHConfigError(
            f"SSH config {path}: cannot look up host {name!r}: {type(exc).__name__}: {exc}"
        ) from None


def _port(value: Any, name: str, path: str | None) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SSHConfigError(
            f"SSH config {path}: Port of host {name!r} must be a port number (1-65535), got {text!r}"
        )
    return int(text)


def _parse_hops(spec: str, owner: str, path: str | None) -> list[tuple[str | None, str, int | None]]:
    """``ProxyJump`` value: ``(user, host, port)`` of each hop (``[user@]host[:port]``, or
    ``ssh://[user@]host[:port]``; an IPv6 address in brackets)."""
    hops: list[tuple[str | None, str, int | None]] = []
    where = f"SSH config {path}: ProxyJump {spec!r} of host {owner!r}"
    for part in spec.split(","):
        text = part.strip()
        if text.startswith("ssh://"):
            text = text[len("ssh://") :].rstrip("/")
        user, _, hostport = text.rpartition("@")
        host, port, rest = hostport, None, ""
        if hostport.startswith("["):  # [IPv6 address]:port
            host, closed, rest = hostport[1:].partition("]")
            if not closed:
                host = ""
        elif ":" in hostport:
            host, _, port = hostport.partition(":")
        if rest:
            port = rest[1:] if rest.startswith(":") else "-"
        if not host or any(c.isspace() or c in "[]/" for c in host):
            raise SSHConfigError(
                f"{where}: cannot read the hop {part.strip()!r} (expected [user@]host[:port])"
            )
        if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
            raise SSHConfigError(f"{where}: the hop {part.strip()!r} has no valid port number")
        hops.append((user or None, host, int(port) if port is not None else None))
    return hops


def _hop(
    config: paramiko.SSHConfig | None, path: str | None, name: str, user: str | None, port: int | None,
    identity: str | None, jump_identity: str | None,
) -> tuple[Hop, dict[str, Any]]:  # fmt: skip
    """A host resolved through the config: explicit ``user``, ``port`` and ``identity`` beat it.
    A jump host without IdentityFile tries ``jump_identity`` (the tunnel's), the agent and
    ``~/.ssh/id_*``. Also the host's config options (for its ProxyJump)."""
    opts = _lookup(config, path, name)
    host = str(opts.get("hostname") or name)
    chosen_port = port if port is not None else _port(opts.get("port"), name, path)
    chosen_user = user or opts.get("user") or getpass.getuser()
    files = [os.path.expanduser(str(f)) for f in opts.get("identityfile") or []]
    hop = Hop(name=name, host=host, port=chosen_port or 22, user=str(chosen_user))
    if identity is not None:
        keys = (os.path.expanduser(identity),)
        hop = attrs.evolve(
            hop, key_files=keys, keys_from="SSHTunnel.identity", agent=False, default_keys=False
        )
    elif files:
        existing = tuple(f for f in files if os.path.isfile(f))
        source = f"IdentityFile of host {name!r} in {path}"
        if not existing:
            which = ", ".join(files)
            raise SSHConfigError(
                f"SSH key file{'s' if len(files) > 1 else ''} {which} ({source}) "
                f"{'do' if len(files) > 1 else 'does'} not exist: fix the IdentityFile line, or give "
                "SSHTunnel.identity"
            )
        only = str(opts.get("identitiesonly", "no")).strip().lower() == "yes"
        hop = attrs.evolve(hop, key_files=existing, keys_from=source, agent=not only, default_keys=False)
    elif jump_identity is not None:
        keys = (os.path.expanduser(jump_identity),)
        hop = attrs.evolve(
            hop, key_files=keys if os.path.isfile(keys[0]) else (), keys_from="SSHTunnel.identity"
        )
    return hop, opts


def _jump_spec(opts: dict[str, Any]) -> str | None:
    spec = opts.get("proxyjump")
    if spec is None or str(spec).strip().lower() == "none":
        return None
    return str(spec)


def _chain(
    config: paramiko.SSHConfig | None, path: str | None, spec: str, owner: str, seen: tuple[str, ...],
    tunnel: SSHTunnel,
) -> list[Hop]:  # fmt: skip
    """The jump hosts of ``owner``'s ``ProxyJump spec``, in the order they are opened: the
    first hop's own ProxyJump before it (as OpenSSH, which reaches hop n through hops 1..n-1
    and follows only the first one's own config), unless it names the hop itself."""
    hops = []
    first_opts: dict[str, Any] = {}
    for index, (user, name, port) in enumerate(_parse_hops(spec, owner, path)):
        if name in seen:
            raise SSHConfigError(
                f"SSH config {path}: ProxyJump loop: {' -> '.join((*seen, name))} (add 'ProxyJump none' to "
                "the jump host's Host block)"
            )
        hop, opts = _hop(config, path, name, user, port, None, tunnel.identity)
        hops.append(hop)
        if index == 0:
            first_opts = opts
    before: list[Hop] = []
    first = hops[0].name
    own = _jump_spec(first_opts)
    if own is not None and [h for _, h, _ in _parse_hops(own, first, path)] != [first]:
        before = _chain(config, path, own, first, (*seen, first), tunnel)
    chain = before + hops
    if len(chain) > MAX_HOPS:
        raise SSHConfigError(
            f"SSH config {path}: more than {MAX_HOPS} jump hosts on the way to {tunnel.host!r}"
        )
    return chain


def resolve_route(tunnel: SSHTunnel) -> Route:
    """Where ``tunnel`` connects: its login node and the jump hosts before it, from the tunnel's
    fields and its SSH config (read now)."""
    path = config_file(tunnel.ssh_config)
    config = load_config(path) if path is not None else None
    target, opts = _hop(config, path, tunnel.host, tunnel.user, tunnel.port, tunnel.identity, None)
    spec = _jump_spec(opts)
    if spec is None:
        command = opts.get("proxycommand")
        if command is not None and "proxyjump" not in opts:
            raise SSHConfigError(
                f"SSH config {path}: host {tunnel.host!r} has a ProxyCommand ({command}), which runyard "
                "does not run: use ProxyJump for a jump host (or 'ProxyCommand none')"
            )
        return Route(target, (), path)
    if [h for _, h, _ in _parse_hops(spec, tunnel.host, path)] == [tunnel.host]:
        return Route(target, (), path)  # a host that is its own jump host (Host * ProxyJump it): none
    return Route(target, tuple(_chain(config, path, spec, tunnel.host, (tunnel.host,), tunnel)), path)
