"""``SlurmExecutor``, ``SSHTunnel`` and ``LocalTunnel``: what the user configures.

Plain attrs classes (no connection lives here: see ``tunnel.py``). A ``SlurmExecutor``
given no tunnel takes the cluster defaults (``config.py``) when it is created, so what the
store records names the cluster it runs on.
"""

from __future__ import annotations

import re
import signal as signals
import types
import typing
from typing import Any, ClassVar, Union

import attrs
from runyard import serialization
from runyard.errors import ConfigError
from runyard.executor import Executor

from runyard_slurm.config import DEFAULT_JOB_DIR, load_defaults

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")

# sbatch options the executor sets itself: additional_parameters may not set them
RESERVED_OPTIONS = {
    "output": "runyard writes the job's output into the task's attempt folder",
    "error": "runyard writes the job's output into the task's attempt folder",
    "array": "runyard makes job arrays itself (the executor's array field)",
    "dependency": "give the task dependencies=[...] in Experiment.add",
    "kill-on-invalid-dep": "runyard sets it for chained tasks",
    "parsable": "runyard submits with --parsable",
    "chdir": "tasks start in the experiment's working directory, shipped with the code",
    "wrap": "the job script is runyard's",
    "partition": "use the partition field",
    "nodes": "use the nodes field",
    "ntasks-per-node": "use the ntasks_per_node field",
    "gpus-per-node": "use the gpus_per_node field",
    "cpus-per-task": "use the cpus_per_task field",
    "mem": "use the mem field",
    "time": "use the time field",
    "account": "use the account field",
    "qos": "use the qos field",
    "job-name": "use the job_name field",
    "requeue": "use the requeue field",
    "no-requeue": "use the requeue field (requeue=False)",
    "signal": "use the signal field",
    "open-mode": "runyard appends to the job's output, which a requeued job writes again",
}


def check_text(value: str, what: str) -> str:
    """``value`` if it is a non-empty single line without control characters."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    if _CONTROL.search(value):
        raise ConfigError(
            f"{what} must be one line without control characters (newline, tab, ...), got {value!r}"
        )
    return value


def _optional_text(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        check_text(value, f"{type(instance).__name__}.{attribute.name}")


def _count(minimum: int, optional: bool = False) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(
                f"{type(instance).__name__}.{attribute.name} must be a whole number >= {minimum}"
                f"{' or None' if optional else ''}, got {value!r}"
            )

    return check


def _positive_number(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(
            f"{type(instance).__name__}.{attribute.name} must be a positive number, got {value!r}"
        )


def _number_or_zero(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{type(instance).__name__}.{attribute.name} must be a number >= 0, got {value!r}")


def _port(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(
            f"{type(instance).__name__}.port must be a port number (1-65535) or None, got {value!r}"
        )


def _default_job_dir() -> str:
    return load_defaults().job_dir or DEFAULT_JOB_DIR


@attrs.define
class SSHTunnel:
    """A Slurm login node reached over SSH (paramiko), directly or through jump hosts.

    :param host: the login node's host name or address, or a ``Host`` alias of the SSH
        config (``ssh_config``), which may give its ``HostName``, ``User``, ``Port``,
        ``IdentityFile`` and ``ProxyJump`` (jump hosts, each with its own settings there).
        A field given here beats the config (``sshconfig.py``).
    :param user: SSH user; default: the config's ``User``, else your local user name.
    :param port: SSH port; default (None): the config's ``Port``, else 22.
    :param identity: private key file; default: the config's ``IdentityFile``, else the
        keys of ssh-agent, then ``~/.ssh/id_*``.
    :param known_hosts: known_hosts file the host key of every hop (jump hosts and the login
        node) is checked against; default ``~/.ssh/known_hosts``. A host whose key does not
        match is always refused.
    :param job_dir: folder on the cluster (shared with the compute nodes) for job files,
        logs and shipped code; ``~`` is the remote home. Default from the cluster defaults,
        else ``~/.runyard/jobs``.
    :param trust_new_host: accept a host that is not in known_hosts and record its key
        there (like ssh's ``StrictHostKeyChecking=accept-new``). Off by default.
    :param connect_timeout: seconds one connection attempt may take.
    :param retry_for: seconds during which a dropped or refused connection is retried,
        with backoff, before an operation fails (``UnreachableError``); until the cluster
        answers again, operations then fail at once (a new connection is tried every few s).
    :param keepalive: seconds between SSH keepalive messages on an idle connection (0: none).
    :param dead_after: seconds a keepalive may go unanswered before the connection is taken
        for dead (a network that swallows packets) and opened again; while a command runs,
        one is sent every ``dead_after / 2`` seconds. 0: never (a lost peer then shows only
        when TCP gives up).
    :param ssh_config: the OpenSSH client config file to read (read again for each new
        connection); default (None): ``~/.ssh/config`` if it exists; ``"none"``: none.
    """

    kind: ClassVar[str] = "ssh"

    host: str = attrs.field(validator=_optional_text)
    user: str | None = attrs.field(default=None, validator=_optional_text)
    port: int | None = attrs.field(default=None, validator=_port)
    identity: str | None = attrs.field(default=None, validator=_optional_text)
    known_hosts: str | None = attrs.field(default=None, validator=_optional_text)
    job_dir: str = attrs.field(factory=_default_job_dir, validator=_optional_text)
    trust_new_host: bool = False
    connect_timeout: float = attrs.field(default=10.0, validator=_positive_number)
    retry_for: float = attrs.field(default=30.0, validator=_number_or_zero)
    keepalive: float = attrs.field(default=30.0, validator=_number_or_zero)
    dead_after: float = attrs.field(default=5.0, validator=_number_or_zero)
    ssh_config: str | None = attrs.field(default=None, validator=_optional_text)

    def cluster(self) -> str:
        """The cluster's identity: jobs on equal identities can depend on each other. Made of
        the fields as given (the SSH config is not read): a port left to the config
        (None) differs from any port given, an SSH config named from the default one."""
        port = f":{self.port}" if self.port is not None else ""
        config = f"?ssh_config={self.ssh_config}" if self.ssh_config is not None else ""
        return f"ssh://{self.user or ''}@{self.host}{port}{config}"

    def describe(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}" + (
            f":{self.port}" if self.port not in (None, 22) else ""
        )


@attrs.define
class LocalTunnel:
    """Slurm on this machine (you are on the login node): commands run here, no SSH.

    :param job_dir: folder for job files, shared with the compute nodes.
    """

    kind: ClassVar[str] = "local"

    job_dir: str = attrs.field(factory=_default_job_dir, validator=_optional_text)

    def cluster(self) -> str:
        return "local://"

    def describe(self) -> str:
        return "localhost"


def default_tunnel() -> SSHTunnel | LocalTunnel:
    """The tunnel the cluster defaults describe: SSH to the configured host, else this machine."""
    d = load_defaults()
    job_dir = d.job_dir or DEFAULT_JOB_DIR
    if d.host is None or d.host == "local":
        return LocalTunnel(job_dir=job_dir)
    return SSHTunnel(
        host=d.host, user=d.user, port=d.port, identity=d.identity, known_hosts=d.known_hosts,
        job_dir=job_dir, trust_new_host=d.trust_new_host, ssh_config=d.ssh_config,
    )  # fmt: skip


def _check_tunnel(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, (SSHTunnel, LocalTunnel)):
        raise ConfigError(
            f"SlurmExecutor.tunnel must be run.SSHTunnel(...), run.LocalTunnel(...) or None, got {value!r}"
        )


def _check_mem(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?[KMGTkmgt]?[Bb]?", value):
        return
    raise ConfigError(
        f"SlurmExecutor.mem must be megabytes (an int) or a size like '4G' or '500M', got {value!r}"
    )


def _check_time(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return
    if isinstance(value, str) and re.fullmatch(r"[0-9:-]+|UNLIMITED|INFINITE", value):
        return
    raise ConfigError(
        "SlurmExecutor.time must be minutes (an int) or a Slurm time such as '30', '1:30:00' "
        f"or '2-00:00:00', got {value!r}"
    )


def _check_parameters(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"SlurmExecutor.additional_parameters must be a dict, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not _OPTION_NAME.fullmatch(key):
            raise ConfigError(
                f"SlurmExecutor.additional_parameters: {key!r} is not an sbatch option name "
                "(letters, digits, '-' or '_', e.g. 'constraint' or 'mail_type')"
            )
        option = key.replace("_", "-")
        if option in RESERVED_OPTIONS:
            raise ConfigError(
                f"SlurmExecutor.additional_parameters cannot set --{option}: {RESERVED_OPTIONS[option]}"
            )
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, (int, float)):
            continue
        check_text(item, f"SlurmExecutor.additional_parameters[{key!r}]")


def _optional_flag(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(
            f"{type(instance).__name__}.{attribute.name} must be True, False or None, got {value!r}"
        )


_SIGNAL = re.compile(r"(?:([RB]):)?([A-Za-z0-9]+)(?:@(\d+))?")
_UNCATCHABLE = ("KILL", "STOP")


def parse_signal(value: str) -> tuple[str, str, int | None]:
    """The parts of a ``signal`` field's value (``"B:USR1@90"``, ``"SIGUSR1"``, ``"10@60"``):
    Slurm's prefix (``B``, ``R`` or ``""``), the signal's name (``USR1``) and the seconds (None:
    Slurm's default, 60); ConfigError when it names no signal a job can catch."""
    how = (
        "like 'USR1@90' (SIGUSR1 90 s before the time limit, and at a preemption), "
        "optionally with Slurm's 'B:' or 'R:' prefix"
    )
    match = _SIGNAL.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"SlurmExecutor.signal must be a signal and a time in seconds {how}, got {value!r}")
    prefix, sig, seconds = match.group(1) or "", match.group(2).upper(), match.group(3)
    try:
        found = (
            signals.Signals(int(sig)) if sig.isdigit() else signals.Signals["SIG" + sig.removeprefix("SIG")]
        )
    except (KeyError, ValueError):
        raise ConfigError(
            f"SlurmExecutor.signal: {match.group(2)!r} is not a signal name or number, {how}"
        ) from None
    name = found.name.removeprefix("SIG")
    if name in _UNCATCHABLE:
        raise ConfigError(f"SlurmExecutor.signal: SIG{name} cannot be caught, so it warns of nothing; {how}")
    if seconds is not None and int(seconds) > 65535:
        raise ConfigError(f"SlurmExecutor.signal: at most 65535 seconds before the time limit, got {value!r}")
    return prefix, name, int(seconds) if seconds is not None else None


def _check_signal(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        parse_signal(value)


def _check_code(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        check_text(value, "SlurmExecutor.code")


def _check_python(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_text(value, "SlurmExecutor.python")


@attrs.define
class SlurmExecutor(Executor):
    """Run each task as a Slurm batch job (sbatch), over SSH or on this machine.

    :param partition: partition (``--partition``); default from the cluster defaults.
    :param nodes: nodes (``--nodes``). More than one task process (``nodes *
        ntasks_per_node > 1``) starts the task on each with ``srun``. Under a launcher
        (``launcher="torchrun"``) ``srun`` starts one runner per node instead, each starting
        torchrun with ``nproc_per_node`` ranks (default: ``gpus_per_node``, else
        ``ntasks_per_node``); they meet at the first node of the allocation (its ``NodeAddr``),
        on ``Torchrun.rdzv_port`` or else port 29500 + the job id modulo 1000. One node: the
        runner starts torchrun itself, on a free port of 127.0.0.1.
    :param gpus_per_node: GPUs per node (``--gpus-per-node``).
    :param ntasks_per_node: task processes per node (``--ntasks-per-node``).
    :param cpus_per_task: CPUs per task process (``--cpus-per-task``).
    :param mem: memory per node: megabytes (int) or a size (``"16G"``) (``--mem``).
    :param time: time limit: minutes (int) or a Slurm time (``"1:30:00"``) (``--time``).
    :param account: account (``--account``); default from the cluster defaults.
    :param qos: QOS (``--qos``); default from the cluster defaults.
    :param job_name: job name (``--job-name``); default: the task id.
    :param additional_parameters: more sbatch options, ``{"constraint": "a100",
        "exclusive": True}`` → ``--constraint=a100 --exclusive`` (``_`` becomes ``-``;
        ``True`` is a bare flag; ``None``/``False`` leave it out).
    :param tunnel: ``SSHTunnel(...)`` or ``LocalTunnel(...)``; default: the cluster defaults.
    :param env_vars: variables exported in the job.
    :param python: the cluster's interpreter for Python tasks (needs no runyard).
    :param code: what code to ship into the job: ``"git"`` (the git work tree of the
        experiment's working directory: HEAD plus uncommitted changes), a local directory,
        or ``None`` (the code is on the cluster already).
    :param array: tasks launched together on identical executors (a task group) are
        submitted as one job array; each element is still its own task.
    :param requeue: whether Slurm may run the job again by itself after a node failure or
        a preemption (``--requeue``; ``False``: ``--no-requeue``; ``None``: the cluster's
        default, ``JobRequeue`` in slurm.conf, which is to requeue). Each run is an attempt
        of its own: the one before ends with failure ``node_failure`` or ``preempted``.
    :param signal: the warning before the job is stopped, as Slurm's ``--signal``:
        ``"USR1@90"`` sends SIGUSR1 90 s before the time limit (Slurm checks every ~30 s),
        and at a preemption where the cluster sets ``preempt_send_user_signal``. The runner
        then marks the attempt preempting (``runyard.job.preempting()`` turns True) and passes
        the signal on to the task's processes: a Python task ignores it unless it handles it
        (``runyard.job.on_preempt``), a Script must ``trap`` it or it ends. It goes to the
        batch shell (which runs the runner: ``B:`` is added) unless you write ``R:`` yourself.
        Default None: no warning (a Script that does not trap the signal would end early).
    """

    kind: ClassVar[str] = "slurm"

    partition: str | None = attrs.field(default=None, validator=_optional_text)
    nodes: int = attrs.field(default=1, validator=_count(1))
    gpus_per_node: int | None = attrs.field(default=None, validator=_count(0, optional=True))
    ntasks_per_node: int = attrs.field(default=1, validator=_count(1))
    cpus_per_task: int | None = attrs.field(default=None, validator=_count(1, optional=True))
    mem: int | str | None = attrs.field(default=None, validator=_check_mem)
    time: int | str | None = attrs.field(default=None, validator=_check_time)
    account: str | None = attrs.field(default=None, validator=_optional_text)
    qos: str | None = attrs.field(default=None, validator=_optional_text)
    job_name: str | None = attrs.field(default=None, validator=_optional_text)
    additional_parameters: dict[str, str | int | float | bool | None] = attrs.field(
        factory=dict, validator=_check_parameters
    )
    tunnel: SSHTunnel | LocalTunnel | None = attrs.field(default=None, validator=_check_tunnel)
    python: str = attrs.field(default="python3", validator=_check_python)
    code: str | None = attrs.field(default="git", validator=_check_code)
    array: bool = True
    requeue: bool | None = attrs.field(default=None, validator=_optional_flag)
    signal: str | None = attrs.field(default=None, validator=_check_signal)

    def __attrs_post_init__(self) -> None:
        if self.tunnel is None or self.partition is None or self.account is None or self.qos is None:
            defaults = load_defaults()
            if self.tunnel is None:
                self.tunnel = default_tunnel()
            self.partition = self.partition or defaults.partition
            self.account = self.account or defaults.account
            self.qos = self.qos or defaults.qos

    def default_nproc(self) -> int:
        return self.gpus_per_node or self.ntasks_per_node

    @property
    def processes(self) -> int:
        """Task processes per job: more than one starts the task with ``srun``."""
        return self.nodes * self.ntasks_per_node

    def describe(self) -> str:
        where = self.tunnel.describe() if self.tunnel is not None else "?"
        return f"slurm:{self.partition or 'default'}@{where}"


# --------------------------------------------------------------------------- serialization
def _is_tunnel_type(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is not Union and origin is not types.UnionType:
        return False
    args = set(typing.get_args(tp)) - {type(None)}
    return args == {SSHTunnel, LocalTunnel}


def _structure_tunnel(value: Any, tp: Any) -> SSHTunnel | LocalTunnel | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"a tunnel must be a mapping, got {value!r}")
    data = dict(value)
    kind = data.pop("type", None)
    cls = {"ssh": SSHTunnel, "local": LocalTunnel}.get(str(kind))
    if cls is None:
        raise ConfigError(f"unknown tunnel type {kind!r} (expected 'ssh' or 'local')")
    known = {a.name for a in attrs.fields(cls)}
    extra = sorted(set(data) - known)
    if extra:
        raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(extra)}")
    return cls(**data)


def _install_converter_hooks() -> None:
    """Tunnels go to JSON with their ``type`` (``ssh``/``local``), and come back by it."""
    converter = serialization.converter()
    for cls in (SSHTunnel, LocalTunnel):
        converter.register_unstructure_hook(cls, lambda t: {"type": t.kind, **attrs.asdict(t)})
    converter.register_structure_hook_func(_is_tunnel_type, _structure_tunnel)


_install_converter_hooks()
