"""Metrics of a task: what it logged (``runyard.job.log_metrics``: the attempt's ``metrics.jsonl``)
and what its output says (``loss: 0.52`` lines of its journal, read with the experiment's
``metric_patterns``), as :class:`MetricPoint` s.

Both files are read through the task's log source, so metrics come back from every backend as
its logs do. Parsing is fast because each pattern runs over the whole journal at once
(``finditer``); only for a match is its line looked at, for its time stamp and its step.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import json
import math
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
_TQDM = re.compile(r"\|[ \t]*(\d+)/\d+[ \t]*\[")
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


def _within(
    text: str, start: int, end: int, name: str, regex: re.Pattern[str], attempt: int
) -> list[tuple[int, MetricPoint]]:
    """The matches of ``regex`` that start from ``start`` to ``end`` (where one match spanned
    lines or ``\\r`` updates: rare, a regex like ``\\s*``), each line and update searched on its own."""
    line = text.rfind("\n", 0, start) + 1
    stop = text.find("\n", end)
    out = []
    for piece in re.finditer(r"[^\r\n]+", text[line : len(text) if stop < 0 else stop]):
        for m in regex.finditer(piece[0]):
            at = line + piece.start() + m.start()
            where = _where(text, at) if start <= at < end else None  # (the others are found anyway)
            if where is not None:
                with contextlib.suppress(TypeError, ValueError):
                    out.append((at, MetricPoint(name, float(m[1]), where[1], where[0], "parsed", attempt)))
    return out


def _stamp(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


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
                points.append(MetricPoint(name, float(value), step, when, "logged", attempt))
    return points


def _step_words_in(low: str) -> tuple[re.Pattern[str], ...]:
    """The regexes of the step words that the lowered line ``low`` holds anywhere, in order of
    preference (looked for once per line: the many pieces of a progress bar's line then look
    only for those)."""
    return tuple(regex for word, regex in _STEP_REGEXES if word in low)


def _step_at(low: str, start: int, end: int, words: tuple[re.Pattern[str], ...]) -> int | None:
    """The step that the piece ``low[start:end]`` of a lowered line gives: the first number
    after the most preferred of ``words`` in it (``_STEP_WORDS``: step, then iter..., as a word
    of its own), else a tqdm counter (``| 450/1000 [``); None."""
    for regex in words:
        m = regex.search(low, start, end)
        if m is not None:
            return int(m[1])
    if low.find("|", start, end) < 0:
        return None
    m = _TQDM.search(low, start, end)
    return int(m[1]) if m else None


def _step_of(piece: str) -> int | None:
    """The step a piece of a line gives (``_step_at`` with every step word)."""
    low = piece.lower()
    return _step_at(low, 0, len(low), _step_words_in(low))


class _Pattern:
    """One metric's compiled regex, and how to find its matches fast. Python's re finds a regex
    that starts with a literal quickly; one that does not (``(\\d+) tokens/s``, ``\\blr=``) is
    tried at every character, ten to fifty times slower: when it has a literal that every match
    holds (``tokens/s``), only the lines with that literal are searched."""

    __slots__ = ("literal", "regex")

    def __init__(self, regex: str) -> None:
        self.regex = re.compile(regex)
        fast = _literal_first(regex)
        if fast is not None and (faster := re.compile(fast)).groups == self.regex.groups:
            self.regex, regex = faster, fast
        self.literal = _needed_literal(regex)

    def matches(self, text: str) -> Iterator[re.Match[str]]:
        """Its matches in ``text`` (searched line by line, with a needed literal: none spans two)."""
        return self.regex.finditer(text) if self.literal is None else self._by_line(text, self.literal)

    def _by_line(self, text: str, literal: str) -> Iterator[re.Match[str]]:
        find, rfind, finditer = text.find, text.rfind, self.regex.finditer
        at = find(literal)
        while at >= 0:
            end = find("\n", at)
            end = len(text) if end < 0 else end
            yield from finditer(text, rfind("\n", 0, at) + 1, end)
            at = find(literal, end)


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


def _needed_literal(regex: str) -> str | None:
    """The longest run of plain characters at the top of ``regex`` (every match holds it); None
    when the regex starts with one (then it is fast as it is), or has none of 2 characters or
    more, or ignores case."""
    try:
        from re import _parser as sre  # type: ignore[attr-defined]
    except ImportError:  # Python 3.10
        import sre_parse as sre
    try:
        parsed = sre.parse(regex)
    except Exception:
        return None
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE) or not len(parsed) or parsed[0][0] is sre.LITERAL:
        return None
    best, run = "", ""
    for op, arg in [*parsed, (None, None)]:
        if op is sre.LITERAL:
            run += chr(arg)
            continue
        best, run = max(best, run, key=len), ""
    return best if len(best) >= 2 else None


def _line_of(text: str, pos: int) -> tuple[dt.datetime | None, int, int]:
    """The time stamp of the journal line holding ``pos`` (None if it has none), where its text
    starts (past ``<stamp> o ``) and where it ends."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    stamp = text[start : min(end, start + 40)].partition(" ")[0]
    try:
        when = _stamp(float(stamp))
    except (ValueError, OverflowError, OSError):
        when = None
    return when, start + len(stamp) + 3, end


def _piece_of(text: str, pos: int, body: int, end: int) -> tuple[int, int]:
    """Where the piece of line (between two ``\\r``) that holds ``pos`` starts and ends."""
    stop = text.find("\r", pos, end)
    return text.rfind("\r", body, pos) + 1 or body, end if stop < 0 else stop


def _where(text: str, pos: int) -> tuple[dt.datetime, int | None] | None:
    """``(time, step)`` of a match at ``pos``; None when it is not in a journal line's text."""
    when, body, end = _line_of(text, pos)
    if when is None or pos < body:
        return None
    start, stop = _piece_of(text, pos, body, end)
    return when, _step_of(text[start:stop])


class MetricParser:
    """Reads metric values out of a journal (``<unix time> <o|e> <text>`` lines) with one regex
    per metric, each with one group: the number. A line's ``\\r``-separated pieces (a progress
    bar's updates) are lines of their own: a match never spans two."""

    def __init__(self, patterns: Mapping[str, str] | None = None) -> None:
        given = DEFAULT_PATTERNS if patterns is None else patterns
        self.patterns = {name: _Pattern(regex) for name, regex in given.items()}

    def parse(self, data: bytes, attempt: int, *, complete: bool = True) -> list[MetricPoint]:
        """The points in journal ``data``, in the order of its lines. ``complete=False``: the
        attempt still runs, its unfinished last line is left for later. (The garbage collector
        is paused meanwhile: the many points made are no cycles, and its passes over them would
        take a fifth of the time.)"""
        text = data.decode("utf-8", "replace")
        if not complete:
            text = text[: text.rfind("\n") + 1]
        found: list[tuple[list[int], list[MetricPoint]]] = []
        with _gc_paused():
            for name, pattern in self.patterns.items():
                positions, points = self._parse_one(text, name, pattern, attempt)
                if points:
                    found.append((positions, points))
            if len(found) < 2:
                return found[0][1] if found else []
            # more than one pattern found something: all in the order of the text
            starts = [pos for positions, _ in found for pos in positions]
            every = [point for _, points in found for point in points]
            return [every[i] for i in sorted(range(len(starts)), key=starts.__getitem__)]

    @staticmethod
    def _parse_one(
        text: str, name: str, pattern: _Pattern, attempt: int
    ) -> tuple[list[int], list[MetricPoint]]:
        """The points of one pattern, and where in ``text`` each was found. The line and the piece
        of line of a match are looked at only when it is not in those of the match before."""
        positions: list[int] = []
        points: list[MetricPoint] = []
        position, point = positions.append, points.append
        find, rfind, new = text.find, text.rfind, tuple.__new__  # (the loop runs per value: kept lean)
        stamp_of = functools.partial(dt.datetime.fromtimestamp, tz=dt.timezone.utc)
        body = line_end = piece = piece_end = -1
        when: dt.datetime | None = None
        step: int | None = None
        low: str | None = None  # the line lowered (None: lowering changed its length, rare)
        pieces = False  # whether the line has pieces (a progress bar's \r-separated updates)
        words: tuple[Callable[..., re.Match[str] | None], ...] = ()  # the search of the line's step words
        for m in pattern.matches(text):
            start, end = m.span()
            if not piece <= start < piece_end:
                if not body <= start < line_end:  # a new line: stamp, text, step words (_line_of inline)
                    line = rfind("\n", 0, start) + 1
                    line_end = find("\n", start)
                    if line_end < 0:
                        line_end = len(text)
                    stamp = text[line : min(line_end, line + 40)].partition(" ")[0]
                    body = line + len(stamp) + 3
                    try:
                        when = stamp_of(float(stamp))
                    except (ValueError, OverflowError, OSError):
                        when = None
                    low = text[body:line_end].lower()
                    pieces = "\r" in low
                    words = tuple(regex.search for regex in _step_words_in(low))
                    if len(low) != line_end - body:
                        low = None
                if when is None or start < body:
                    continue  # not a journal line, or in its stamp
                if pieces:  # the piece of line (between two \r) that holds it (_piece_of, inline)
                    stop = find("\r", start, line_end)
                    piece, piece_end = rfind("\r", body, start) + 1 or body, line_end if stop < 0 else stop
                else:
                    piece, piece_end = body, line_end
                if low is None:
                    step = _step_of(text[piece:piece_end])
                else:  # (_step_at, its usual case inline)
                    at, until = piece - body, piece_end - body
                    for search in words:
                        found = search(low, at, until)
                        if found is not None:
                            step = int(found[1])
                            break
                    else:
                        step = _step_at(low, at, until, ())
            if end > piece_end:  # across lines or a progress bar's updates: rare (`\\s*`)
                for pos, crossed in _within(text, start, end, name, pattern.regex, attempt):
                    position(pos)
                    point(crossed)
                continue
            try:
                value = float(m[1])
            except (TypeError, ValueError):
                continue
            position(start)
            point(new(MetricPoint, (name, value, step, when, "parsed", attempt)))
        return positions, points

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
