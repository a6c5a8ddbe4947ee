"""What the commands of ``runyard`` (cli.py) share: the home and the experiment a command
names, durations and times on the command line, times in output, tables fitted to the
terminal, and confirmations. See docs/cli.md."""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import os
import re
import shutil
import sys
from collections.abc import Collection
from typing import TYPE_CHECKING, TextIO

from runyard.errors import RunyardError, UnknownExperimentError

if TYPE_CHECKING:
    from runyard.experiment import Experiment
    from runyard.store import Store


# ------------------------------------------------------------------------------ the home
def home_path(home: str | None) -> str:
    """The runyard home a command uses: ``--home``, else ``$RUNYARD_HOME``, else ``~/.runyard``."""
    if home:
        return os.path.abspath(os.path.expanduser(home))
    from runyard.store import default_home

    return default_home()


def require_home(home: str | None, looking_for: str = "") -> str:
    """The home's path, if it is a runyard home (it holds a store); else an error that says so
    (after ``looking_for``, what was looked for there). Nothing is created: a command that
    reads never makes a home or a database."""
    from runyard.store import DB_NAME

    path = home_path(home)
    if os.path.isfile(os.path.join(path, DB_NAME)):
        return path
    what = "it does not exist" if not os.path.exists(path) else f"it has no {DB_NAME}"
    source = "--home" if home else ("$RUNYARD_HOME" if os.environ.get("RUNYARD_HOME") else "the default")
    raise RunyardError(
        f"{looking_for}no runyard home at {path} ({source}): {what}; name the right one with --home or"
        " $RUNYARD_HOME (creating an experiment makes its home)"
    )


# ------------------------------------------------------------------------------ the experiment
def find_experiment(name: str, home: str | None, *, acting: bool = False) -> Experiment:
    """The experiment named by id, or else the newest with that title.

    ``acting``: the command changes the experiment. Named by its title, the newest with it must
    then have been launched (the newest may be a copy that `reproduce` made and nobody ran):
    otherwise an error that names the newest launched one."""
    from runyard.experiment import Experiment  # (not at import: `runyard --version` loads no experiment)

    path = require_home(home, f"no experiment with id or title {name!r}: ")
    try:
        return Experiment.from_id(name, base_dir=path)
    except UnknownExperimentError:
        pass
    try:
        exp = Experiment.from_title(name, base_dir=path)
    except UnknownExperimentError:
        raise UnknownExperimentError(
            f"no experiment with id or title {name!r}{_close_title(path, name)}"
            f" (see `runyard list`{' --home ' + home if home else ''})"
        ) from None
    if acting and exp.store.experiment(exp.id).launched_at is None:
        launched = newest_launched(exp.store, name)
        then = (
            f"the newest launched one is {launched}: give its id"
            if launched
            else f"none with this title was launched: give the id {exp.id} to act on it anyway"
        )
        raise RunyardError(
            f"experiment {name}: the newest with this title, {exp.id}, was never launched"
            f" (a reproduce?); {then}"
        )
    return exp


def _close_title(home: str, name: str) -> str:
    """``; did you mean 'TITLE'?`` for the title in ``home`` nearest to ``name``, if one is near."""
    from runyard.store import open_store

    titles = sorted({title for _, title in open_store(home).experiment_titles()})
    close = difflib.get_close_matches(name, titles, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def newest_launched(store: Store, title: str) -> str | None:
    """The id of the newest experiment with that title that was launched, if any."""
    from runyard.errors import DamagedStoreError

    for exp_id, _ in store.experiment_titles(title):
        try:
            if store.experiment(exp_id).launched_at is not None:
                return str(exp_id)
        except DamagedStoreError:
            continue
    return None


# ------------------------------------------------------------------------------ durations, times
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def duration(text: str) -> float:
    """A command-line duration, in seconds: a number and a unit, ``s``, ``m``, ``h``, ``d`` or
    ``w`` (``30d``, ``12h``, ``90m``), or several (``1h30m``)."""
    spec = text.strip().lower()
    if spec and not _PART.sub("", spec) and _PART.search(spec):
        return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(spec))
    raise argparse.ArgumentTypeError(
        f"must be a duration: a number and a unit (s, m, h, d, w), such as 30d, 12h or 1h30m; got {text!r}"
    )


def since(text: str) -> dt.datetime:
    """A point in time on the command line: a duration ago (``10m``, ``2h``), a time of today
    (``15:30``, ``15:30:05``), or a date and time in ISO 8601 (``2026-11-27 15:30``,
    ``2026-11-27T15:30:00+01:00``); local time where no zone is given."""
    now = dt.datetime.now().astimezone()
    try:
        return now - dt.timedelta(seconds=duration(text))
    except argparse.ArgumentTypeError:
        pass
    spec = text.strip()
    clock = _CLOCK.fullmatch(spec)
    try:
        if clock:
            hour, minute, second = (int(g or 0) for g in clock.groups())
            return now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        when = dt.datetime.fromisoformat(spec[:-1] + "+00:00" if spec.endswith(("Z", "z")) else spec)
    except ValueError:
        pass
    else:
        return when if when.tzinfo else when.astimezone()
    raise argparse.ArgumentTypeError(
        "must be a duration ago (10m, 2h, 1d), a time of today (15:30) or a date and time"
        f" (2026-11-27 15:30, ISO 8601); got {text!r}"
    )


def iso(value: float | dt.datetime | None) -> str | None:
    """A time for JSON: ISO 8601 with its zone (UTC for a stored time), or None."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.astimezone()).isoformat()
    return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc).isoformat()


def local_time(value: float | dt.datetime | None) -> str:
    """A time for a table: local, to the second; ``-`` for none."""
    if value is None:
        return "-"
    when = (
        value if isinstance(value, dt.datetime) else dt.datetime.fromtimestamp(float(value), dt.timezone.utc)
    )
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float) -> str:
    """``30d``, ``12h``, ``5m``, ``40s``: a duration for people, in its largest whole unit."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


# ------------------------------------------------------------------------------ tables
def fit_width(out: TextIO) -> int | None:
    """The width to fit a table to: the terminal's (``$COLUMNS`` overrides it) when ``out`` is a
    terminal; None when it is not (a pipe or a file gets every cell in full)."""
    isatty = getattr(out, "isatty", None)
    if isatty is None or not isatty():
        return None
    return max(shutil.get_terminal_size().columns, 20)


def cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal cells, ending with ``…`` when it was cut."""
    from rich.cells import cell_len, set_cell_size

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return set_cell_size(text, width - 1).rstrip() + "…"


def table(
    rows: list[list[str]], out: TextIO, *, keep: Collection[int] = (0,), first: Collection[int] = ()
) -> None:
    """Rows (the first is the header) as aligned columns. On a terminal the table is fitted to
    its width: cells are cut, the widest columns first, those in ``first`` before any other,
    never those in ``keep`` (an id), and never below the width of their header."""
    from rich.cells import cell_len

    if not rows:
        return
    rows = [[c.replace("\r", " ").replace("\n", " ") for c in r] for r in rows]
    count = len(rows[0])
    widths = [max(cell_len(r[i]) for r in rows) for i in range(count)]
    limit = fit_width(out)
    if limit is not None:
        floor = [min(w, max(cell_len(h), 4)) for w, h in zip(widths, rows[0], strict=True)]
        over = sum(widths) + 2 * (count - 1) - limit
        while over > 0:
            shrink = [i for i in range(count) if i not in keep and widths[i] > floor[i]]
            shrink = [i for i in shrink if i in first] or shrink
            if not shrink:
                break
            i = max(shrink, key=lambda i: widths[i])
            widths[i] -= 1
            over -= 1
    for r in rows:
        cells = [cut(c, w) for c, w in zip(r, widths, strict=True)]
        padded = [c + " " * (w - cell_len(c)) for c, w in zip(cells, widths, strict=True)]
        out.write("  ".join(padded).rstrip() + "\n")


# ------------------------------------------------------------------------------ asking
def confirm(question: str, *, yes: bool, doing: str) -> None:
    """Go on when ``yes`` (``--yes``) or the user answers yes on the terminal; otherwise an error.
    Without a terminal to ask on, ``--yes`` is required."""
    if yes:
        return
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        raise RunyardError(f"{doing} needs a confirmation and stdin is not a terminal: add --yes")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise RunyardError("not confirmed: nothing deleted")
