"""A Ray job's output, brought home: its log (what ``jobmain.py`` printed) split back into the
runner's files in the attempt folder on this machine.

``journal.log`` is the log's journal lines; ``stdout.log`` and ``stderr.log`` are made from them
(each line's text, as the journal has it); the other files come from their ``#runyard`` lines.
A file named by the log is written only inside the attempt folder: a name that would leave it
(``..``, an absolute path) is left out. Each file is replaced whole, atomically, so a reader
never sees half of one. ``HOME_MARK`` in the folder says the job has ended and everything it
wrote is home: the folder is then the truth, and Ray may forget the job.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import re
import tempfile

import attrs

HOME_MARK = ".ray-home"  # written once an ended job's files are all home
LOCK = ".ray-home.lock"  # held while files are written home
_JOURNAL = re.compile(rb"\d+(?:\.\d+)? [oe] ")
_SAFE_PART = re.compile(r"[A-Za-z0-9_.+-]+")


@attrs.define
class Unpacked:
    """What one job's log holds."""

    journal: bytearray = attrs.field(factory=bytearray)
    files: dict[str, bytearray] = attrs.field(factory=dict)
    exit_code: int | None = None  # ``#runyard. N``: jobmain ended, N its exit code
    problems: list[str] = attrs.field(factory=list)  # ``#runyard! ...`` and lines that are none of these
    other: list[str] = attrs.field(factory=list)  # the last lines that are not runyard's (Ray's, python's)


def safe_name(name: str) -> str | None:
    """``name`` if it is a relative path of plain parts inside the attempt folder; else None."""
    parts = name.split("/")
    if not parts or any(p in ("", ".", "..") or not _SAFE_PART.fullmatch(p) for p in parts):
        return None
    return os.path.join(*parts)


def unpack(log: str) -> Unpacked:
    """Split a job's log (see ``jobmain.py``)."""
    out = Unpacked()
    for line in log.encode("utf-8", "surrogateescape").split(b"\n"):
        if not line:
            continue
        if _JOURNAL.match(line):
            out.journal += line + b"\n"
            continue
        if line.startswith(b"#runyard"):
            kind, rest = line[8:9], line[10:]  # `#runyard<kind> <rest>`
            if kind in (b"=", b"+"):
                raw_name, _, data = rest.partition(b" ")
                name = safe_name(raw_name.decode("utf-8", "replace"))
                if name is None:
                    out.problems.append(f"a file that would leave the attempt folder: {raw_name[:200]!r}")
                    continue
                try:
                    content = base64.b64decode(data, validate=True)
                except (binascii.Error, ValueError):
                    continue  # cut short (the job was killed while it printed it)
                if kind == b"=" or name not in out.files:
                    out.files[name] = bytearray(content)
                else:
                    out.files[name] += content
                continue
            if kind == b".":
                try:
                    out.exit_code = int(rest.strip())
                except ValueError:
                    pass
                continue
            if kind == b"!":
                out.problems.append(rest.decode("utf-8", "replace"))
                continue
        out.other = [*out.other[-9:], line.decode("utf-8", "replace")]
    return out


def _streams(journal: bytes) -> tuple[bytes, bytes]:
    streams: dict[bytes, list[bytes]] = {b"o": [], b"e": []}
    for line in journal.split(b"\n"):
        stamp, _, rest = line.partition(b" ")
        code, _, text = rest.partition(b" ")
        if stamp and code in streams:
            streams[code].append(text + b"\n")
    return b"".join(streams[b"o"]), b"".join(streams[b"e"])


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".home-")
    try:
        os.fchmod(fd, 0o644)  # as the runner's own files are (mkstemp makes 0600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def bring_home(attempt_dir: str, unpacked: Unpacked, *, ended: bool) -> None:
    """Write what a job's log holds into its attempt folder (``ended``: mark it whole). Writers in
    several processes (the driver, a reader following the logs) take turns; a look at a running
    job never replaces what came home from a later look, nor the ended job's files."""
    os.makedirs(attempt_dir, exist_ok=True)
    journal = os.path.join(attempt_dir, "journal.log")
    with open(os.path.join(attempt_dir, LOCK), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ended and (is_home(attempt_dir) or _size(journal) > len(unpacked.journal)):
            return
        stdout, stderr = _streams(bytes(unpacked.journal))
        _write(journal, bytes(unpacked.journal))
        _write(os.path.join(attempt_dir, "stdout.log"), stdout)
        _write(os.path.join(attempt_dir, "stderr.log"), stderr)
        for name, data in unpacked.files.items():
            _write(os.path.join(attempt_dir, name), bytes(data))
        if ended:
            _write(os.path.join(attempt_dir, HOME_MARK), b"")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def is_home(attempt_dir: str) -> bool:
    return os.path.exists(os.path.join(attempt_dir, HOME_MARK))
