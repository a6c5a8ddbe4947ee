"""A fresh machine, emulated honestly: every step the README's two commands (`./dev.sh demo`,
`./dev.sh test`) take there runs for real, against what a fresh Debian machine lacks.

- infra/start-services.sh, with a dpkg-query on PATH that has never heard of any package (it
  answers as the real one does for an unknown name), in a new state dir on unused ports beside
  the running test bed: every package goes through apt_install (the real apt-get), and a new
  sshd, bastion with the login node behind it (in a network namespace of its own), munge key,
  MariaDB datadir, slurmdbd, slurmctld, a slurmd for each of the two nodes,
  test image, torch venv and ray venv (pip, from Debian's python3) and a Ray head come up from
  nothing, then infra/stop-services.sh removes them again.
- dev.sh in a fresh clone (the working tree's files over a `git clone`), on Debian's PATH with no
  uv anywhere, and with a python3 that has no pip until apt-get installs python3-pip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import until
from runyard.store import pid_alive

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START = REPO / "infra" / "start-services.sh"
STOP = REPO / "infra" / "stop-services.sh"
RAY_HEAD = REPO / "infra" / "ray-head.sh"
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # root's PATH on Debian
RUNNING_BED = Path(os.environ.get("RUNYARD_INFRA_DIR", "/tmp/runyard-infra"))

# dpkg-query on a machine that has never heard of any package; the real one prints this for an
# unknown name and exits 1 (test_the_dpkg_query_shim_answers_like_dpkg_for_an_unknown_package)
DPKG_QUERY_KNOWS_NOTHING = r"""#!/bin/sh
rc=0 skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case $a in
    -f | --showformat) skip=1 ;;
    -*) ;;
    *) echo "dpkg-query: no packages found matching $a" >&2; rc=1 ;;
  esac
done
exit $rc
"""
# apt_install's first line before the fix (issue 8): set -e and pipefail end the script on it
OLD_INSTALLED_LINE = (
    """installed=" $(dpkg-query -W -f='${Package}:${Status} ' "$@" 2>/dev/null"""
    """ | sed 's/:install ok installed / /g') \""""
)

# python3 of a fresh Debian machine: no pip until apt-get has installed python3-pip (apt-get below)
PYTHON3_WITHOUT_PIP = r"""#!/bin/sh
if [ "$1" = -m ] && [ "$2" = pip ] && [ ! -e "$(dirname "$0")/pip-installed" ]; then
  echo "/usr/bin/python3: No module named pip" >&2; exit 1
fi
exec /usr/bin/python3 "$@"
"""
# the real apt-get, recorded; once it has installed python3-pip, the python3 beside it has pip
APT_GET_RECORDED = r"""#!/bin/sh
echo "$*" >>"$(dirname "$0")/apt-get.calls"
/usr/bin/apt-get "$@" || exit
case " $* " in *" install "*" python3-pip"*) touch "$(dirname "$0")/pip-installed" ;; esac
"""


@pytest.fixture(autouse=True)
def _root() -> None:
    """These tests install packages and start daemons, as the README's commands do: root only."""
    if os.geteuid() != 0:
        message = "the fresh-machine tests run infra/start-services.sh and apt-get: run them as root"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def fresh_env(path: str = FRESH_PATH, **extra: str) -> dict[str, str]:
    """This process's environment as a new user's shell on a fresh machine has it: Debian's PATH,
    and none of the test bed's facts, the venv or uv settings (except its cache)."""
    dropped = ("RUNYARD_INFRA_", "RUNYARD_TEST_", "SLURM_", "UV_", "PYTEST_", "PYENV")
    venv = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONPYCACHEPREFIX", "DOCKER_HOST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k not in venv}
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    return {**env, "PATH": path, **extra}


def write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def sh(
    argv: list[str], env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def free_ports(n: int) -> list[int]:
    """n TCP ports on 127.0.0.1 that nothing listens on now."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port_block(size: int = 100, low: int = 20000, high: int = 28000) -> int:
    """The first port of ``size`` ports in a row that nothing listens on now, below the ephemeral
    ports (free_ports' own) and the running bed's Ray head (28265..28364), chosen at random."""
    ss = sh(["ss", "-Hltn"], fresh_env()).stdout
    listening = {int(line.split()[3].rsplit(":", 1)[1]) for line in ss.splitlines() if line.strip()}
    bases = [b for b in range(low, high - size + 1, size) if not listening & set(range(b, b + size))]
    return random.choice(bases)


def facts(env_sh: Path) -> dict[str, str]:
    found = {}
    for line in env_sh.read_text().splitlines():
        m = re.fullmatch(r"export ([A-Z_]+)=(.*)", line)
        if m:
            found[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""
    return found


@pytest.fixture(scope="session")  # not module: only fresh_bed's tests need to share a worker
def knows_nothing(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH whose dpkg-query has never heard of any package (everything else is Debian's)."""
    shim = write_exe(tmp_path_factory.mktemp("dpkg-shim") / "dpkg-query", DPKG_QUERY_KNOWS_NOTHING)
    return f"{shim.parent}:{FRESH_PATH}"


# ------------------------------------------------------------------------- the shim, the bug


def test_the_dpkg_query_shim_answers_like_dpkg_for_an_unknown_package(knows_nothing: str) -> None:
    argv = ["dpkg-query", "-W", "-f=${Package}:${Status} ", "runyard-no-such-package"]
    real = sh(argv, fresh_env())
    shim = sh(argv, fresh_env(knows_nothing))
    assert (shim.returncode, shim.stdout, shim.stderr) == (real.returncode, real.stdout, real.stderr)
    assert (real.returncode, real.stderr) == (
        1,
        "dpkg-query: no packages found matching runyard-no-such-package\n",
    )


def installed_line_says(line: str, packages: str, path: str) -> subprocess.CompletedProcess[str]:
    """Run one `installed=...` line of apt_install under start-services.sh's shell options."""
    script = f'set -Eeuo pipefail\nset -- {packages}\n{line}\nprintf "%s" "$installed"'
    return sh(["bash", "-c", script], fresh_env(path))


def test_the_old_apt_install_line_dies_when_dpkg_never_heard_of_the_packages(knows_nothing: str) -> None:
    """The bug of issue 8, reproduced by the shim: so the run below would fail without the fix."""
    assert installed_line_says(OLD_INSTALLED_LINE, "openssh-server munge", knows_nothing).returncode == 1


def test_apt_install_treats_packages_dpkg_never_heard_of_as_missing(knows_nothing: str) -> None:
    line = next(x.strip() for x in START.read_text().splitlines() if x.strip().startswith("installed="))
    fresh = installed_line_says(line, "openssh-server munge", knows_nothing)
    assert (fresh.returncode, fresh.stdout.split()) == (0, [])
    # and with the real dpkg it still sees what is installed (bash and coreutils always are)
    real = installed_line_says(line, "bash runyard-no-such-package coreutils", FRESH_PATH)
    assert (real.returncode, real.stdout.split()) == (0, ["bash", "coreutils"])


# -------------------------------------------------------- start-services.sh from nothing


@dataclasses.dataclass(frozen=True)
class FreshBed:
    state: Path
    started: subprocess.CompletedProcess[str]
    facts: dict[str, str]
    image: str


PID_FILES = [
    "ssh/sshd.pid",
    "bastion/bastion.pid",
    "bastion/cluster.pid",
    "munge/munged.pid",
    "mysql/mysqld.pid",
    "slurm/slurmdbd.pid",
    "slurm/slurmctld.pid",
    "slurm/slurmd-node1.pid",
    "slurm/slurmd-node2.pid",
]


def pids(state: Path) -> dict[str, str]:
    """The PIDs in a state dir's PID files."""
    return {n: (state / n).read_text().strip() for n in PID_FILES if (state / n).exists()}


def ray_head(state: Path) -> dict[str, str]:
    """The PIDs of a state dir's Ray head (infra/ray-head.sh pids: it has no PID files)."""
    done = sh(["bash", str(RAY_HEAD), "pids", str(state / "ray")], fresh_env(), timeout=30)
    return {f"ray/{pid}": pid for pid in done.stdout.split()}


def ray_daemons(state: Path) -> set[str]:
    """The gcs_server and raylet of a state dir's Ray head: they live as long as the head (its
    workers come and go)."""
    return {
        pid for pid in ray_head(state).values()
        if Path(f"/proc/{pid}/comm").exists() and Path(f"/proc/{pid}/comm").read_text().strip() in ("gcs_server", "raylet")
    }  # fmt: skip


@pytest.fixture(scope="module")
def fresh_bed(knows_nothing: str) -> Iterator[FreshBed]:
    """start-services.sh for ssh, bastion, slurm, docker, torch and ray on a machine whose dpkg knows no package,
    in a new state dir (short, for unix socket paths) on unused ports, with a new image tag;
    stopped and purged afterwards, and then none of its daemons may be left."""
    state = Path(tempfile.mkdtemp(prefix="ry-fresh-", dir="/tmp"))
    state.chmod(0o755)  # munged wants a world-searchable socket directory
    ssh, bastion, ctld, slurmd, slurmd2, dbd, mysql = free_ports(7)
    image = f"runyard-test/fresh-{uuid.uuid4().hex[:8]}:3.11"
    env = fresh_env(
        knows_nothing,
        RUNYARD_INFRA_DIR=str(state),
        RUNYARD_INFRA_COMPONENTS="ssh bastion slurm docker torch ray",
        RUNYARD_INFRA_SSH_PORT=str(ssh),
        RUNYARD_INFRA_BASTION_PORT=str(bastion),
        RUNYARD_INFRA_SLURMCTLD_PORT=str(ctld),
        RUNYARD_INFRA_SLURMD_PORT=str(slurmd),
        RUNYARD_INFRA_SLURMD2_PORT=str(slurmd2),
        RUNYARD_INFRA_SLURMDBD_PORT=str(dbd),
        RUNYARD_INFRA_MYSQL_PORT=str(mysql),
        RUNYARD_INFRA_DOCKER_IMAGE=image,
        RUNYARD_INFRA_RAY_PORT_BASE=str(free_port_block()),
    )
    running_bed, running_ray = pids(RUNNING_BED), ray_daemons(RUNNING_BED)
    started = sh(["bash", str(START)], env, timeout=600)
    ours = {**pids(state), **ray_head(state)}
    try:
        if started.returncode != 0:
            pytest.fail(f"start-services.sh failed:\n{started.stdout}{started.stderr}", pytrace=False)
        yield FreshBed(state, started, facts(state / "env.sh"), image)
    finally:
        stopped = sh(["bash", str(STOP), "--purge", "--remove-image"], env, timeout=300)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not state.exists()
        # a daemon that has exited may linger a moment (exiting, or a zombie not yet reaped)
        until(lambda: not [p for p in ours.values() if pid_alive(int(p))], "the fresh bed's daemons to end")
        assert sh(["docker", "image", "inspect", image], fresh_env()).returncode == 1
        assert not ray_head(state)
        # the running test bed was left alone, its Ray head too (no `ray stop`)
        assert (pids(RUNNING_BED), ray_daemons(RUNNING_BED)) == (running_bed, running_ray)


def test_start_services_installs_every_package_through_apt_on_a_machine_that_has_none(
    fresh_bed: FreshBed,
) -> None:
    out = fresh_bed.started.stdout
    for packages in (
        "iproute2",
        "openssh-server openssh-client",
        "socat",
        "munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client",
        "mmdebstrap",
    ):
        assert f"apt-get install {packages}\n" in out
        assert re.search(rf"installed {re.escape(packages)} in [0-9.]+ s\n", out)
    assert fresh_bed.facts["RUNYARD_INFRA_DIR"] == str(fresh_bed.state)


def assert_new(bed: FreshBed, name: str) -> None:
    """The fresh state dir's file (a key) was generated anew, not copied from the running test bed."""
    other = RUNNING_BED / name
    assert not other.exists() or (bed.state / name).read_bytes() != other.read_bytes()


def ssh_to(bed: FreshBed, command: str, known_hosts: str = "") -> subprocess.CompletedProcess[str]:
    f = bed.facts
    return sh(
        [
            "ssh", "-p", f["RUNYARD_TEST_SSH_PORT"], "-i", f["RUNYARD_TEST_SSH_KEY"],
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or f['RUNYARD_TEST_SSH_KNOWN_HOSTS']}",
            f"{f['RUNYARD_TEST_SSH_USER']}@{f['RUNYARD_TEST_SSH_HOST']}", command,
        ],
        fresh_env(),
        timeout=60,
    )  # fmt: skip


def test_the_fresh_sshd_accepts_its_new_key_with_strict_host_key_checking(fresh_bed: FreshBed) -> None:
    login = ssh_to(fresh_bed, "echo $SLURM_CONF")
    assert (login.returncode, login.stdout) == (0, f"{fresh_bed.state}/slurm/slurm.conf\n"), login.stderr
    empty = fresh_bed.state / "empty_known_hosts"
    empty.write_text("")
    refused = ssh_to(fresh_bed, "true", known_hosts=str(empty))
    assert refused.returncode == 255 and "Host key verification failed" in refused.stderr
    assert_new(fresh_bed, "ssh/ssh_host_ed25519_key.pub")


def test_the_fresh_bastion_is_the_only_way_to_its_login_node(fresh_bed: FreshBed) -> None:
    f = fresh_bed.facts
    ssh = ["ssh", "-F", f["RUNYARD_TEST_BASTION_SSH_CONFIG"]]
    assert f["RUNYARD_TEST_BASTION_SSH_CONFIG"] == f"{fresh_bed.state}/bastion/ssh_config"
    assert (f["RUNYARD_TEST_BASTION_KNOWN_HOSTS"], f["RUNYARD_TEST_BASTION_HOST"]) == (
        f["RUNYARD_TEST_SSH_KNOWN_HOSTS"], "127.0.0.1",
    )  # fmt: skip
    through = sh([*ssh, "runyard-behind", "echo $SLURM_CONF"], fresh_env(), timeout=60)
    assert (through.returncode, through.stdout) == (0, f"{fresh_bed.state}/slurm/slurm.conf\n"), (
        through.stderr
    )
    direct = sh([*ssh, "-o", "ProxyJump=none", "runyard-behind", "true"], fresh_env(), timeout=60)
    assert direct.returncode == 255 and "Connection refused" in direct.stderr, direct.stderr
    for side in ("bastion", "cluster"):
        assert_new(fresh_bed, f"bastion/{side}_host_ed25519_key.pub")
    # its login node listens in a network of its own: neither this one nor the running bed's
    nets = {
        bed: os.readlink(f"/proc/{(bed / 'bastion/cluster.pid').read_text().strip()}/ns/net")
        for bed in (fresh_bed.state, RUNNING_BED) if (bed / "bastion/cluster.pid").exists()
    }  # fmt: skip
    assert nets[fresh_bed.state] != os.readlink("/proc/self/ns/net")
    assert len(set(nets.values())) == len(nets)


def test_the_fresh_cluster_has_its_own_munge_key_and_accounting_database(fresh_bed: FreshBed) -> None:
    assert len((fresh_bed.state / "munge" / "munge.key").read_bytes()) >= 128
    assert_new(fresh_bed, "munge/munge.key")
    assert (fresh_bed.state / "mysql" / "data" / "slurm_acct_db").is_dir()
    env = fresh_env(SLURM_CONF=fresh_bed.facts["SLURM_CONF"])
    clusters = sh(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster,controlport"], env, timeout=30)
    ctld_port = re.search(r"^SlurmctldPort=(\d+)$", Path(fresh_bed.facts["SLURM_CONF"]).read_text(), re.M)
    assert ctld_port and clusters.stdout == f"runyard-test|{ctld_port.group(1)}\n", clusters.stderr


def test_the_fresh_cluster_runs_a_job_submitted_over_the_fresh_sshd_and_sacct_records_it(
    fresh_bed: FreshBed,
) -> None:
    job_dir = Path(fresh_bed.facts["RUNYARD_TEST_SLURM_JOB_DIR"])
    submit = ssh_to(
        fresh_bed,
        f"sbatch --parsable -D {shlex.quote(str(job_dir))} -o job-%j.out --wrap 'python3 -c \"print(6 * 7)\"'",
    )
    job = submit.stdout.strip()
    assert submit.returncode == 0 and job.isdigit(), submit.stderr
    deadline = time.monotonic() + 60  # sacct lags a few seconds behind the job; guards against a hang only
    state = ""
    while state != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.3)
        state = ssh_to(fresh_bed, f"sacct -X -n -P -j {job} -o State").stdout.strip()
    assert state == "COMPLETED"
    assert (job_dir / f"job-{job}.out").read_text() == "42\n"


def test_the_fresh_cluster_has_two_nodes_that_run_a_job_across_both(fresh_bed: FreshBed) -> None:
    job_dir = Path(fresh_bed.facts["RUNYARD_TEST_SLURM_JOB_DIR"])
    assert fresh_bed.facts["RUNYARD_TEST_SLURM_NODES"] == "node1,node2"
    multi = fresh_bed.facts["RUNYARD_TEST_SLURM_MULTI_PARTITION"]
    submit = ssh_to(
        fresh_bed,
        f"sbatch --parsable -p {multi} --nodes=2 -D {shlex.quote(str(job_dir))} -o two-%j.out"
        " --wrap 'srun printenv SLURMD_NODENAME'",
    )
    job = submit.stdout.strip()
    assert submit.returncode == 0 and job.isdigit(), submit.stderr
    out = job_dir / f"two-{job}.out"
    until(lambda: out.exists() and len(out.read_text().split()) == 2, "the job's two tasks", timeout=60)
    assert sorted(out.read_text().split()) == ["node1", "node2"]


def test_the_fresh_torch_venv_is_made_with_pip_and_imports_torch(fresh_bed: FreshBed) -> None:
    python = fresh_bed.facts["RUNYARD_TEST_TORCH_PYTHON"]
    assert python == f"{fresh_bed.state}/torch/venv/bin/python"
    assert re.search(r"^  torch +[0-9.]+ s  installed \(torch 2\.13\.0", fresh_bed.started.stdout, re.M)
    done = sh([python, "-c", "import torch, numpy; print(torch.__version__)"], fresh_env(), timeout=120)
    assert done.stdout.startswith("2.13.0"), done.stderr


def test_the_fresh_ray_head_runs_a_job_from_its_new_venv_and_listens_on_loopback_only(
    fresh_bed: FreshBed,
) -> None:
    f, out = fresh_bed.facts, fresh_bed.started.stdout
    python = f["RUNYARD_TEST_RAY_PYTHON"]
    assert python == f"{fresh_bed.state}/ray/venv/bin/python"
    assert f["RUNYARD_TEST_RAY_TEMP"] == f"{fresh_bed.state}/ray/temp"
    assert re.search(r"^  ray +[0-9.]+ s  installed \(ray 2\.60\.0\)$", out, re.M)
    address = f["RUNYARD_TEST_RAY_ADDRESS"]
    assert re.search(rf"^  ray-head +[0-9.]+ s  started, Jobs API at {re.escape(address)}$", out, re.M)
    # the smoke test's job ran Debian's python3, through the new venv
    assert re.search(r"smoke test: Ray job \S+ ran to SUCCEEDED; its entrypoint's python3 is Python 3\.", out)
    ray = str(Path(python).parent / "ray")
    submit = [ray, "job", "submit", "--", "python3", "-c", "print(6 * 7)"]
    done = sh(submit, fresh_env(RAY_ADDRESS=address, RAY_USAGE_STATS_ENABLED="0"), timeout=180)
    assert done.returncode == 0 and "\n42\n" in done.stdout, done.stdout + done.stderr
    head = {int(p) for p in ray_head(fresh_bed.state).values()}
    ss = sh(["ss", "-Hltnp"], fresh_env()).stdout
    mine = [ln.split()[3] for ln in ss.splitlines() if {int(p) for p in re.findall(r"pid=(\d+)", ln)} & head]
    assert len(mine) >= 11 and all(re.match(r"(\[::ffff:)?127\.", a) for a in mine), mine


def test_the_fresh_image_is_built_from_debian_packages_and_runs_python3(fresh_bed: FreshBed) -> None:
    assert fresh_bed.facts["RUNYARD_TEST_DOCKER_IMAGE"] == fresh_bed.image
    assert re.fullmatch(r"3\.\d+\.\d+", fresh_bed.facts["RUNYARD_TEST_DOCKER_IMAGE_PYTHON"])
    assert "building " + fresh_bed.image + " from Debian bookworm packages" in fresh_bed.started.stdout


def test_start_services_names_the_fix_when_the_host_name_does_not_resolve_to_loopback(
    knows_nothing: str, tmp_path: Path
) -> None:
    """As in a container whose /etc/hosts maps the host name elsewhere: it stops before installing."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    env = fresh_env(
        knows_nothing, RUNYARD_INFRA_DIR=str(tmp_path / "infra"), RUNYARD_INFRA_COMPONENTS="slurm"
    )
    bind = f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && exec bash {shlex.quote(str(START))}"
    done = sh(["unshare", "--mount", "sh", "-c", bind], env, timeout=120)
    host = socket.gethostname().split(".")[0]
    assert done.returncode == 1
    assert (
        f"ERROR: host name '{host}' does not resolve; add '127.0.1.1 {host}' to /etc/hosts\n" in done.stderr
    )
    assert "apt-get" not in done.stdout


# ------------------------------------------------------------------------- dev.sh from nothing


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of this repository with the working tree's files over it (uncommitted work
    included), without .venv or .tools: what a new user has after `git clone`."""
    dest = tmp_path / "runyard"
    assert sh(["git", "clone", "-q", str(REPO), str(dest)], fresh_env(), timeout=60).returncode == 0
    listed = sh(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], fresh_env(), cwd=REPO
    )
    for name in filter(None, listed.stdout.split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
        else:  # deleted in the working tree
            (dest / name).unlink(missing_ok=True)
    assert not (dest / ".venv").exists() and not (dest / ".tools").exists()
    assert shutil.which("uv", path=FRESH_PATH) is None, (
        "this machine has uv on Debian's PATH: nothing to bootstrap"
    )
    return dest


def assert_installed(clone: Path) -> None:
    """uv from PyPI in .tools/, and a .venv in which the runyard CLI works."""
    assert sh([str(clone / ".tools/bin/uv"), "--version"], fresh_env()).stdout.startswith("uv ")
    cli = sh([str(clone / ".venv/bin/runyard"), "--help"], fresh_env())
    assert cli.returncode == 0 and cli.stdout.startswith("usage: runyard"), cli.stderr


def test_dev_sh_demo_in_a_fresh_clone_without_uv_installs_uv_and_the_venv_then_runs_the_pipeline(
    clone: Path,
) -> None:
    demo = sh(["./dev.sh", "demo"], fresh_env(), cwd=clone)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "[dev.sh] installing uv into .tools/ (from PyPI)\n" in demo.stderr
    assert "final status: SUCCEEDED\n" in demo.stdout
    assert_installed(clone)


def test_dev_sh_on_a_python3_without_pip_installs_debians_python3_pip_first(
    clone: Path, tmp_path: Path
) -> None:
    shims = tmp_path / "shims"
    python3 = write_exe(shims / "python3", PYTHON3_WITHOUT_PIP)
    write_exe(shims / "apt-get", APT_GET_RECORDED)
    env = fresh_env(f"{shims}:{FRESH_PATH}")
    assert sh([str(python3), "-m", "pip", "--version"], env).returncode == 1  # the shim has no pip yet
    setup = sh(["./dev.sh", "setup"], env, cwd=clone)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "[dev.sh] python3 has no pip: installing Debian's python3-pip\n" in setup.stderr
    update, install = (call.split() for call in (shims / "apt-get.calls").read_text().splitlines())
    assert update[-1] == "update" and install[0] == "install" and "python3-pip" in install
    assert_installed(clone)


def test_dev_sh_test_in_a_fresh_clone_runs_ruff_mypy_and_pytest(clone: Path, tmp_path: Path) -> None:
    """The README's second command, with no services (they are proven above) and pytest collecting only."""
    env = fresh_env(RUNYARD_INFRA_DIR=str(tmp_path / "infra"), RUNYARD_INFRA_COMPONENTS="")
    done = sh(["./dev.sh", "test", "--collect-only", "-q"], env, cwd=clone)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.findall(r"^\[dev\.sh\] (\w+)", done.stderr, re.M) == [
        "installing",
        "services",
        "ruff",
        "mypy",
        "pytest",
    ]
    assert re.search(r"^\d+ tests collected", done.stdout, re.M)
