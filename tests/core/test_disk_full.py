"""A full (or read-only) disk under the runyard home: the store stays readable, and a write
that has no room fails with one line that says "disk full" and what to do.

The home is on a small tmpfs of its own (mounting one needs root), filled with a file."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import runyard as run
from _core_helpers import wait_until
from runyard.errors import DiskFullError
from runyard.states import FINAL_STATES
from runyard.store import close_store, open_store, pid_alive
from test_cli import assert_error, cli


def _root_or_fail(what: str) -> None:
    if os.geteuid() == 0:
        return
    message = f"{what} needs root (mount -t tmpfs); run the tests as root"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class Disk:
    mount: Path

    @property
    def home(self) -> str:
        return str(self.mount / "home")

    @property
    def filler(self) -> Path:
        return self.mount / "filler"

    def fill(self) -> None:
        """Write a file until the disk has no room left."""
        with open(self.filler, "ab", buffering=0) as f:
            for size in (1 << 20, 4096, 512, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError:
                    pass
        assert os.statvfs(self.mount).f_bavail == 0

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli("--home", self.home, *args)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    """An 8 MiB tmpfs; afterwards what runs from it is ended and it is unmounted."""
    _root_or_fail("a full disk")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    disk = Disk(mount)
    try:
        yield disk
    finally:
        disk.free()
        if os.path.exists(os.path.join(disk.home, "runyard.db")):
            store = open_store(disk.home)
            for record in store.experiments():
                if record.launched_at and any(s not in FINAL_STATES for s in store.task_states(record.id)):
                    run.Experiment.from_id(record.id, base_dir=disk.home).cancel_all()
                pid = store.experiment(record.id).driver_pid
                wait_until(lambda pid=pid: not (pid and pid_alive(pid)), what="the driver to exit")
        close_store(disk.home)
        _unmount(mount)


def _unmount(mount: Path) -> None:
    """Unmount, once the processes of cancelled tasks have left it."""
    try:
        wait_until(lambda: subprocess.run(["umount", str(mount)]).returncode == 0, what=f"{mount} to unmount")
    except BaseException:
        subprocess.run(["umount", "-l", str(mount)])
        raise


def _finished(disk: Disk) -> run.Experiment:
    exp = run.Experiment("before", base_dir=disk.home, metadata={"owner": "me"})
    exp.add(run.Script(inline="echo hello"), name="greet")
    assert exp.run() == "SUCCEEDED"
    return exp


def test_every_reading_command_works_on_a_full_disk(disk: Disk) -> None:
    exp = _finished(disk)
    close_store(disk.home)  # no process has the database open: its -shm file is gone
    assert not os.path.exists(os.path.join(disk.home, "runyard.db-shm"))
    disk.fill()

    listed = disk.cli("list")
    status = disk.cli("status", exp.id)
    logs = disk.cli("logs", exp.id, "greet")
    metadata = disk.cli("metadata", exp.id)

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:4] == [exp.id, "before", "SUCCEEDED", "1"]
    assert status.returncode == 0 and status.stdout.startswith(f"{exp.id}: SUCCEEDED"), status.stderr
    assert (logs.returncode, logs.stdout) == (0, "hello\n"), logs.stderr
    assert (metadata.returncode, metadata.stdout) == (0, 'owner: "me"\n'), metadata.stderr


def test_a_write_on_a_full_disk_says_disk_full_changes_nothing_and_works_once_there_is_room(
    disk: Disk,
) -> None:
    exp = _finished(disk)
    disk.fill()

    with pytest.raises(DiskFullError) as info:
        run.Experiment("during", base_dir=disk.home)
    assert str(info.value).startswith(f"disk full: cannot write the store at {disk.home}/runyard.db")
    assert str(info.value).endswith("free some space on that disk and try again")
    with pytest.raises(DiskFullError):
        exp.add_metadata({"accuracy": 0.9})
    assert_error(disk.cli("retry", exp.id, "greet"), "disk full: cannot write the store", "free some space")

    assert [r.title for r in open_store(disk.home).experiments()] == ["before"]
    assert exp.status() == "SUCCEEDED" and exp.tasks[0].attempts == 1
    disk.free()
    exp.add_metadata({"accuracy": 0.93})  # the same connection: nothing of the failed writes is left
    assert exp.get_metadata() == {"owner": "me", "accuracy": 0.93}


def _orphaned(disk: Disk) -> run.Experiment:
    """A detached experiment whose supervisor was killed, and whose task then ended: news
    that only a new driver, or a command that reads the backends, can record."""
    exp = run.Experiment("orphan", base_dir=disk.home)
    exp.add(run.Script(inline="sleep 0.5"), name="nap")
    exp.run(detach=True)
    wait_until(lambda: exp.tasks[0].status == "RUNNING" and exp.tasks[0].job_id, what="the task to run")
    supervisor = exp.store.experiment(exp.id).driver_pid
    os.kill(supervisor, signal.SIGKILL)
    task_pid = int(exp.tasks[0].job_id)
    wait_until(lambda: not pid_alive(supervisor) and not pid_alive(task_pid), what="both to end")
    return exp


def test_status_on_a_full_disk_shows_what_the_store_holds_with_a_warning(disk: Disk) -> None:
    exp = _orphaned(disk)
    disk.fill()  # no room to record that the task ended

    result = disk.cli("status", exp.id)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2].split()[:2] == ["nap", "RUNNING"]  # as recorded
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("runyard: warning: disk full: cannot write the store")


def test_a_supervisor_that_cannot_start_on_a_full_disk_says_disk_full(disk: Disk) -> None:
    exp = _orphaned(disk)
    disk.fill()

    result = disk.cli("takeover", exp.id)

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    *warnings, error = result.stderr.splitlines()
    assert all(w.startswith("runyard: warning: disk full: ") for w in warnings)
    assert error.startswith(f"runyard: error: disk full: the supervisor for {exp.id} exited with code 1 ")
    assert error.endswith(f"; free some space on that disk, then run `runyard takeover {exp.id}`")


def test_a_home_on_a_read_only_disk_is_readable(disk: Disk, tmp_path: Path) -> None:
    exp = _finished(disk)
    close_store(disk.home)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(disk.mount), str(read_only)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(read_only)], check=True)
    try:
        home = str(read_only / "home")
        status = cli("--home", home, "status", exp.id)
        logs = cli("--home", home, "logs", exp.id, "greet")
        assert status.returncode == 0 and status.stdout.startswith(f"{exp.id}: SUCCEEDED"), status.stderr
        assert (logs.returncode, logs.stdout) == (0, "hello\n"), logs.stderr
        assert_error(cli("--home", home, "retry", exp.id, "greet"), "cannot write the store", "read-only")
    finally:
        _unmount(read_only)
