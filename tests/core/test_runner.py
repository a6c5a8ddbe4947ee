"""The in-job runners (runner.py for Python tasks, runner.sh for Script tasks) follow one
protocol, which every backend relies on: the attempt is claimed first and runs once; the
task runs in a process group of its own inside the runner's session; signals sent to the
runner reach the task and are escalated by the runner itself; the attempt ends when the
task's main process ends; the raw logs are byte-exact and the journal has one timestamped
entry per line; result.json comes last, even on a full disk. The runners run here as real
processes, as backends start them."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import taskdefs
from helpers import group_members, until
from runyard import serialization
from runyard.config import Config, Script
from runyard.jobfiles import CLAIM, CLAIMED_EXIT, parse_result, runner_path

RUNNERS = ["python", "bash"]
HANG_GUARD = 60  # seconds: only there so that a hanging runner fails the test
_sessions: list[int] = []  # the runners started here: each leads a session of its own


@pytest.fixture(autouse=True)
def _end_sessions() -> Iterator[None]:
    """Whatever a failed test left running in its runners' sessions is SIGKILLed."""
    yield
    while _sessions:
        sid = _sessions.pop()
        for entry in os.listdir("/proc"):
            st = proc_stat(int(entry)) if entry.isdigit() else None
            if st is not None and st[3] == sid:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


def write_task(task_dir: Path, task: object, main_path: str | None = None) -> None:
    task_dir.mkdir(parents=True, exist_ok=True)
    spec = {"task": serialization.encode(task), "main_path": main_path, "python_path": []}
    (task_dir / "task.json").write_text(json.dumps(spec))


def runner_argv(task_dir: Path, runner: str, script: str) -> list[str]:
    """How a backend starts attempt 1 of the Script task ``script`` (bash) with ``runner``."""
    if runner == "bash":
        return ["bash", runner_path("runner.sh"), str(task_dir), "1", "bash", "-c", script, "runyard-script"]
    return [sys.executable, runner_path("runner.py"), str(task_dir), "1"]


def popen_runner(argv: list[str], env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """A runner in a session of its own, as backends start it."""
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, start_new_session=True, **popen)
    _sessions.append(proc.pid)
    return proc


def start(
    task_dir: Path, runner: str, script: str, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """Run ``script`` (bash) through the given runner, as attempt 1."""
    write_task(task_dir, Script(inline=script))
    return popen_runner(runner_argv(task_dir, runner, script), env, **popen)


def run(task_dir: Path, runner: str, script: str, env: dict[str, str] | None = None) -> int:
    return start(task_dir, runner, script, env).wait(timeout=HANG_GUARD)


def start_python(task_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Run the Python task already written into ``task_dir`` through runner.py."""
    return popen_runner([sys.executable, runner_path("runner.py"), str(task_dir), "1"], env)


def run_python(task_dir: Path, task: object, main_path: str | None = None) -> int:
    write_task(task_dir, task, main_path)
    return start_python(task_dir).wait(timeout=HANG_GUARD)


def module_task(tmp_path: Path, source: str, **kwargs: Any) -> Path:
    """A task directory whose task calls ``work(**kwargs)`` of a module made of ``source``."""
    module = tmp_path / "mod" / "usertask.py"
    module.parent.mkdir(exist_ok=True)
    module.write_text(textwrap.dedent(source))
    task_dir = tmp_path / "t"
    task_dir.mkdir()
    task = {"__runyard__": "config", "target": "usertask:work", "args": [], "kwargs": kwargs}
    spec = {"task": task, "main_path": None, "python_path": [str(module.parent)]}
    (task_dir / "task.json").write_text(json.dumps(spec))
    return task_dir


def result(task_dir: Path) -> dict[str, Any]:
    data = parse_result((task_dir / "attempt-1" / "result.json").read_bytes())
    assert data is not None, "result.json is missing or incomplete"
    return data


def journal(attempt: Path) -> list[tuple[float, str, str]]:
    out = []
    for line in (attempt / "journal.log").read_text().splitlines():
        ts, code, text = line.split(" ", 2) if line.count(" ") >= 2 else (*line.split(" ", 1), "")
        out.append((float(ts), code, text))
    return out


def wait_for_output(task_dir: Path, text: str) -> None:
    stdout = task_dir / "attempt-1" / "stdout.log"
    until(lambda: stdout.exists() and text in stdout.read_text(), f"{text!r} in stdout.log")


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state letter, parent, process group, session) of a process; None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])


def gone(pid: int) -> bool:
    st = proc_stat(pid)
    return st is None or st[0] in ("Z", "X")  # a zombie has ended: nothing here reaps orphans


# ----------------------------------------------------------------------------- logs, journal
@pytest.mark.parametrize("runner", RUNNERS)
def test_raw_logs_keep_the_output_byte_for_byte(tmp_path: Path, runner: str) -> None:
    run(tmp_path / "t", runner, "echo one; echo two >&2; printf 'no newline'")
    attempt = tmp_path / "t" / "attempt-1"
    assert (attempt / "stdout.log").read_bytes() == b"one\nno newline"
    assert (attempt / "stderr.log").read_bytes() == b"two\n"


@pytest.mark.parametrize("runner", RUNNERS)
def test_random_binary_output_is_copied_exactly(tmp_path: Path, runner: str) -> None:
    """20 MB of random bytes (NULs, no trailing newline) on each stream: the raw logs have
    exactly those bytes."""
    data = tmp_path / "random.bin"
    data.write_bytes(os.urandom(20_000_000))
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert run(tmp_path / "t", runner, f"cat {shlex.quote(str(data))}; cat {shlex.quote(str(data))} >&2") == 0
    for name in ("stdout.log", "stderr.log"):
        assert hashlib.sha256((tmp_path / "t" / "attempt-1" / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("runner", RUNNERS)
def test_journal_has_one_timestamped_line_per_output_line(tmp_path: Path, runner: str) -> None:
    before = time.time()
    run(tmp_path / "t", runner, "echo a; sleep 0.2; echo b >&2; sleep 0.2; printf c")
    entries = journal(tmp_path / "t" / "attempt-1")
    assert [(code, text) for _, code, text in entries] == [("o", "a"), ("e", "b"), ("o", "c")]
    stamps = [ts for ts, _, _ in entries]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] - stamps[0] >= 0.3


@pytest.mark.parametrize("runner", RUNNERS)
def test_journal_of_a_large_text_output_has_every_line_once(tmp_path: Path, runner: str) -> None:
    """Many lines (empty ones too) arriving in chunks that split lines: one entry per line,
    tagged with its stream, and the last line, which has no newline, is journalled too."""
    lines = [f"line {i} " + "x" * (i % 97) if i % 13 else "" for i in range(60_000)]
    text = tmp_path / "text.txt"
    text.write_text("\n".join(lines))  # no newline after the last line
    run(tmp_path / "t", runner, f"cat {shlex.quote(str(text))}; printf 'err 1\\nerr 2' >&2")
    entries = journal(tmp_path / "t" / "attempt-1")
    assert [t for _, code, t in entries if code == "o"] == lines
    assert [t for _, code, t in entries if code == "e"] == ["err 1", "err 2"]
    assert {code for _, code, _ in entries} == {"o", "e"}


@pytest.mark.parametrize("runner", RUNNERS)
def test_output_without_newlines_takes_linear_time(tmp_path: Path, runner: str) -> None:
    """20 MB without a newline: done well within the hang guard (the old bash runner read a
    byte at a time and took a minute; the old Python runner re-joined the open line on every
    read), and the journal holds all of it."""
    proc = start(tmp_path / "t", runner, "head -c 20000000 /dev/zero | tr '\\0' x")
    assert proc.wait(timeout=30) == 0
    attempt = tmp_path / "t" / "attempt-1"
    assert (attempt / "stdout.log").read_bytes() == b"x" * 20_000_000
    assert "".join(t for _, _, t in journal(attempt)) == "x" * 20_000_000


# ----------------------------------------------------------------------------- result
@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("code", [0, 3])
def test_result_records_the_exit_code_and_times(tmp_path: Path, runner: str, code: int) -> None:
    assert run(tmp_path / "t", runner, f"exit {code}") == code
    attempt = tmp_path / "t" / "attempt-1"
    data = result(tmp_path / "t")
    assert data["exit_code"] == code and data["error"] is None and data["signal"] is None
    assert data["start"] <= data["end"]
    assert not [p.name for p in attempt.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_command_killed_by_a_signal_is_recorded_with_it(tmp_path: Path, runner: str) -> None:
    run(tmp_path / "t", runner, "kill -9 $$")
    data = result(tmp_path / "t")
    assert data["exit_code"] == 128 + 9 and data["signal"] == 9
    assert data["error"] == "killed by signal 9 (SIGKILL)"


@pytest.mark.parametrize("runner", RUNNERS)
def test_heartbeat_is_refreshed_while_the_task_is_quiet(tmp_path: Path, runner: str) -> None:
    proc = start(tmp_path / "t", runner, "sleep 3.5", env={"RUNYARD_HEARTBEAT_INTERVAL": "1"})
    beat = tmp_path / "t" / "attempt-1" / "heartbeat"
    seen = set()
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        if beat.exists():
            seen.add(beat.read_text().strip())
        time.sleep(0.1)
    proc.wait(timeout=10)
    assert len({s for s in seen if s}) >= 3  # at start, then about every second


@pytest.mark.parametrize("runner", RUNNERS)
def test_no_heartbeat_when_disabled(tmp_path: Path, runner: str) -> None:
    run(tmp_path / "t", runner, "echo hi", env={"RUNYARD_HEARTBEAT_INTERVAL": "0"})
    assert not (tmp_path / "t" / "attempt-1" / "heartbeat").exists()


# ----------------------------------------------------------------------------- the claim
@pytest.mark.parametrize("runner", RUNNERS)
def test_runners_started_at_once_for_one_attempt_run_it_once(tmp_path: Path, runner: str) -> None:
    """Three runners of the same attempt at the same moment (a driver that launched twice):
    the task runs once; the others exit 75 and say why."""
    effects = tmp_path / "runs"
    script = f"echo run >> {shlex.quote(str(effects))}; sleep 0.5"
    write_task(tmp_path / "t", Script(inline=script))
    argv = runner_argv(tmp_path / "t", runner, script)
    procs = [popen_runner(argv, stderr=subprocess.PIPE) for _ in range(3)]
    outcomes = sorted((p.wait(timeout=HANG_GUARD), p.stderr.read().decode()) for p in procs if p.stderr)
    assert [code for code, _ in outcomes] == [0, CLAIMED_EXIT, CLAIMED_EXIT]
    assert effects.read_text() == "run\n"
    for _, message in outcomes[1:]:
        assert message.startswith("runyard runner: attempt 1 of task t was claimed already (")
        assert message.endswith("); not running it twice\n")
    winner = json.loads((tmp_path / "t" / "attempt-1" / CLAIM).read_text())
    assert winner["pid"] in [p.pid for p in procs]


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_runner_of_a_claimed_attempt_touches_nothing(tmp_path: Path, runner: str) -> None:
    assert run(tmp_path / "t", runner, "echo first") == 0
    attempt = tmp_path / "t" / "attempt-1"

    def files() -> dict[str, tuple[bytes, int]]:
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in attempt.iterdir()}

    before = files()
    proc = start(tmp_path / "t", runner, "echo second", stderr=subprocess.PIPE)
    assert proc.wait(timeout=HANG_GUARD) == CLAIMED_EXIT
    assert proc.stderr is not None and before[CLAIM][0].decode().strip() in proc.stderr.read().decode()
    assert files() == before


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_claim_names_the_launch_and_the_runner_process(tmp_path: Path, runner: str) -> None:
    env = {"RUNYARD_LAUNCH_ID": "launch-7", "SLURM_JOB_ID": "4242", "RUNYARD_HEARTBEAT_INTERVAL": "0"}
    proc = start(tmp_path / "t", runner, "sleep 1", env=env)
    path = tmp_path / "t" / "attempt-1" / CLAIM
    claim = until(lambda: path.exists() and json.loads(path.read_text() or "null"), "a complete claim")
    starttime = int(Path(f"/proc/{proc.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])
    proc.wait(timeout=HANG_GUARD)
    assert claim["launch"] == "launch-7" and claim["pid"] == proc.pid and claim["starttime"] == starttime
    assert claim["host"] == os.uname().nodename and abs(claim["time"] - time.time()) < HANG_GUARD
    assert claim["slurm_job_id"] == "4242"
    assert claim["slurm_array_job_id"] is None and claim["slurm_array_task_id"] is None


# ----------------------------------------------------------------------------- processes, signals
@pytest.mark.parametrize("runner", RUNNERS)
def test_the_task_is_a_process_group_of_its_own_in_the_runners_session(tmp_path: Path, runner: str) -> None:
    """The backend kills a task's whole tree by the runner's session; the runner signals the
    task's group. A TERM to the runner alone ends the script's group, and the runner records it."""
    pid_file = tmp_path / "script.pid"
    proc = start(tmp_path / "t", runner, f"echo $$ > {shlex.quote(str(pid_file))}; sleep 60")
    script = until(lambda: pid_file.exists() and pid_file.read_text().strip() and int(pid_file.read_text()))
    st = proc_stat(script)
    assert st is not None
    _, _, group, sid = st
    assert sid == proc.pid and group != proc.pid
    leader = proc_stat(group)
    assert leader is not None and leader[1] == proc.pid  # the group's leader is the runner's child
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=HANG_GUARD) == 143
    assert group_members(group) == [] and gone(script)
    assert result(tmp_path / "t")["error"] == "terminated (SIGTERM)"


@pytest.mark.parametrize("runner", RUNNERS)
def test_sigterm_to_the_runner_is_recorded_as_143(tmp_path: Path, runner: str) -> None:
    proc = start(tmp_path / "t", runner, "echo started; sleep 60")
    wait_for_output(tmp_path / "t", "started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=HANG_GUARD) == 143
    data = result(tmp_path / "t")
    assert (data["exit_code"], data["error"], data["signal"]) == (143, "terminated (SIGTERM)", 15)


def test_a_script_that_ignores_sigterm_is_killed_by_the_runner_after_the_grace(tmp_path: Path) -> None:
    """The runner escalates by itself: whoever sent the TERM is gone (here it sends nothing more).
    (Under runner.py the Script's parent is the task's Python process, which does not ignore it.)"""
    script = "trap '' TERM; echo ready; sleep 60"
    proc = start(tmp_path / "t", "bash", script, env={"RUNYARD_CANCEL_GRACE": "1"})
    wait_for_output(tmp_path / "t", "ready")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=HANG_GUARD) == 137
    data = result(tmp_path / "t")
    assert (data["exit_code"], data["error"], data["signal"]) == (137, "killed by signal 9 (SIGKILL)", 9)


def test_a_python_task_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    write_task(tmp_path / "t", Config(taskdefs.ignore_sigterm_then_sleep, 60))
    proc = start_python(tmp_path / "t", env={"RUNYARD_CANCEL_GRACE": "0.5"})
    wait_for_output(tmp_path / "t", "ready")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=HANG_GUARD) == 137
    assert result(tmp_path / "t")["error"] == "killed by signal 9 (SIGKILL)"


@pytest.mark.parametrize("runner", RUNNERS)
def test_sigusr1_to_the_runner_reaches_the_task(tmp_path: Path, runner: str) -> None:
    proc = start(tmp_path / "t", runner, "trap 'echo got usr1; exit 7' USR1; echo ready; sleep 60 & wait")
    wait_for_output(tmp_path / "t", "ready")
    os.kill(proc.pid, signal.SIGUSR1)
    assert proc.wait(timeout=HANG_GUARD) == 7
    wait_for_output(tmp_path / "t", "got usr1")


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_attempt_ends_with_the_scripts_main_process(tmp_path: Path, runner: str) -> None:
    """`sleep 120 &` holds the output pipes: the attempt still ends when the script does, and
    the leftover process ends with it."""
    pid_file = tmp_path / "bg.pid"
    assert run(tmp_path / "t", runner, f"sleep 120 & echo $! > {shlex.quote(str(pid_file))}; exit 0") == 0
    assert result(tmp_path / "t")["exit_code"] == 0
    until(lambda: gone(int(pid_file.read_text())), "the background sleep to end", timeout=10)


def test_the_attempt_ends_with_the_scripts_main_process_while_bash_has_not_reaped_it(tmp_path: Path) -> None:
    """Under load bash may leave the script's ended main process unreaped, and `kill -0` says
    yes to a zombie: runner.sh looks at the process's state instead (here `kill -0` is made to
    say yes for good, through BASH_ENV, as it does for such a zombie)."""
    fake = tmp_path / "kill0.sh"
    fake.write_text('kill() { [[ $1 == -0 ]] && return 0; builtin kill "$@"; }\n')
    proc = start(tmp_path / "t", "bash", "echo done; exit 4", env={"BASH_ENV": str(fake)})
    assert proc.wait(timeout=HANG_GUARD) == 4
    assert result(tmp_path / "t")["exit_code"] == 4
    assert [text for _, _, text in journal(tmp_path / "t" / "attempt-1")] == ["done"]


def test_a_python_task_that_leaves_a_process_holding_its_output_ends(tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    task_dir = module_task(
        tmp_path,
        """
        import subprocess
        def work(pid_file):
            proc = subprocess.Popen(["sleep", "120"])  # inherits stdout and stderr
            open(pid_file, "w").write(str(proc.pid))
        """,
        pid_file=str(pid_file),
    )
    assert start_python(task_dir).wait(timeout=HANG_GUARD) == 0
    assert result(task_dir)["exit_code"] == 0
    until(lambda: gone(int(pid_file.read_text())), "the leftover sleep to end", timeout=10)


# ----------------------------------------------------------------------------- Python tasks
def test_python_exception_is_a_failure_with_its_traceback(tmp_path: Path) -> None:
    assert run_python(tmp_path / "t", Config(taskdefs.fail, message="kaput")) == 1
    attempt = tmp_path / "t" / "attempt-1"
    assert "Traceback" in (attempt / "stderr.log").read_text()
    assert "RuntimeError: kaput" in (attempt / "stderr.log").read_text()
    data = result(tmp_path / "t")
    assert data["exit_code"] == 1 and data["error"] == "RuntimeError: kaput"


def test_python_sys_exit_code_is_the_exit_code(tmp_path: Path) -> None:
    assert run_python(tmp_path / "t", Config(taskdefs.exit_with, 7)) == 7
    assert result(tmp_path / "t")["exit_code"] == 7


def test_os_exit_in_a_python_task_is_its_exit_code(tmp_path: Path) -> None:
    task_dir = module_task(
        tmp_path, "import os\ndef work():\n    print('bye', flush=True)\n    os._exit(0)\n"
    )
    assert start_python(task_dir).wait(timeout=HANG_GUARD) == 0
    data = result(task_dir)
    assert data["exit_code"] == 0 and data["error"] is None
    assert (task_dir / "attempt-1" / "stdout.log").read_text() == "bye\n"


def test_a_result_written_by_the_task_itself_does_not_count(tmp_path: Path) -> None:
    task_dir = module_task(
        tmp_path,
        """
        import json, os
        def work(path):
            with open(path, "w") as f:
                json.dump({"exit_code": 0, "start": 0, "end": 0, "error": None}, f)
            os._exit(3)
        """,
        path=str(tmp_path / "t" / "attempt-1" / "result.json"),
    )
    assert start_python(task_dir).wait(timeout=HANG_GUARD) == 3
    assert result(task_dir)["exit_code"] == 3


def test_a_python_task_killed_by_a_signal_is_recorded_with_it(tmp_path: Path) -> None:
    task_dir = module_task(
        tmp_path, "import os, signal\ndef work():\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    assert start_python(task_dir).wait(timeout=HANG_GUARD) == 128 + 11
    data = result(task_dir)
    assert (data["exit_code"], data["error"], data["signal"]) == (139, "killed by signal 11 (SIGSEGV)", 11)


def test_output_of_processes_the_task_starts_is_captured(tmp_path: Path) -> None:
    script = Script(inline="echo from-child; echo child-err >&2", entrypoint="bash")
    assert run_python(tmp_path / "t", script) == 0
    attempt = tmp_path / "t" / "attempt-1"
    assert (attempt / "stdout.log").read_text() == "from-child\n"
    assert (attempt / "stderr.log").read_text() == "child-err\n"


def test_sigterm_lets_the_python_task_run_its_finally_blocks(tmp_path: Path) -> None:
    marker = tmp_path / "finally-ran"
    task_dir = module_task(
        tmp_path,
        """
        import time
        def work(marker):
            try:
                print('started', flush=True)
                time.sleep(60)
            finally:
                open(marker, 'w').write('yes')
        """,
        marker=str(marker),
    )
    proc = start_python(task_dir)
    wait_for_output(task_dir, "started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=HANG_GUARD) == 143
    assert marker.read_text() == "yes"
    data = result(task_dir)
    assert data["exit_code"] == 143 and data["error"] == "terminated (SIGTERM)"


def test_targets_of_the_launching_script_load_without_running_its_main_block(tmp_path: Path) -> None:
    script = tmp_path / "launcher.py"
    script.write_text(
        "def train():\n"
        "    print('trained in', __name__)\n"
        "if __name__ == '__main__':\n"
        "    print('MAIN BLOCK RAN')\n"
    )
    task_dir = tmp_path / "t"
    task_dir.mkdir()
    spec = {
        "task": {"__runyard__": "config", "target": "__main__:train", "args": [], "kwargs": {}},
        "main_path": str(script),
        "python_path": [],
    }
    (task_dir / "task.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, runner_path("runner.py"), str(task_dir), "1"], timeout=60, check=True)
    assert (task_dir / "attempt-1" / "stdout.log").read_text() == "trained in __mp_main__\n"


def test_a_python_task_ends_as_a_plain_python_would(tmp_path: Path) -> None:
    """Its threads are waited for and its atexit handlers run before the attempt ends."""
    marker = tmp_path / "thread-done"
    task_dir = module_task(
        tmp_path,
        """
        import atexit, threading, time
        def work(marker):
            atexit.register(print, "atexit ran")
            threading.Thread(target=lambda: (time.sleep(0.3), open(marker, "w").close())).start()
        """,
        marker=str(marker),
    )
    assert start_python(task_dir).wait(timeout=HANG_GUARD) == 0
    assert marker.exists()
    assert (task_dir / "attempt-1" / "stdout.log").read_text() == "atexit ran\n"


# ----------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (mounting one needs root), unmounted afterwards."""
    if os.geteuid() != 0:
        message = "a full disk needs root (mount -t tmpfs); run the tests as root"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("runner", RUNNERS)
def test_output_that_fills_the_disk_ends_the_task_with_disk_full(small_disk: Path, runner: str) -> None:
    """`yes` would write for ever: the runner cannot write its log, so it ends the task, and
    the result says why."""
    proc = start(small_disk / "t", runner, "yes runyard")
    proc.wait(timeout=HANG_GUARD)
    error = result(small_disk / "t")["error"]
    assert error.startswith("disk full: cannot write ") and "No space left on device" in error


def test_a_python_task_whose_output_fills_the_disk_ends_with_disk_full(small_disk: Path) -> None:
    task_dir = module_task(small_disk, "def work():\n    while True:\n        print('x' * 100)\n")
    start_python(task_dir).wait(timeout=HANG_GUARD)
    error = result(task_dir)["error"]
    assert error.startswith("disk full: cannot write ") and "[Errno 28] No space left on device" in error


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_result_is_written_when_the_task_left_no_room_at_all(small_disk: Path, runner: str) -> None:
    filler = shlex.quote(str(small_disk / "filler"))
    assert run(small_disk / "t", runner, f"cat /dev/zero > {filler} 2>/dev/null; exit 3") == 3
    assert os.statvfs(small_disk).f_bavail == 0
    assert result(small_disk / "t")["exit_code"] == 3
