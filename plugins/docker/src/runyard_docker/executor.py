"""``DockerExecutor``: what the user configures, validated when it is built."""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

import attrs
from runyard.errors import ConfigError
from runyard.executor import Executor, check_code
from runyard.serialization import check_json_value

IMAGE_ENV = "RUNYARD_DOCKER_IMAGE"
DEFAULT_IMAGE = "python:3.11-slim"
RESERVED = "/runyard"  # where runyard mounts the runner, the task and the code in a container

_NAMED_VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SIZE = re.compile(r"[0-9]+[bkmgBKMG]?")

# containers.create arguments that runyard sets itself, with the field to use instead
OWNED_RUN_KWARGS = {
    "image": "the field image",
    "command": "the task (runyard runs its in-job runner)",
    "environment": "the field env_vars",
    "volumes": "the field volumes",
    "mounts": "the field volumes",
    "working_dir": "the field workdir",
    "network": "the field network",
    "network_mode": "the field network",
    "shm_size": "the field shm_size",
    "ipc_mode": "the field ipc_mode",
    "user": "the field user",
    "device_requests": "the field gpus",
    "name": "runyard (it names containers runyard-<experiment>-<task>-<attempt>)",
    "detach": "runyard (containers always run detached)",
    "remove": "runyard (it removes a container once its logs and result are saved)",
    "auto_remove": "runyard (it removes a container once its logs and result are saved)",
}


def default_image() -> str:
    """The image of a ``DockerExecutor()`` given none: ``$RUNYARD_DOCKER_IMAGE``, else
    ``python:3.11-slim``. Read when the executor is built, so a stored or snapshotted
    executor names the image it used."""
    return os.environ.get(IMAGE_ENV, "").strip() or DEFAULT_IMAGE


def _image_or_default(value: Any) -> Any:
    return default_image() if value is None else value


@attrs.frozen
class Volume:
    """One ``volumes`` entry: ``source:target[:ro|rw]``.

    ``source`` is a host path (absolute, ``~/...``, or relative to the experiment's working
    directory when it starts with ``.`` or holds a ``/``) or, when it is a bare name, a
    named Docker volume.
    """

    source: str
    target: str
    read_only: bool

    @property
    def named(self) -> bool:
        return "/" not in self.source and not self.source.startswith((".", "~"))

    def host_path(self, cwd: str | None) -> str:
        """The absolute host path of a bind mount (``~`` expanded, relative to ``cwd``)."""
        path = os.path.expanduser(self.source)
        return os.path.normpath(os.path.join(cwd or os.getcwd(), path))


def parse_volume(entry: Any) -> Volume:
    """A ``volumes`` entry as a :class:`Volume`; ConfigError saying what is wrong otherwise."""
    form = "'host_path:container_path[:ro|rw]'"
    if not isinstance(entry, str):
        raise ConfigError(f"DockerExecutor.volumes entries must be strings {form}, got {entry!r}")
    parts = entry.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ConfigError(f"DockerExecutor.volumes entry {entry!r} is not of the form {form}")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ConfigError(f"DockerExecutor.volumes entry {entry!r}: mode must be 'ro' or 'rw', got {mode!r}")
    volume = Volume(parts[0], parts[1], mode == "ro")
    target = volume.target
    if not target.startswith("/"):
        raise ConfigError(f"DockerExecutor.volumes entry {entry!r}: the container path must be absolute")
    if target.rstrip("/") == "" or target == RESERVED or target.startswith(RESERVED + "/"):
        raise ConfigError(
            f"DockerExecutor.volumes entry {entry!r}: {target!r} is reserved (runyard mounts the runner,"
            f" the task and the code under {RESERVED}); choose another container path"
        )
    if volume.named and not _NAMED_VOLUME.fullmatch(volume.source):
        raise ConfigError(f"DockerExecutor.volumes entry {entry!r}: {volume.source!r} is not a volume name")
    return volume


def _check_volumes(instance: DockerExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, list):
        raise ConfigError(f"DockerExecutor.volumes must be a list of strings, got {value!r}")
    targets: set[str] = set()
    for entry in value:
        target = parse_volume(entry).target.rstrip("/")
        if target in targets:
            raise ConfigError(f"DockerExecutor.volumes: two entries mount on {target!r}")
        targets.add(target)


def _check_image(instance: DockerExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(
            f"DockerExecutor.image must be an image name like 'python:3.11-slim', got {value!r}"
        )


def _check_gpus(instance: DockerExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None or value == "all":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"DockerExecutor.gpus must be a number of GPUs >= 1, 'all' or None, got {value!r}")


def _check_shm_size(instance: DockerExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not (
        (isinstance(value, int) and value > 0) or (isinstance(value, str) and _SIZE.fullmatch(value))
    ):
        raise ConfigError(
            f"DockerExecutor.shm_size must be bytes (an int) or a size like '2g', got {value!r}"
        )


def _check_optional_str(instance: DockerExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(
            f"DockerExecutor.{attribute.name} must be a non-empty string or None, got {value!r}"
        )


def _check_workdir(instance: DockerExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_optional_str(instance, attribute, value)
    if value is not None and not value.startswith("/"):
        raise ConfigError(f"DockerExecutor.workdir must be an absolute container path, got {value!r}")


def _check_python(instance: DockerExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"DockerExecutor.python must be the name or path of python3 in the image, got {value!r}"
        )


def _check_grace(instance: DockerExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"DockerExecutor.cancel_grace must be a number of seconds >= 0, got {value!r}")


def _check_run_kwargs(instance: DockerExecutor, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"DockerExecutor.run_kwargs must be a dict of docker run arguments, got {value!r}")
    for key in value:
        if key in OWNED_RUN_KWARGS:
            raise ConfigError(f"DockerExecutor.run_kwargs: {key!r} is set by {OWNED_RUN_KWARGS[key]}")
    labels = value.get("labels")
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        raise ConfigError(f"DockerExecutor.run_kwargs['labels'] must map strings to strings, got {labels!r}")
    check_json_value(value, "DockerExecutor.run_kwargs")


@attrs.define
class DockerExecutor(Executor):
    """Run each task in its own container on a Docker engine (``$DOCKER_HOST``, else the
    local socket). The image needs only a ``python3`` for Python tasks; runyard mounts its
    in-job runner, the task's folder and the user's code into the container.

    :param image: the image; None (default): ``$RUNYARD_DOCKER_IMAGE``, else ``python:3.11-slim``.
        An image missing on the engine is pulled; if that fails, the launch fails naming it.
    :param env_vars: variables added to the container's environment.
    :param volumes: ``"host_path:container_path[:ro|rw]"`` bind mounts (a bare name is a
        named volume); a host path that does not exist fails the launch.
    :param gpus: a number of GPUs or ``"all"``: a GPU device request (needs the NVIDIA
        container toolkit on the engine).
    :param network: the network to attach the container to (``"host"``, ``"none"``, a name).
    :param shm_size: size of ``/dev/shm``: bytes, or ``"2g"``.
    :param ipc_mode: ``"host"``, ``"shareable"``, ``"container:<id>"``...
    :param user: ``"uid[:gid]"`` or a user name of the image; default: the image's user.
    :param workdir: working directory in the container; default: the experiment's working
        directory inside the shipped code (or the image's own without code).
    :param code: what user code to ship: ``"git"`` (the work tree of the experiment's
        working directory, uncommitted changes included), a directory, or None.
    :param python: the interpreter of the image that runs Python tasks.
    :param run_kwargs: more arguments for the engine's container create call
        (``mem_limit``, ``cpu_count``, ``ulimits``, ``privileged``, ``runtime``, ``init``,
        ``entrypoint``, ``labels``...), as ``docker.containers.run`` takes them.
    :param cancel_grace: seconds between SIGTERM and SIGKILL when a task is cancelled.
    """

    kind: ClassVar[str] = "docker"

    image: str = attrs.field(factory=default_image, converter=_image_or_default, validator=_check_image)
    volumes: list[str] = attrs.field(factory=list, validator=_check_volumes)
    gpus: int | str | None = attrs.field(default=None, validator=_check_gpus)
    network: str | None = attrs.field(default=None, validator=_check_optional_str)
    shm_size: int | str | None = attrs.field(default=None, validator=_check_shm_size)
    ipc_mode: str | None = attrs.field(default=None, validator=_check_optional_str)
    user: str | None = attrs.field(default=None, validator=_check_optional_str)
    workdir: str | None = attrs.field(default=None, validator=_check_workdir)
    code: str | None = attrs.field(default="git", validator=check_code)
    python: str = attrs.field(default="python3", validator=_check_python)
    run_kwargs: dict[str, Any] = attrs.field(factory=dict, validator=_check_run_kwargs)
    cancel_grace: float = attrs.field(default=10.0, validator=_check_grace)

    def describe(self) -> str:
        return f"docker:{self.image}"

    def default_nproc(self) -> int:
        return self.gpus if isinstance(self.gpus, int) and self.gpus > 0 else 1

    def parsed_volumes(self) -> list[Volume]:
        return [parse_volume(v) for v in self.volumes]
