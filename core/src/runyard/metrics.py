"""Metrics of a task: what it logged (``runyard.job.log_metrics``: the attempt's ``metrics.jsonl``)
and what its output says (``loss: 0.52`` lines of its journal, read with the experiment's
``metric_patterns``), as :class:`MetricPoint` s.

Both files are read through the task's log source, so metrics come back from every backend as
its logs do. Parsing is fast because only the lines that hold a pattern's literal are looked at, each
once for all the patterns that may match in it, and because what is done per value is done by
C in passes over a line's values (``map``); see :class:`MetricParser`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import itertools
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import attrs

from runyard.states import FINAL_STATES

if TYPE_CHECKING:
    from runyard.engine import TaskHandle

__all__ = [
    "DEFAULT_PATTERNS", "METRICS", "MetricParser", "MetricPoint", "MetricSummary", "best_tasks", "lower_is_better",
    "summarize",
]  # fmt: skip

METRICS = "metrics.jsonl"  # (runyard.job.METRICS: that module imports nothing of runyard)
JOURNAL = "journal.log"
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# `loss: 0.52`, `loss=0.52`, `final loss: 0.4`; not `val_loss: 0.3` nor `train.loss` (metrics of their own)
DEFAULT_PATTERNS = {name: rf"(?<![\w.-]){name}[ \t]*[:=][ \t]*({NUMBER})" for name in ("loss", "accuracy")}
# the step of a parsed point, from its piece of line: `step 6/12`, `iter 100`, `epoch 3` (the
# first of these words there is, in this order, as a word of its own), else a tqdm bar's `| 6/12 [`
_STEP_WORDS = ("step", "iter", "batch", "epoch")
# each word (`steps: 6`, `iteration #3`: in a lowered line) where it is a word of its own, then
# its number (the word first: a regex that starts with a literal is searched fast)
_STEP_REGEXES = tuple(
    (word, re.compile(rf"{word}(?<![\w-]{word})(?:ation)?s?[ \t]*[:=#]?[ \t]*(\d+)")) for word in _STEP_WORDS
)
# the searches of the words a line holds, by which it holds (bit i: _STEP_WORDS[i]), in order
_SEARCHES_BY_WORDS = tuple(
    tuple(regex.search for i, (_, regex) in enumerate(_STEP_REGEXES) if held >> i & 1) for held in range(16)
)
_TQDM = re.compile(r"\|[ \t]*(\d+)/\d+[ \t]*\[")
_GROUP = operator.itemgetter(1)
try:
    from re import _parser as _sre  # type: ignore[attr-defined]
except ImportError:  # Python 3.10
    import sre_parse as _sre
_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", None))
_ATOMIC = getattr(_sre, "ATOMIC_GROUP", None)
_FIRST = operator.itemgetter(0)
_LOWER_IS_BETTER = ("loss", "error", "perplexity", "mse")
Source = Literal["logged", "parsed"]


class MetricPoint(NamedTuple):
    """One value of a metric: ``step`` None when the task gave none, ``timestamp`` aware (UTC),
    ``source`` ``"logged"`` (``log_metrics``) or ``"parsed"`` (its output), ``attempt`` from 1.
    A logged value that was not finite (NaN, infinity: written as null) is ``nan``. (A named
    tuple: parsing makes them by the hundred thousand, and a tuple is made three times faster
    than a frozen attrs class.)"""

    name: str
    value: float
    step: int | None
    timestamp: dt.datetime
    source: Source
    attempt: int

    def to_json(self) -> dict[str, Any]:
        """The point as JSON values (``value`` None for NaN; ``timestamp`` ISO 8601 with its zone)."""
        return {
            "name": self.name, "value": None if math.isnan(self.value) else self.value, "step": self.step,
            "timestamp": self.timestamp.isoformat(), "source": self.source, "attempt": self.attempt,
        }  # fmt: skip


_NEW_POINT = functools.partial(tuple.__new__, MetricPoint)  # a point from a tuple of its fields, in C


def lower_is_better(name: str) -> bool:
    """Whether a smaller value of metric ``name`` is the better one: names with loss, error,
    perplexity or mse in them (any case); for every other metric higher is better."""
    lowered = name.lower()
    return any(word in lowered for word in _LOWER_IS_BETTER)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_FROM_STAMP, _UTC = dt.datetime.fromtimestamp, dt.timezone.utc


def _stamp(seconds: float) -> dt.datetime:
    return _FROM_STAMP(seconds, _UTC)


def logged_points(data: bytes, attempt: int) -> list[MetricPoint]:
    """The points of a ``metrics.jsonl`` (lines that are not a whole record are left out: the
    last one may be being written)."""
    points = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
            when = _stamp(float(record["time"]))
            step = record.get("step")
            values = record["values"]
        except (ValueError, TypeError, KeyError, OverflowError, OSError):
            continue
        if not isinstance(values, Mapping) or not (step is None or type(step) is int):
            continue
        for name, value in values.items():
            if value is None:
                value = math.nan
            if isinstance(name, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
                points.append(_NEW_POINT((name, float(value), step, when, "logged", attempt)))
    return points


def _step_words_in(low: str) -> tuple[Callable[..., re.Match[str] | None], ...]:
    """The searches of the step words that the lowered line ``low`` holds anywhere, in order of
    preference (looked for once per line: its pieces then look only for those)."""
    held = ("step" in low) | ("iter" in low) << 1 | ("batch" in low) << 2 | ("epoch" in low) << 3
    return _SEARCHES_BY_WORDS[held]


def _step_at(low: str, words: tuple[Callable[..., re.Match[str] | None], ...]) -> int | None:
    """The step that ``low``, a lowered piece of line, gives: the first number after the most
    preferred of ``words`` in it (``_step_words_in``: step, then iter..., as a word of its own),
    else a tqdm counter (``| 450/1000 [``); None."""
    for search in words:
        m = search(low)
        if m is not None:
            return int(m[1])
    if "|" not in low:
        return None
    m = _TQDM.search(low)
    return int(m[1]) if m else None


def _shared_step(
    pieces: list[str], words: tuple[Callable[..., re.Match[str] | None], ...]
) -> list[int | None] | None:
    """The step of each piece of a line (as written, not lowered) when all begin alike up to
    past the step of the first, as a progress bar's updates do (``Epoch 3:  45%|##...``): that
    step, searched once (every piece's search would find the same); None when they do not."""
    if not words:
        return None
    first = pieces[0]
    low = first.lower()
    found = words[0](low)
    if found is None or found.end() >= len(low) or len(low) != len(first):
        return None
    alike = first[: found.end() + 1]  # (the number and what ended it: no piece's number is longer)
    if not (min(pieces).startswith(alike) and max(pieces).startswith(alike)):  # (all between do too)
        return None
    return [int(found[1])] * len(pieces)


def _steps_of(pieces: list[str], words: tuple[Callable[..., re.Match[str] | None], ...]) -> list[int | None]:
    """The step of each lowered piece of a line (``_step_at``); when the most preferred word is
    in every piece, as in a progress bar's updates, all found in one pass of C."""
    if words:
        found: list[Any] = list(map(words[0], pieces))
        if None not in found:
            return list(map(int, map(_GROUP, found)))
    return [_step_at(piece, words) for piece in pieces]


class _Pattern:
    """One metric's compiled regex, and how to find the lines where it may match fast:
    - a literal that every match holds (``loss``, `` tokens/s``): only the lines that hold it
      are searched (``in`` tells many times faster than a regex search);
    - without one, the lines where a search of the whole line finds it, if a match there is a
      match of the line's text too (no ``^``, ``$``, ``\\b``, look-around); else every line;
    - a regex that starts with a look-behind or ``\\b`` is rewritten to start with its literal
      (``_literal_first``): Python's re tries any other at every character."""

    __slots__ = ("findall", "literal", "name", "search")

    def __init__(self, name: str, regex: str) -> None:
        compiled = re.compile(regex)
        fast = _literal_first(regex)
        if fast is not None and (faster := re.compile(fast)).groups == compiled.groups:
            compiled, regex = faster, fast
        self.name, self.findall = name, compiled.findall
        parsed = _parsed(regex)
        self.literal = _needed_literal(parsed)
        self.search = compiled.search if self.literal is None and _context_free(parsed) else None

    def may_match(self, lines: list[str]) -> Iterable[bool]:
        """For each of ``lines``, whether it may match in it."""
        if self.literal is not None:
            return map(operator.contains, lines, itertools.repeat(self.literal))
        if self.search is not None:
            return map(bool, map(self.search, lines))
        return itertools.repeat(True, len(lines))


# a one-character look-behind, `(?<![\w.])` or `\b`, then plain characters (`loss: `)
_LEADING = re.compile(r"(?:\(\?<!(\[(?:\\.|[^]\\])+\]|\\[^bBAZ0-9]|[^\\()[\]|?*+{}^$.])\)|(\\b))")
_PLAIN = re.compile(r"(?:[^.^$*+?{}[\]\\|()]|\\[^A-Za-z0-9])(?![*+?{])")


def _literal_first(regex: str) -> str | None:
    r"""``(?<![\w.])loss: (\d+)`` as ``loss(?<![\w.]loss): (\d+)``, ``\blr=(\d+)`` as
    ``lr(?<!\wlr)=(\d+)``: the same matches, but the regex starts with a literal (fast). None
    for a regex that does not start so."""
    lead = _LEADING.match(regex)
    if lead is None:
        return None
    at = lead.end()
    while (plain := _PLAIN.match(regex, at)) is not None:
        at = plain.end()
    literal, rest = regex[lead.end() : at], regex[at:]
    if not literal:
        return None
    if lead[1]:
        return f"{literal}(?<!{lead[1]}{literal}){rest}"
    word = re.match(r"\w", literal[1] if literal[0] == "\\" else literal[0]) is not None
    return f"{literal}(?<{'!' if word else '='}\\w{literal}){rest}"


def _parsed(regex: str) -> Any:
    """``regex`` as Python's re parses it (None if it cannot)."""
    try:
        return _sre.parse(regex)
    except Exception:
        return None


def _needed_literal(parsed: Any) -> str | None:
    """The longest run of plain characters at the top of a parsed regex (every match holds
    it); None when it has none, or ignores case."""
    if parsed is None or parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    best, run = "", ""
    for op, arg in [*parsed, (None, None)]:
        if op is _sre.LITERAL:
            run += chr(arg)
            continue
        best, run = max(best, run, key=len), ""
    return best or None


def _context_free(parsed: Any) -> bool:
    """Whether a parsed regex matches at a place whatever is around it: no ``^``, ``$``,
    ``\\b``, look-around or condition anywhere (then a match of a line's text is a match of
    the whole text at that place)."""
    if parsed is None:
        return False
    todo = [parsed]
    while todo:
        for op, arg in todo.pop():
            if op in (_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT, _sre.GROUPREF_EXISTS):
                return False
            if op is _sre.BRANCH:
                todo.extend(arg[1])
            elif op is _sre.SUBPATTERN:
                todo.append(arg[3])
            elif op in _REPEATS:
                todo.append(arg[2])
            elif op is _ATOMIC:
                todo.append(arg)
    return True


def _read_line(line: str, patterns: list[_Pattern], attempt: int, out: list[MetricPoint]) -> None:
    """Adds to ``out`` the points of ``patterns`` in a journal line (searched past its ``<stamp>
    <o|e> ``; none if it has no time stamp), in the order of its pieces, and of one piece in the
    order of ``patterns``."""
    space = line.find(" ", 0, 40)  # (a stamp is never longer)
    stamp = line[: 40 if space < 0 else space]
    words = line[len(stamp) + 3 :]
    pieces = words.split("\r") if "\r" in words else None  # a progress bar's updates
    found: list[tuple[str, Any]]
    if pieces is not None:
        found = [
            (pattern.name, each) for pattern in patterns if any(each := list(map(pattern.findall, pieces)))
        ]
    elif len(patterns) == 1:
        found = [(patterns[0].name, raws)] if (raws := patterns[0].findall(words)) else []
    else:
        found = [(pattern.name, raws) for pattern in patterns if (raws := pattern.findall(words))]
    if not found:
        return
    try:
        when = _FROM_STAMP(float(stamp), _UTC)
    except (ValueError, OverflowError, OSError):
        return  # not a journal line
    low = words.lower()
    if pieces is not None:
        _add_pieces(out, found, pieces, low, when, attempt)
        return
    step = _step_at(low, _step_words_in(low))
    for name, raws in found:
        if len(raws) == 1:  # (the usual case, made at once)
            try:
                out.append(_NEW_POINT((name, float(raws[0]), step, when, "parsed", attempt)))
            except ValueError:
                pass
        else:
            _add(out, name, raws, itertools.repeat(step), when, attempt)


def _add_pieces(
    out: list[MetricPoint], found: list[tuple[str, list[list[str]]]], pieces: list[str], low: str,
    when: dt.datetime, attempt: int,
) -> None:  # fmt: skip
    """Adds to ``out`` what ``found`` holds (by metric, the numbers found in each piece of a
    line: ``pieces``, ``low`` the line lowered), each piece with its own step."""
    searches = _step_words_in(low)
    if len(found) > 1:  # several metrics: piece by piece
        for j, low_piece in enumerate(low.split("\r")):  # (lowering never adds nor takes a \r)
            if any(each[j] for _, each in found):
                step = (_step_at(low_piece, searches),)
                for name, each in found:
                    if each[j]:
                        _add(out, name, each[j], step * len(each[j]), when, attempt)
        return
    name, each = found[0]
    raws = list(itertools.chain.from_iterable(each))
    if len(raws) == len(pieces) and all(each):  # one value in each piece, as in a progress bar's updates
        steps = _shared_step(pieces, searches)
        _add(out, name, raws, _steps_of(low.split("\r"), searches) if steps is None else steps, when, attempt)
        return
    lowered = low.split("\r")
    counts = list(map(len, each))
    if len(raws) * 4 < len(counts):  # few pieces have one: the steps of those alone
        at = [_step_at(lowered[j], searches) if n else None for j, n in enumerate(counts)]
    else:
        at = _steps_of(lowered, searches)
    _add(out, name, raws, itertools.chain.from_iterable(map(itertools.repeat, at, counts)), when, attempt)


def _add(
    out: list[MetricPoint],
    name: str,
    raws: list[str],
    steps: Iterable[int | None],
    when: dt.datetime,
    attempt: int,
) -> None:
    """Adds the points of ``raws`` (the numbers as written) and ``steps`` to ``out``: made in
    C, all at once; a raw that is not a number is left out (then one by one)."""
    try:
        values = list(map(float, raws))
    except ValueError:
        for raw, step in list(zip(raws, steps, strict=False)):
            with contextlib.suppress(ValueError):
                out.append(MetricPoint(name, float(raw), step, when, "parsed", attempt))
        return
    repeat = itertools.repeat
    out += map(
        _NEW_POINT,
        zip(repeat(name), values, steps, repeat(when), repeat("parsed"), repeat(attempt), strict=False),
    )


class MetricParser:
    """Reads metric values out of a journal (``<unix time> <o|e> <text>`` lines) with one regex
    per metric, each with one group: the number. Each line's text is searched as a string of
    its own, and so is each of a line's ``\\r``-separated pieces (a progress bar's updates):
    ``^`` and ``$`` are its start and end, and a match never spans two.

    It is fast because only the lines that hold a pattern's literal are looked at (which do is
    found by C, for every line at once), each once for all patterns, and because what is done per
    value is done by C, in passes over a line's values (``map``): its search in each piece, its
    number, its point."""

    def __init__(self, patterns: Mapping[str, str] | None = None) -> None:
        given = DEFAULT_PATTERNS if patterns is None else patterns
        self.patterns = {name: _Pattern(name, regex) for name, regex in given.items()}

    def parse(self, data: bytes, attempt: int, *, complete: bool = True) -> list[MetricPoint]:
        """The points in journal ``data``, in the order of its lines and pieces of lines (of one
        piece, metric by metric in the order of the patterns). ``complete=False``: the attempt
        still runs, its unfinished last line is left for later. (The garbage collector is
        paused meanwhile: the many points made are no cycles, and its passes over them would
        take a fifth of the time.)"""
        lines = data.decode("utf-8", "replace").split("\n")
        if not complete:
            del lines[-1]  # (unfinished, or the nothing after the last line's \n)
        points: list[MetricPoint] = []
        with _gc_paused():
            for line, patterns in self._lines(lines):
                _read_line(line, patterns, attempt, points)
        return points

    def _lines(self, lines: list[str]) -> Iterable[tuple[str, list[_Pattern]]]:
        """The lines that some pattern may match in (``_Pattern.may_match``), in order, each with
        those patterns: found by C, all at once."""
        patterns = list(self.patterns.values())
        if len(patterns) == 1:
            return zip(itertools.compress(lines, patterns[0].may_match(lines)), itertools.repeat(patterns))
        masks = [list(pattern.may_match(lines)) for pattern in patterns]  # (a list of bools is small)
        keep = list(map(any, zip(*masks, strict=True)))
        rows = list(itertools.compress(zip(*masks, strict=True), keep))  # those lines', which may
        which = {
            row: [pattern for pattern, may in zip(patterns, row, strict=True) if may] for row in set(rows)
        }
        return zip(itertools.compress(lines, keep), map(which.__getitem__, rows), strict=True)

    def task_points(self, task: TaskHandle, attempt: int | None = None) -> list[MetricPoint]:
        """The points of one attempt of ``task`` (None: every attempt, oldest first), each
        attempt's logged and parsed points merged by time."""
        last = task.record.attempts
        numbers = range(1, last + 1) if attempt is None else [task.attempt_number(attempt)]
        points: list[MetricPoint] = []
        for n in numbers:
            done = n < last or task.status in FINAL_STATES
            mine = logged_points(task.read_log(METRICS, n), n)
            mine += self.parse(task.read_log(JOURNAL, n), n, complete=done)
            mine.sort(key=lambda p: p.timestamp)  # stable: the order within a file holds
            points += mine
        return points


@functools.lru_cache(maxsize=32)
def _parser(patterns: tuple[tuple[str, str], ...] | None) -> MetricParser:
    return MetricParser(None if patterns is None else dict(patterns))


def parser_for(patterns: Mapping[str, str] | None) -> MetricParser:
    """The parser of an experiment's ``metric_patterns`` (compiled once per process)."""
    return _parser(None if patterns is None else tuple(patterns.items()))


@attrs.frozen
class MetricSummary:
    """One metric of one task (``summarize``): its ``last`` value (of the latest attempt that has
    one), ``min`` and ``max`` (over every finite value; NaN when it has none), ``steps`` (how
    many distinct steps it has values at; a value without a step counts as one) and ``points``
    (how many values: a metric both logged and printed has each value twice)."""

    name: str
    last: float
    min: float
    max: float
    steps: int
    points: int
    last_step: int | None
    last_time: dt.datetime

    def to_json(self) -> dict[str, Any]:
        """As JSON values (NaN as None, ``last_time`` ISO 8601 with its zone)."""
        out = attrs.asdict(self)
        for key in ("last", "min", "max"):
            out[key] = None if math.isnan(out[key]) else out[key]
        out["last_time"] = self.last_time.isoformat()
        return out


def summarize(points: Iterable[MetricPoint]) -> dict[str, MetricSummary]:
    """Each metric of ``points`` (one task's, oldest first), in the order first seen."""
    by_name: dict[str, list[MetricPoint]] = {}
    for p in points:
        by_name.setdefault(p.name, []).append(p)
    out = {}
    for name, mine in by_name.items():
        finite = [p.value for p in mine if math.isfinite(p.value)]
        last = mine[-1]
        steps = {p.step for p in mine if p.step is not None} | {
            -1 - i for i, p in enumerate(mine) if p.step is None
        }
        out[name] = MetricSummary(
            name, last.value, min(finite, default=math.nan), max(finite, default=math.nan), len(steps),
            len(mine), last.step, last.timestamp,
        )  # fmt: skip
    return out


def best_tasks(summaries: Mapping[str, Mapping[str, MetricSummary]]) -> dict[str, str]:
    """The task whose last value of each metric is the best (``lower_is_better``), by metric
    name; the first such task on a tie, none for a metric with no finite last value."""
    best: dict[str, tuple[str, float]] = {}
    for task_id, metrics in summaries.items():
        for name, s in metrics.items():
            if not math.isfinite(s.last):
                continue
            held = best.get(name)
            if held is None or (s.last < held[1] if lower_is_better(name) else s.last > held[1]):
                best[name] = (task_id, s.last)
    return {name: task_id for name, (task_id, _) in best.items()}
