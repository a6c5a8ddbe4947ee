"""``RayExecutor``: what the user configures, validated when it is built.

The cluster is the Ray head's Jobs API, its dashboard address (``http://head:8265``). An
executor given none takes ``$RUNYARD_RAY_ADDRESS``, then ``$RAY_ADDRESS``, then the ``address``
of the config file (``$RUNYARD_RAY_CONFIG``, else ``$RUNYARD_HOME/ray.toml`` if it exists, else
``~/.config/runyard/ray.toml``), else ``http://127.0.0.1:8265``, when it is built: what the store
records names the cluster the task ran on.
"""

from __future__ import annotations

import math
import os
import re
import sys
from typing import Any, ClassVar

import attrs
from runyard.errors import ConfigError
from runyard.executor import Executor, check_code
from runyard.serialization import check_json_value

ADDRESS_ENV = ("RUNYARD_RAY_ADDRESS", "RAY_ADDRESS")
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DEFAULT_MAX_JOBS = 16

# runtime_env keys that runyard sets itself, with what to use instead
OWNED_RUNTIME_ENV = {
    "working_dir": "runyard (it ships the task, its runner and your code as the job's working dir: see code)",
    "env_vars": "the field env_vars",
}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_RESOURCE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")


def config_path() -> str:
    """The config file that is (or would be) read for a default address."""
    explicit = os.environ.get("RUNYARD_RAY_CONFIG")
    if explicit:
        return os.path.expanduser(explicit)
    home = os.environ.get("RUNYARD_HOME")
    if home:
        candidate = os.path.join(os.path.expanduser(home), "ray.toml")
        if os.path.exists(candidate):
            return candidate
    return os.path.expanduser(os.path.join("~", ".config", "runyard", "ray.toml"))


def _file_address() -> str | None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    path = config_path()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the Ray config file {path}: {exc}") from None
    unknown = sorted(set(data) - {"address"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; the only key is: address")
    value = data.get("address")
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: address must be a string like 'http://head:8265', got {value!r}")
    return value


def default_address() -> str:
    """Where a ``RayExecutor()`` given no address goes (see the module's doc)."""
    for name in ADDRESS_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return _file_address() or DEFAULT_ADDRESS


def normalize_address(value: Any) -> Any:
    """``head:8265`` as ``http://head:8265``, without a trailing ``/``; None: the default."""
    if value is None:
        value = default_address()
    if not isinstance(value, str):
        return value  # (the validator says what is wrong)
    value = value.strip()
    if value and not _SCHEME.match(value):
        value = f"http://{value}"
    return value.rstrip("/")


def _check_address(instance: RayExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        hint = (
            " (that is a Ray Client address: runyard talks to the head's Jobs API, its dashboard)"
            if isinstance(value, str) and value.startswith("ray://")
            else ""
        )
        raise ConfigError(
            f"RayExecutor.address must be the HTTP address of the Ray head's dashboard, like"
            f" 'http://head:8265', got {value!r}{hint}"
        )


def _check_runtime_env(instance: RayExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(
            f"RayExecutor.runtime_env must be a dict of Ray runtime_env fields or None, got {value!r}"
        )
    for key in value:
        if key in OWNED_RUNTIME_ENV:
            raise ConfigError(f"RayExecutor.runtime_env: {key!r} is set by {OWNED_RUNTIME_ENV[key]}")
    check_json_value(value, "RayExecutor.runtime_env")


def _amount(instance: RayExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"RayExecutor.{attribute.name} must be a number >= 0 or None, got {value!r}")


def _check_resources(instance: RayExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"RayExecutor.resources must be a dict of custom resource -> amount, got {value!r}")
    for name, amount in value.items():
        if not isinstance(name, str) or not _RESOURCE.fullmatch(name):
            raise ConfigError(f"RayExecutor.resources: {name!r} is not a resource name")
        if name in ("CPU", "GPU", "memory"):
            field = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "runtime_env or the cluster"}[name]
            raise ConfigError(f"RayExecutor.resources: ask for {name!r} with {field}, not resources")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount > 0:
            raise ConfigError(f"RayExecutor.resources[{name!r}] must be a number > 0, got {amount!r}")


def _check_python(instance: RayExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(
            f"RayExecutor.python must be the name or path of python3 on the cluster, got {value!r}"
        )


def _check_max_jobs(instance: RayExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"RayExecutor.max_jobs must be a number of jobs >= 1, got {value!r}")


@attrs.define
class RayExecutor(Executor):
    """Run each attempt of a task as a Ray Job on a Ray cluster, through the head's Jobs API.

    :param address: the head's dashboard (Jobs API) address, ``http://head:8265``; None (default):
        ``$RUNYARD_RAY_ADDRESS``, ``$RAY_ADDRESS``, the config file, else ``http://127.0.0.1:8265``.
    :param runtime_env: more of the job's Ray ``runtime_env`` (``pip``, ``conda``,
        ``py_modules``, ``container``...); ``working_dir`` and ``env_vars`` are runyard's.
    :param num_cpus: CPUs the job's entrypoint holds (``entrypoint_num_cpus``); None: none.
    :param num_gpus: GPUs it holds (``entrypoint_num_gpus``: Ray sets ``CUDA_VISIBLE_DEVICES``);
        a fraction shares a GPU, but under a launcher each rank needs whole GPUs.
    :param resources: custom Ray resources it holds (``entrypoint_resources``).
    :param env_vars: variables added to the job's environment.
    :param python: the interpreter on the cluster that runs the runner and Python tasks.
    :param code: what user code to ship in the job's working dir: ``"git"`` (the work tree of
        the experiment's working directory, uncommitted changes included), a directory, or None.
    :param max_jobs: at most this many jobs of this runyard home live on the cluster at once
        (each live Ray job costs the head about 85 MB); more tasks wait PENDING.
    """

    kind: ClassVar[str] = "ray"

    address: str = attrs.field(default=None, converter=normalize_address, validator=_check_address)
    runtime_env: dict[str, Any] | None = attrs.field(default=None, validator=_check_runtime_env)
    num_cpus: float | None = attrs.field(default=None, validator=_amount)
    num_gpus: float | None = attrs.field(default=None, validator=_amount)
    resources: dict[str, float] | None = attrs.field(default=None, validator=_check_resources)
    python: str = attrs.field(default="python3", validator=_check_python)
    code: str | None = attrs.field(default="git", kw_only=True, validator=check_code)
    max_jobs: int = attrs.field(default=DEFAULT_MAX_JOBS, kw_only=True, validator=_check_max_jobs)

    def __attrs_post_init__(self) -> None:
        if self.launcher is not None and self.num_gpus and self.num_gpus != int(self.num_gpus):
            raise ConfigError(
                f"RayExecutor(num_gpus={self.num_gpus}) with a launcher: each rank needs a whole GPU;"
                " give num_gpus a whole number (or no launcher, to share a GPU)"
            )
        nproc = self.launcher.nproc_per_node if self.launcher is not None else None
        if nproc is not None and self.num_gpus and nproc > self.num_gpus:
            raise ConfigError(
                f"RayExecutor: the launcher starts {nproc} ranks but the job holds {int(self.num_gpus)}"
                f" GPU(s): give num_gpus={nproc} or nproc_per_node={int(self.num_gpus)}"
            )

    def describe(self) -> str:
        host = self.address.split("://", 1)[-1]
        return f"ray@{host}"

    def default_nproc(self) -> int:
        return int(self.num_gpus) if self.num_gpus and self.num_gpus >= 1 else 1

    def resource_request(self) -> dict[str, int]:
        return {job_slots(self.address): 1}


def job_slots(address: str) -> str:
    """The resource that caps the live jobs on one cluster (``max_jobs``): one unit per job."""
    return f"Ray job slot on {address}"
