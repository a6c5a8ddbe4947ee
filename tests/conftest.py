"""Shared test set-up: every test gets its own runyard home, and task processes can import
the task functions in tests/taskdefs.py. The session fixtures ssh_server, bastion, slurm_cluster,
docker_engine, torch_python, chromium, ray_address and ray_python describe the real services
infra/start-services.sh starts; own_ray_head gives a test a Ray head of its own (docs/testing.md)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from typing import NoReturn

import pytest

pytest_plugins = ["runyard.testing"]  # runyard's test kit (runyard_home, runyard_plugins, ...), asked for

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [TESTS, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
)
os.environ.setdefault("RUNYARD_PLAIN", "1")


def _share_bytecode() -> None:
    """The suite starts thousands of Python processes (CLIs, supervisors, runners, tasks): they
    compile runyard and its dependencies once, into bytecode files they all read, as with an
    installed runyard, not each for itself. Where the environment forbids bytecode files beside
    the sources (PYTHONDONTWRITEBYTECODE, which some sandboxes set), they go to one folder in
    the venv (PYTHONPYCACHEPREFIX) instead, never into the tree (bench/bench_core.py does the same)."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or sys.prefix == sys.base_prefix:
        return
    prefix = os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(sys.prefix, "pycache"))
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    sys.pycache_prefix, sys.dont_write_bytecode = prefix, False  # this process, and its xdist workers


_share_bytecode()


@pytest.fixture(autouse=True)
def _fresh_home(runyard_home: str) -> str:
    """Every test gets an empty runyard home (RUNYARD_HOME)."""
    return runyard_home


# ---------------------------------------------------------------------------------------------
# The real services of infra/start-services.sh. Their facts come from the environment (dev.sh
# sources $RUNYARD_INFRA_DIR/env.sh), else from that env.sh file. A service whose facts are
# missing, or that does not answer, skips its tests, or fails them when CI is set.

START_HINT = "start the test services with `./dev.sh services` (as root), then run pytest again"


@dataclasses.dataclass(frozen=True)
class SshServer:
    """The test sshd: key-only login with strict host-key checking against known_hosts."""

    host: str
    port: int
    user: str
    key: str
    known_hosts: str


@dataclasses.dataclass(frozen=True)
class Bastion:
    """The test bed's jump host on ``host:port`` (the `bastion` component), and the login node
    of the test cluster behind it, ``target_host:target_port`` (127.0.0.2, in a network
    namespace of its own that only the bastion's sshd reaches: nothing answers there from
    this machine's network). One user and key for both; both host keys are in
    ``known_hosts`` (the test sshd's file). The bastion forwards to the target only and runs
    no commands. ``ssh_config``: an OpenSSH client config naming them (``runyard-bastion``,
    ``runyard-behind`` through it, and the test sshd as ``runyard-login``)."""

    host: str
    port: int
    user: str
    key: str
    known_hosts: str
    target_host: str
    target_port: int
    ssh_config: str


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """The two-node test cluster (both nodes on this machine), driven over SSH (host ...
    known_hosts) like a login node. The partitions cpu (default) and gpu hold the first node
    only; ``multi_partition`` both; ``low_partition`` and ``high_partition`` the second, where
    a job of high preempts (requeues) jobs of low (docs/testing.md)."""

    host: str
    port: int
    user: str
    key: str
    known_hosts: str
    job_dir: str
    partitions: tuple[str, ...]
    default_partition: str
    gpu_partition: str
    gpus: int
    slurm_conf: str
    nodes: tuple[str, ...]
    multi_partition: str
    low_partition: str
    high_partition: str
    # RUNYARD_SLURM_POLL_MAX for the tests: runyard-slurm's polls back off to 2 s at most, not to
    # the default 10 s, so that a test sees a job end within 2 s of it (the back-off still grows)
    poll_max: float = 2.0

    @property
    def ssh(self) -> SshServer:
        return SshServer(self.host, self.port, self.user, self.key, self.known_hosts)


@dataclasses.dataclass(frozen=True)
class DockerEngine:
    """The Docker engine and the locally built Python test image (bash and python3 inside)."""

    docker_host: str
    image: str


@functools.cache
def _infra_env_file() -> dict[str, str]:
    """The facts in env.sh (lines `export NAME=value`, values shell-quoted)."""
    path = os.path.join(os.environ.get("RUNYARD_INFRA_DIR", "/tmp/runyard-infra"), "env.sh")
    facts: dict[str, str] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return facts
    for line in lines:
        m = re.fullmatch(r"export ([A-Za-z_][A-Za-z0-9_]*)=(.*)", line)
        if m:
            words = shlex.split(m.group(2))
            facts[m.group(1)] = words[0] if words else ""
    return facts


def _unavailable(service: str, reason: str) -> NoReturn:
    message = f"{service} is not available: {reason}; {START_HINT}"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _facts(service: str, *names: str) -> dict[str, str]:
    """The named facts, from the environment or env.sh (which then also fills the environment,
    as sourcing it would: sbatch needs SLURM_CONF, docker.from_env() DOCKER_HOST)."""
    file = _infra_env_file()
    missing = [n for n in names if not (os.environ.get(n) or file.get(n))]
    if missing:
        _unavailable(service, "no " + ", ".join(missing) + " in the environment or in env.sh")
    for name in names:
        os.environ.setdefault(name, file.get(name, ""))
    return {n: os.environ[n] for n in names}


def _answers(argv: list[str], env: dict[str, str], expect: str = "") -> str | None:
    """None if the command succeeds (and prints `expect`), else why not."""
    try:
        done = subprocess.run(
            argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`{shlex.join(argv)}` failed: {e}"
    if done.returncode != 0 or expect not in done.stdout:
        said = " ".join((done.stderr + " " + done.stdout).split())
        return f"`{shlex.join(argv)}` said: {said[:300]}"
    return None


@pytest.fixture(scope="session")
def ssh_server() -> SshServer:
    """The test sshd on 127.0.0.1 (RUNYARD_TEST_SSH_*)."""
    f = _facts(
        "the test sshd",
        *(f"RUNYARD_TEST_SSH_{n}" for n in ("HOST", "PORT", "USER", "KEY", "KNOWN_HOSTS")),
    )
    server = SshServer(
        host=f["RUNYARD_TEST_SSH_HOST"],
        port=int(f["RUNYARD_TEST_SSH_PORT"]),
        user=f["RUNYARD_TEST_SSH_USER"],
        key=f["RUNYARD_TEST_SSH_KEY"],
        known_hosts=f["RUNYARD_TEST_SSH_KNOWN_HOSTS"],
    )
    for path in (server.key, server.known_hosts):
        if not os.path.isfile(path):
            _unavailable("the test sshd", f"{path} does not exist")
    try:
        socket.create_connection((server.host, server.port), timeout=5).close()
    except OSError as e:
        _unavailable("the test sshd", f"nothing answers on {server.host}:{server.port} ({e})")
    return server


@pytest.fixture(scope="session")
def bastion(ssh_server: SshServer) -> Bastion:
    """The test bed's bastion and the login node behind it (RUNYARD_TEST_BASTION_*)."""
    names = ("HOST", "PORT", "USER", "KEY", "KNOWN_HOSTS", "TARGET_HOST", "TARGET_PORT", "SSH_CONFIG")
    f = _facts("the test bastion", *(f"RUNYARD_TEST_BASTION_{n}" for n in names))
    b = Bastion(
        host=f["RUNYARD_TEST_BASTION_HOST"],
        port=int(f["RUNYARD_TEST_BASTION_PORT"]),
        user=f["RUNYARD_TEST_BASTION_USER"],
        key=f["RUNYARD_TEST_BASTION_KEY"],
        known_hosts=f["RUNYARD_TEST_BASTION_KNOWN_HOSTS"],
        target_host=f["RUNYARD_TEST_BASTION_TARGET_HOST"],
        target_port=int(f["RUNYARD_TEST_BASTION_TARGET_PORT"]),
        ssh_config=f["RUNYARD_TEST_BASTION_SSH_CONFIG"],
    )
    for path in (b.key, b.known_hosts, b.ssh_config):
        if not os.path.isfile(path):
            _unavailable("the test bastion", f"{path} does not exist")
    with open(b.known_hosts) as known:
        listed = known.read()
    if f"[{b.host}]:{b.port} " not in listed:
        _unavailable("the test bastion", f"{b.known_hosts} has no host key of {b.host}:{b.port}")
    try:
        socket.create_connection((b.host, b.port), timeout=5).close()
    except OSError as e:
        _unavailable("the test bastion", f"nothing answers on {b.host}:{b.port} ({e})")
    return b


@pytest.fixture(scope="session")
def slurm_cluster(ssh_server: SshServer) -> SlurmCluster:
    """The test Slurm cluster, reached over ssh_server (SLURM_CONF, RUNYARD_TEST_SLURM_*)."""
    f = _facts(
        "the test Slurm cluster",
        "SLURM_CONF",
        "RUNYARD_TEST_SLURM_PARTITIONS",
        "RUNYARD_TEST_SLURM_DEFAULT_PARTITION",
        "RUNYARD_TEST_SLURM_GPU_PARTITION",
        "RUNYARD_TEST_SLURM_GPUS",
        "RUNYARD_TEST_SLURM_JOB_DIR",
        "RUNYARD_TEST_SLURM_NODES",
        "RUNYARD_TEST_SLURM_MULTI_PARTITION",
        "RUNYARD_TEST_SLURM_LOW_PARTITION",
        "RUNYARD_TEST_SLURM_HIGH_PARTITION",
    )
    if not os.path.isfile(f["SLURM_CONF"]):
        _unavailable("the test Slurm cluster", f"{f['SLURM_CONF']} (SLURM_CONF) does not exist")
    why = _answers(["scontrol", "ping"], {"SLURM_CONF": f["SLURM_CONF"]}, expect="is UP")
    if why:
        _unavailable("the test Slurm cluster", why)
    if not os.path.isdir(f["RUNYARD_TEST_SLURM_JOB_DIR"]):
        _unavailable("the test Slurm cluster", f"{f['RUNYARD_TEST_SLURM_JOB_DIR']} does not exist")
    return SlurmCluster(
        **dataclasses.asdict(ssh_server),
        job_dir=f["RUNYARD_TEST_SLURM_JOB_DIR"],
        partitions=tuple(f["RUNYARD_TEST_SLURM_PARTITIONS"].split(",")),
        default_partition=f["RUNYARD_TEST_SLURM_DEFAULT_PARTITION"],
        gpu_partition=f["RUNYARD_TEST_SLURM_GPU_PARTITION"],
        gpus=int(f["RUNYARD_TEST_SLURM_GPUS"]),
        slurm_conf=f["SLURM_CONF"],
        nodes=tuple(f["RUNYARD_TEST_SLURM_NODES"].split(",")),
        multi_partition=f["RUNYARD_TEST_SLURM_MULTI_PARTITION"],
        low_partition=f["RUNYARD_TEST_SLURM_LOW_PARTITION"],
        high_partition=f["RUNYARD_TEST_SLURM_HIGH_PARTITION"],
    )


def _venv_python(what: str, fact: str, module: str) -> str:
    """The python of a venv of the test bed (the env fact ``fact``) where ``module`` is installed
    (found, not imported: importing torch or ray takes seconds)."""
    python = _facts(what, fact)[fact]
    why = _answers(
        [python, "-c", f"import importlib.util as u; print(u.find_spec({module!r}) is not None)"], {}, "True"
    )
    if why:
        _unavailable(what, why)
    return python


@pytest.fixture(scope="session")
def torch_python() -> str:
    """The python of the test bed's torch venv (RUNYARD_TEST_TORCH_PYTHON: PyTorch's CPU build
    and numpy, installed with pip by infra/start-services.sh; never a dependency of runyard)."""
    return _venv_python("the torch venv", "RUNYARD_TEST_TORCH_PYTHON", "torch")


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    """The Docker engine (DOCKER_HOST) with the test image (RUNYARD_TEST_DOCKER_IMAGE)."""
    f = _facts("the Docker engine", "DOCKER_HOST", "RUNYARD_TEST_DOCKER_IMAGE")
    engine = DockerEngine(docker_host=f["DOCKER_HOST"], image=f["RUNYARD_TEST_DOCKER_IMAGE"])
    env = {"DOCKER_HOST": engine.docker_host}
    why = _answers(["docker", "info"], env) or _answers(["docker", "image", "inspect", engine.image], env)
    if why:
        _unavailable("the Docker engine", why)
    return engine


# how the tests start headless Chromium (as root it needs --no-sandbox); each run gets a fresh profile
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Chromium:
    """Debian's chromium, headless (infra/start-services.sh installs it: RUNYARD_TEST_CHROMIUM)."""

    path: str

    def run(self, profile: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """One browser run in a fresh profile folder ``profile``, e.g. ``--dump-dom URL``."""
        argv = [self.path, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    """Headless Chromium (RUNYARD_TEST_CHROMIUM), checked to start."""
    path = _facts("headless Chromium", "RUNYARD_TEST_CHROMIUM")["RUNYARD_TEST_CHROMIUM"]
    why = _answers([path, "--version"], {}, "Chromium")
    if why:
        _unavailable("headless Chromium", why)
    return Chromium(path)


# ---------------------------------------------------------------------------------------------
# Ray: the test bed's head (ray_address, ray_python) and heads of a test's own (own_ray_head),
# both run by infra/ray-head.sh from the ray venv, every port on 127.0.0.1.

RAY_HEAD_SCRIPT = os.path.join(os.path.dirname(TESTS), "infra", "ray-head.sh")
RAY_PORTS = 100  # a head's ports: base +0 (dashboard, Jobs API) .. +10, workers +20 .. +99 (ray-head.sh)


def _ray_jobs_api(address: str, timeout: float = 10) -> str | None:
    """None if GET {address}/api/jobs/ answers with a list of jobs, else why not."""
    try:
        with urllib.request.urlopen(f"{address}/api/jobs/", timeout=timeout) as answer:
            jobs = json.load(answer)
    except (OSError, ValueError) as e:
        return f"GET {address}/api/jobs/ failed: {e}"
    return None if isinstance(jobs, list) else f"GET {address}/api/jobs/ answered {str(jobs)[:200]}"


@pytest.fixture(scope="session")
def ray_address() -> str:
    """The test bed's Ray head: its dashboard, and the Jobs API there (RUNYARD_TEST_RAY_ADDRESS,
    http://127.0.0.1:28265), checked to answer; Ray's temp dir is RUNYARD_TEST_RAY_TEMP. Submit
    with Ray's own CLI or SDK from ray_python, or over the REST API (POST /api/jobs/); a job's
    entrypoint finds the ray venv's python3 first on its PATH."""
    f = _facts("the Ray head", "RUNYARD_TEST_RAY_ADDRESS", "RUNYARD_TEST_RAY_TEMP")
    address = f["RUNYARD_TEST_RAY_ADDRESS"]
    why = _ray_jobs_api(address)
    if why:
        _unavailable("the Ray head", why)
    return address


@pytest.fixture(scope="session")
def ray_python() -> str:
    """The python of the ray venv (RUNYARD_TEST_RAY_PYTHON: ray[default] 2.60.0, installed with
    pip by infra/start-services.sh; never a dependency of runyard); `ray` is beside it."""
    return _venv_python("the ray venv", "RUNYARD_TEST_RAY_PYTHON", "ray")


class RayHeadError(RuntimeError):
    """infra/ray-head.sh failed (its output is the message)."""


@dataclasses.dataclass(frozen=True)
class RayHead:
    """A Ray head of a test's own (infra/ray-head.sh) from the ray venv ``venv``: every port on
    127.0.0.1 from ``port_base`` on (+0 its dashboard and Jobs API, ``address``; +20..+99 its
    workers), its files and Ray's temp dir (``temp_dir``) in ``state_dir``."""

    state_dir: str
    port_base: int
    venv: str

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port_base}"

    @property
    def temp_dir(self) -> str:
        return os.path.join(self.state_dir, "temp")

    def start(self, timeout: float = 300) -> None:
        """Start it (again, on the same ports); returns once its Jobs API answers."""
        self._script("start", str(self.port_base), self.venv, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL to every process of the head at once, as in a crash; returns once all are gone."""
        self._script("kill")

    def stop(self) -> None:
        """SIGTERM to every process of the head, SIGKILL after 5 s (Ray's GCS hangs in its shutdown
        after SIGTERM, flushing events); returns once all are gone."""
        self._script("stop")

    def pids(self) -> list[int]:
        """Every process of the head (its daemons, workers, and its jobs' processes)."""
        return [int(p) for p in self._script("pids").split()]

    def answers(self) -> bool:
        return _ray_jobs_api(self.address, timeout=5) is None

    def _script(self, command: str, *args: str, timeout: float = 60) -> str:
        # the head's environment is handed down to its jobs: not this test process's Python set-up
        # (the project's venv on PATH, PYTHONPATH) nor its runyard home, as for the bed's head
        drop = ("PYTHONPATH", "PYTHONPYCACHEPREFIX", "PYTHONHOME", "VIRTUAL_ENV", "RUNYARD_HOME")
        env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYTEST_")}
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(sys.prefix + os.sep)
        )
        argv = ["bash", RAY_HEAD_SCRIPT, command, self.state_dir, *args]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RayHeadError(f"`{shlex.join(argv)}` failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done.stdout


def free_ray_port_base(low: int = 20000, high: int = 28000) -> int:
    """A port base B in [low, high) (below the ephemeral ports and the bed's head, 28265..28364)
    such that nothing listens on B..B+99 now; chosen at random, so that tests in other workers
    rarely pick the same one (own_ray_head tries another when ray-head.sh finds a port held)."""
    ss = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    listening = {int(line.split()[3].rsplit(":", 1)[1]) for line in ss.splitlines() if line.strip()}
    bases = list(range(low, high - RAY_PORTS + 1, RAY_PORTS))
    random.shuffle(bases)
    for base in bases:
        if not listening & set(range(base, base + RAY_PORTS)):
            return base
    raise RuntimeError(f"no {RAY_PORTS} free ports in a row between {low} and {high}")


@pytest.fixture
def own_ray_head(ray_python: str) -> Iterator[RayHead]:
    """A Ray head of this test's own, started from the ray venv in a short tmp dir (Ray's unix
    socket paths are short) on free ports: ``.address`` (its Jobs API), ``.kill()`` (SIGKILL to all
    its processes), ``.start()`` (again, same ports), ``.pids()``; stopped and removed afterwards."""
    venv = os.path.dirname(os.path.dirname(ray_python))
    state = tempfile.mkdtemp(prefix="ry-ray-", dir="/tmp")
    head: RayHead | None = None
    try:
        for attempt in range(3):
            head = RayHead(state, free_ray_port_base(), venv)
            try:
                head.start()
                break
            except RayHeadError as e:  # another test took one of the ports meanwhile
                if "held by processes" not in str(e) or attempt == 2:
                    raise
        assert head is not None
        yield head
    finally:
        if head is not None:
            head.kill()  # at once: its GCS never ends on SIGTERM (head.stop() waits 5 s for it)
        shutil.rmtree(state, ignore_errors=True)


_SERVICE_MARKERS = {
    "ssh_server": "ssh", "bastion": "ssh", "slurm_cluster": "slurm", "docker_engine": "docker", "ray_address": "ray", "own_ray_head": "ray",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Parallel runs: `./dev.sh test` runs pytest-xdist workers with `--dist loadgroup`. Every test
# has its own runyard home and tmp_path, and names what it makes on a service after its own
# experiment (job folders, container labels), so tests run in any worker, beside any other,
# except those that share what a worker cannot. They get an xdist_group, and a group runs in
# one worker, one test after another:
# - "slurm": every test that uses the test cluster (marker `slurm`). The node of its cpu and
#   gpu partitions has 2 cores (two jobs at a time) and 2 GPUs: tests in two workers would
#   wait for each other's jobs.
# - the tests of a module that use a module-scoped fixture (a second test bed, a venv, the
#   example's run): in one worker, so that the fixture is made once for them all.
# The Slurm group is the run's critical path: its worker takes about as long for it as the
# other workers take for everything else. So that they do not slow it down, a worker runs every
# test outside it at a lower CPU priority (nice 10), and so do the processes such a test starts
# in the worker's session (docs/testing.md, "Running in parallel").
SLURM_GROUP = "slurm"
OTHERS_NICENESS = 10


def xdist_group(item: pytest.Item) -> str | None:
    """The group an item must run in (see above), or None: any worker will do."""
    if item.get_closest_marker("slurm") is not None:
        return SLURM_GROUP
    fixtures = getattr(item, "_fixtureinfo", None)
    for defs in fixtures.name2fixturedefs.values() if fixtures else ():
        if defs and defs[-1].scope == "module":
            return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (it runs in each worker)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use a service fixture carry its marker (-m "not slurm and not docker"), and
    tests that must share a worker their xdist_group. In a pytest-xdist worker, the tests
    marked slow come first: pytest-xdist hands out the groups (the largest first), then the
    other tests in this order, so that no long test starts last and ends the run alone."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in _SERVICE_MARKERS:
                item.add_marker(_SERVICE_MARKERS[fixture])
        group = xdist_group(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):  # every worker sorts alike: their collections must be equal
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@functools.cache
def _yield_the_cpu() -> None:
    """Lower this worker's CPU priority, once: a process can lower its own, not raise it again,
    which is enough, as a worker that runs the Slurm group runs it first, and all of it."""
    os.nice(OTHERS_NICENESS)


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures: they run at its priority too
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under --dist loadgroup, fail a grouped test that pytest-xdist did not group (it marks a
    grouped test's node id with `@group`) rather than run it beside the rest of its group; run
    a test outside the Slurm group at a lower CPU priority (above)."""
    if not item.config.getoption("loadgroup", False):
        return
    if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
        # pytest 9.2 with pytest-xdist 3.8: pytest-xdist#1386
        pytest.fail(
            "pytest-xdist ignored this test's xdist_group (pytest-xdist#1386): use the pytest"
            " of uv.lock (uv sync --frozen), or run without -n",
            pytrace=False,
        )
    if xdist_group(item) != SLURM_GROUP:
        _yield_the_cpu()
