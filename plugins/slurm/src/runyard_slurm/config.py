"""Cluster defaults: where ``SlurmExecutor()`` goes when it is given no ``tunnel``.

Read from environment variables first, then from a TOML file, so that the guide's
``run.SlurmExecutor(partition="gpu", nodes=2, gpus_per_node=4)`` needs no tunnel argument.

| variable | file key | meaning |
|---|---|---|
| ``RUNYARD_SLURM_HOST`` | ``host`` | login node to reach over SSH; ``local``: Slurm on this machine |
| ``RUNYARD_SLURM_USER`` | ``user`` | SSH user (default: your local user name) |
| ``RUNYARD_SLURM_PORT`` | ``port`` | SSH port (default: the SSH config's ``Port``, else 22) |
| ``RUNYARD_SLURM_KEY`` | ``identity`` | private key file (default: the SSH config's, else ssh-agent, then ``~/.ssh/id_*``) |
| ``RUNYARD_SLURM_SSH_CONFIG`` | ``ssh_config`` | OpenSSH client config (default ``~/.ssh/config`` if it exists; ``none``: none) |
| ``RUNYARD_SLURM_KNOWN_HOSTS`` | ``known_hosts`` | known_hosts file (default ``~/.ssh/known_hosts``) |
| ``RUNYARD_SLURM_TRUST_NEW_HOST`` | ``trust_new_host`` | ``1``: accept and record an unknown host key |
| ``RUNYARD_SLURM_JOB_DIR`` | ``job_dir`` | job directory on the cluster (default ``~/.runyard/jobs``) |
| ``RUNYARD_SLURM_PARTITION`` | ``partition`` | partition when the executor names none |
| ``RUNYARD_SLURM_ACCOUNT`` | ``account`` | account when the executor names none |
| ``RUNYARD_SLURM_QOS`` | ``qos`` | QOS when the executor names none |
| ``RUNYARD_SLURM_POLL_MAX`` | ``poll_max`` | longest wait between two status polls, seconds (default 10) |

The file is ``$RUNYARD_SLURM_CONFIG`` if set, else ``$RUNYARD_HOME/slurm.toml`` if it
exists, else ``~/.config/runyard/slurm.toml``. An environment variable beats the file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import attrs
from runyard.errors import ConfigError

DEFAULT_JOB_DIR = "~/.runyard/jobs"
DEFAULT_POLL_MAX = 10.0
ENV_PREFIX = "RUNYARD_SLURM_"

# file key -> (environment variable suffix, type)
_KEYS: dict[str, tuple[str, type]] = {
    "host": ("HOST", str),
    "user": ("USER", str),
    "port": ("PORT", int),
    "ssh_config": ("SSH_CONFIG", str),
    "identity": ("KEY", str),
    "known_hosts": ("KNOWN_HOSTS", str),
    "trust_new_host": ("TRUST_NEW_HOST", bool),
    "job_dir": ("JOB_DIR", str),
    "partition": ("PARTITION", str),
    "account": ("ACCOUNT", str),
    "qos": ("QOS", str),
    "poll_max": ("POLL_MAX", float),
}


@attrs.frozen
class ClusterDefaults:
    """The defaults in effect (``None``: not configured)."""

    host: str | None = None
    user: str | None = None
    port: int | None = None  # the SSH config's Port, else 22
    ssh_config: str | None = None
    identity: str | None = None
    known_hosts: str | None = None
    trust_new_host: bool = False
    job_dir: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    poll_max: float = DEFAULT_POLL_MAX
    source: str = "built-in defaults"


def config_path(environ: Mapping[str, str] | None = None) -> str:
    """The config file that is (or would be) read."""
    env = os.environ if environ is None else environ
    explicit = env.get("RUNYARD_SLURM_CONFIG")
    if explicit:
        return os.path.expanduser(explicit)
    home = env.get("RUNYARD_HOME")
    if home:
        candidate = os.path.join(os.path.expanduser(home), "slurm.toml")
        if os.path.exists(candidate):
            return candidate
    return os.path.expanduser(os.path.join("~", ".config", "runyard", "slurm.toml"))


def _read_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the Slurm config file {path}: {exc}") from None
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; the keys are: {', '.join(sorted(_KEYS))}"
        )
    return data


def _convert(value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("", "0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind is int or kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if number <= 0:
            raise ConfigError(f"{where} must be positive, got {value!r}")
        return number
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value


def load_defaults(environ: Mapping[str, str] | None = None) -> ClusterDefaults:
    """The cluster defaults from the environment and the config file."""
    env = os.environ if environ is None else environ
    path = config_path(env)
    data = _read_toml(path)
    values: dict[str, Any] = {}
    sources = []
    for key, (suffix, kind) in _KEYS.items():
        name = ENV_PREFIX + suffix
        if env.get(name, "") != "":
            values[key] = _convert(env[name], kind, name)
            sources.append(name)
        elif key in data:
            values[key] = _convert(data[key], kind, f"{path}: {key}")
            sources.append(f"{path}:{key}")
    return ClusterDefaults(**values, source=", ".join(sources) or "built-in defaults")
