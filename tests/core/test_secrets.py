"""Secret environment variables (names with TOKEN, SECRET, PASSWORD or KEY): their values reach
the tasks (attached, detached, direct, and a takeover or retry from a new process that has
them in its environment), never a file under the runyard home, nor a supervisor's command
line; and the home is the user's alone (0700, the store 0600), whatever the umask."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import runyard as run
from helpers import until
from runyard.jobfiles import runner_path
from runyard.store import close_store

TOKEN_A = "tok-a-5f0c1e2d9b7a"
TOKEN_B = "tok-b-8a7e6d4c3f21"
PASSWORD = "pw-3c9d0e1f7a65"
PLAIN = "plain-value-0d4e"
# prints the SHA-256 of each named variable's value: the value itself never reaches a log
HASHES = 'for n in "$@"; do printf %s "${!n}" | sha256sum | cut -c1-64; done'


def hashes(*names: str, env: dict[str, str] | None = None) -> run.Script:
    return run.Script(inline=HASHES, args=names, env=env)


def sha(*values: str) -> str:
    return "".join(hashlib.sha256(v.encode()).hexdigest() + "\n" for v in values)


def files_holding(root: str, *values: str) -> list[str]:
    """Every file under ``root`` (the store, its -wal and -shm, task.json, logs) that holds
    one of ``values``, as ``path: value``."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = f.read()
            found += [f"{path}: {v}" for v in values if v.encode() in data]
    return found


def store_bytes(home: str) -> bytes:
    return b"".join(
        Path(home, name).read_bytes()
        for name in ("runyard.db", "runyard.db-wal")
        if Path(home, name).exists()
    )


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`runyard ARGS` as a new process, with exactly ``env`` added to this one's environment."""
    return subprocess.run(
        [sys.executable, "-m", "runyard", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )  # fmt: skip


def waits_for(path: Path) -> run.Script:
    return run.Script(inline=f"until [ -e {shlex.quote(str(path))} ]; do sleep 0.05; done")


def missing_reason(task_id: str, name: str, experiment_id: str) -> str:
    return (
        f"launch failed: task {task_id} needs the secret {name}; secrets are never stored: set {name} "
        f"in the environment of the process that drives the experiment, e.g. "
        f"`{name}=... runyard takeover {experiment_id}`"
    )


# ------------------------------------------------------------------------------ nothing on disk
def test_an_attached_run_gives_each_task_its_own_secrets_and_writes_none_under_the_home(
    runyard_home: str,
) -> None:
    exp = run.Experiment("secrets")
    a = exp.add(
        hashes("HF_TOKEN", "PLAIN"),
        executor=run.LocalExecutor(env_vars={"HF_TOKEN": TOKEN_A, "PLAIN": PLAIN}),
        name="a",
    )
    b = exp.add(  # a Script's own env wins over its executor's, as in any job's environment
        hashes("HF_TOKEN", "DB_PASSWORD", env={"HF_TOKEN": TOKEN_B, "DB_PASSWORD": PASSWORD}),
        executor=run.LocalExecutor(env_vars={"HF_TOKEN": TOKEN_A}),
        name="b",
    )

    assert exp.run() == "SUCCEEDED"

    assert exp.get_logs(a).stdout == sha(TOKEN_A, PLAIN)
    assert exp.get_logs(b).stdout == sha(TOKEN_B, PASSWORD)
    assert files_holding(runyard_home, TOKEN_A, TOKEN_B, PASSWORD) == []
    assert PLAIN.encode() in store_bytes(runyard_home)  # the scan does see what the store holds


def test_a_direct_run_gives_a_script_its_secret_and_writes_none_under_the_home(runyard_home: str) -> None:
    exp = run.Experiment("secrets-direct")
    t = exp.add(hashes("API_KEY", env={"API_KEY": TOKEN_A}))
    assert exp.run(direct=True) == "SUCCEEDED"
    assert exp.get_logs(t).stdout == sha(TOKEN_A)
    assert files_holding(runyard_home, TOKEN_A) == []


def test_a_supervisor_gets_the_secrets_on_a_pipe_not_on_its_command_line_nor_on_disk(
    tmp_path: Path, runyard_home: str
) -> None:
    go = tmp_path / "go"
    exp = run.Experiment("secrets-detached")
    first = exp.add(waits_for(go), name="first")
    then = exp.add(  # launched by the supervisor, once `first` has succeeded
        hashes("HF_TOKEN", "DB_PASSWORD", env={"DB_PASSWORD": PASSWORD}),
        executor=run.LocalExecutor(env_vars={"HF_TOKEN": TOKEN_A}),
        name="then",
        dependencies=[first],
    )
    exp.run(detach=True)
    record = exp.store.experiment(exp.id)
    assert record.driver_kind == "supervisor" and record.driver_pid is not None
    command_line = Path(f"/proc/{record.driver_pid}/cmdline").read_bytes()
    assert TOKEN_A.encode() not in command_line and PASSWORD.encode() not in command_line

    go.touch()
    assert exp.wait(timeout=120) == "SUCCEEDED"
    assert exp.get_logs(then).stdout == sha(TOKEN_A, PASSWORD)
    assert files_holding(runyard_home, TOKEN_A, PASSWORD) == []


def test_the_python_runner_gives_a_script_its_env_from_its_own_environment_not_from_task_json() -> None:
    """The runner under a Script that is not bash (a container's `python3` script): the backend
    gives the runner JobSpec.env, task.json holds only a marker."""
    exp = run.Experiment("secrets-runner")
    program = "import hashlib, os; print(hashlib.sha256(os.environ['API_KEY'].encode()).hexdigest())"
    t = exp.add(run.Script(inline=program, entrypoint=sys.executable, env={"API_KEY": TOKEN_A}))
    task_dir = Path(exp.directory, "tasks", t)
    assert TOKEN_A not in (task_dir / "task.json").read_text()

    argv = [sys.executable, runner_path("runner.py"), str(task_dir), "1"]
    assert subprocess.run(argv, env={**os.environ, "API_KEY": TOKEN_A}, timeout=60).returncode == 0
    assert (task_dir / "attempt-1" / "stdout.log").read_text() == sha(TOKEN_A)


# ------------------------------------------------------------------------------ a new process
@pytest.fixture
def orphaned(tmp_path: Path) -> Iterator[tuple[run.Experiment, Path]]:
    """An experiment whose supervisor was killed while `first` runs (it waits for the file
    given); `then` (after it) needs API_TOKEN. This process keeps the value given in code."""
    go = tmp_path / "go"
    exp = run.Experiment("secrets-orphaned")
    first = exp.add(waits_for(go), name="first")
    exp.add(
        hashes("API_TOKEN"),
        executor=run.LocalExecutor(env_vars={"API_TOKEN": TOKEN_A}),
        name="then",
        dependencies=[first],
    )
    exp.run(detach=True)
    until(lambda: exp.tasks[0].status == "RUNNING", "the first task to run")
    pid = exp.store.experiment(exp.id).driver_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    until(lambda: not exp.driver_alive(), "the supervisor to die")
    yield exp, go
    go.touch()


def test_a_takeover_from_a_new_process_takes_the_secret_from_its_environment(
    orphaned: tuple[run.Experiment, Path], runyard_home: str
) -> None:
    exp, go = orphaned
    took = cli("takeover", exp.id, env={"API_TOKEN": TOKEN_B})
    assert took.returncode == 0, took.stderr
    go.touch()
    assert exp.wait(timeout=120) == "SUCCEEDED"
    assert exp.get_logs("then").stdout == sha(TOKEN_B)  # the new process's value, not from disk
    assert files_holding(runyard_home, TOKEN_A, TOKEN_B) == []


def test_a_takeover_from_a_process_without_the_secret_fails_the_task_saying_how_to_fix_it(
    orphaned: tuple[run.Experiment, Path],
) -> None:
    exp, go = orphaned
    assert "API_TOKEN" not in os.environ
    took = cli("takeover", exp.id, env={})
    assert took.returncode == 0, took.stderr
    go.touch()
    assert exp.wait(timeout=120) == "FAILED"
    first, then = exp.tasks
    assert first.status == "SUCCEEDED"
    assert (then.status, then.attempts) == ("FAILED", 1)
    assert then.reason == missing_reason("then", "API_TOKEN", exp.id)


@pytest.mark.parametrize("has_it", [True, False], ids=["with-the-secret", "without-it"])
def test_a_retry_from_a_new_process_takes_the_secret_from_its_environment(has_it: bool) -> None:
    exp = run.Experiment("secrets-retry")
    t = exp.add(hashes("API_TOKEN"), executor=run.LocalExecutor(env_vars={"API_TOKEN": TOKEN_A}), name="t")
    assert exp.run() == "SUCCEEDED"

    retried = cli("retry", exp.id, t, env={"API_TOKEN": TOKEN_B} if has_it else {})
    assert retried.returncode == 0, retried.stderr
    until(lambda: exp.tasks[0].attempts == 2 and exp.tasks[0].status.is_final, "the retry to end")
    view = exp.tasks[0]
    if has_it:
        assert (view.status, exp.get_logs(t).stdout) == ("SUCCEEDED", sha(TOKEN_B))
    else:
        assert (view.status, view.reason) == ("FAILED", missing_reason("t", "API_TOKEN", exp.id))


# ------------------------------------------------------------------------------ file modes
@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may enter (pytest's own tmp folders are 0700, which would hide
    the home whatever its mode)."""
    folder = Path(tempfile.mkdtemp(prefix="runyard-secrets-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def no_umask() -> Iterator[None]:
    """umask 0: every mode below is runyard's own, not the umask's."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_home_the_store_and_task_files_are_the_user_s_alone_whatever_the_umask(
    open_dir: Path, no_umask: None
) -> None:
    home = open_dir / "home"
    exp = run.Experiment("private", base_dir=str(home))
    t = exp.add(hashes("HF_TOKEN"), executor=run.LocalExecutor(env_vars={"HF_TOKEN": TOKEN_A}))
    try:
        assert exp.run() == "SUCCEEDED"
        task_dir = Path(exp.directory, "tasks", t)
        assert _mode(home) == 0o700
        assert _mode(Path(exp.directory)) == _mode(task_dir) == 0o700
        assert _mode(task_dir / "task.json") == 0o600
        store_files = [home / n for n in ("runyard.db", "runyard.db-wal", "runyard.db-shm")]
        assert {p.name: _mode(p) for p in store_files if p.exists()} == {
            "runyard.db": 0o600, "runyard.db-wal": 0o600, "runyard.db-shm": 0o600,
        }  # fmt: skip
    finally:
        close_store(str(home))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run commands as user nobody")
def test_user_nobody_can_neither_list_the_home_nor_read_the_store_or_a_task_file(open_dir: Path) -> None:
    home = open_dir / "home"
    home.mkdir()
    home.chmod(0o755)  # made before, by hand or by an older runyard
    exp = run.Experiment("private", base_dir=str(home))
    t = exp.add(hashes("HF_TOKEN"), executor=run.LocalExecutor(env_vars={"HF_TOKEN": TOKEN_A}))
    try:
        assert exp.run() == "SUCCEEDED"
        task_json = Path(exp.directory, "tasks", t, "task.json")

        def as_nobody(*argv: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True, timeout=30)

        assert as_nobody("test", "-r", str(open_dir)).returncode == 0  # the way to the home is open
        wal = home / "runyard.db-wal"
        for argv in (
            ["ls", str(home)],
            ["cat", str(home / "runyard.db")],
            ["cat", str(wal)],
            ["cat", str(task_json)],
        ):
            done = as_nobody(*argv)
            assert done.returncode != 0 and b"Permission denied" in done.stderr, (argv, done)
    finally:
        close_store(str(home))


def test_an_existing_home_with_a_looser_mode_is_made_0700_and_its_store_0600(open_dir: Path) -> None:
    home = open_dir / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "runyard.db").touch()
    (home / "runyard.db").chmod(0o644)
    try:
        run.Experiment("tightened", base_dir=str(home))
        assert (_mode(home), _mode(home / "runyard.db")) == (0o700, 0o600)
    finally:
        close_store(str(home))
