"""The channel of a Ray job's files: what ``jobmain.py`` prints of an attempt folder, and how
``home.py`` writes it back into the attempt folder here. No cluster needed."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from runyard_ray import home
from runyard_ray.jobmain import Sender


def frame(kind: str, name: str, data: bytes) -> str:
    return f"#runyard{kind} {name} {base64.b64encode(data).decode()}"


@pytest.mark.alone
def test_what_the_job_prints_of_its_attempt_folder_comes_back_the_same(tmp_path: Path) -> None:
    there = tmp_path / "node" / "attempt-1"
    (there / "ranks" / "1").mkdir(parents=True)
    out = io.BytesIO()
    sender = Sender(str(there), out)
    (there / "journal.log").write_bytes(b"1700000000.5 o step 1 loss: 0.5\n1700000000.6 e warn")
    (there / "metrics.jsonl").write_bytes(b'{"step": 1}\n')
    sender.tick()
    with open(there / "metrics.jsonl", "ab") as f:  # grows: only what was added is sent
        f.write(b'{"step": 2}\n')
    (there / "ranks" / "1" / "stdout.log").write_bytes(b"rank 1 says hi\n")
    (there / "result.json").write_bytes(b'{"exit_code": 0}')
    (there / "heartbeat").write_bytes(b"x")
    sender.tick(final=True)

    log = "Running entrypoint for job x: python3 ray_job.py\n" + out.getvalue().decode() + "#runyard. 0\n"
    unpacked = home.unpack(log)
    here = tmp_path / "home" / "attempt-1"
    home.bring_home(str(here), unpacked, ended=True)
    assert unpacked.exit_code == 0 and unpacked.other == ["Running entrypoint for job x: python3 ray_job.py"]
    assert (here / "journal.log").read_bytes() == b"1700000000.5 o step 1 loss: 0.5\n1700000000.6 e warn\n"
    assert (here / "stdout.log").read_bytes() == b"step 1 loss: 0.5\n"
    assert (here / "stderr.log").read_bytes() == b"warn\n"
    assert (here / "metrics.jsonl").read_bytes() == b'{"step": 1}\n{"step": 2}\n'
    assert (here / "ranks" / "1" / "stdout.log").read_bytes() == b"rank 1 says hi\n"
    assert (here / "result.json").read_bytes() == b'{"exit_code": 0}'
    assert not (here / "heartbeat").exists() and home.is_home(str(here))
    assert oct(os.stat(here / "result.json").st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "ranks//x", "a\\b", "."])
def test_a_file_name_that_would_leave_the_attempt_folder_is_left_out_and_said(
    name: str, tmp_path: Path
) -> None:
    unpacked = home.unpack(frame("=", name, b"evil") + "\n" + frame("=", "result.json", b"{}") + "\n")
    assert list(unpacked.files) == ["result.json"]
    assert unpacked.problems and "would leave the attempt folder" in unpacked.problems[0]
    home.bring_home(str(tmp_path / "attempt-1"), unpacked, ended=True)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")) == [
        "journal.log", "result.json", "stderr.log", "stdout.log",
    ]  # fmt: skip


def test_a_file_written_anew_replaces_what_came_before_and_a_line_cut_short_is_left_out() -> None:
    log = "\n".join([
        frame("=", "claim.json", b"first"), frame("+", "claim.json", b" more"),
        frame("=", "claim.json", b"again"), "#runyard+ claim.json QUJD=garbage",
    ])  # fmt: skip
    assert bytes(home.unpack(log).files["claim.json"]) == b"again"


def test_a_look_at_a_running_job_never_replaces_a_later_or_the_ended_jobs_files(tmp_path: Path) -> None:
    folder = str(tmp_path / "attempt-1")
    longer = home.unpack("1.0 o one\n2.0 o two\n")
    home.bring_home(folder, longer, ended=False)
    home.bring_home(folder, home.unpack("1.0 o one\n"), ended=False)  # an older look, written late
    assert Path(folder, "stdout.log").read_text() == "one\ntwo\n"
    home.bring_home(folder, home.unpack("1.0 o one\n2.0 o two\n3.0 o three\n"), ended=True)
    home.bring_home(folder, longer, ended=False)
    assert Path(folder, "stdout.log").read_text() == "one\ntwo\nthree\n"
