"""The one-file HTML report of an experiment: ``Experiment.report(path)``, ``runyard report``.

One self-contained file that loads nothing (no network, no fonts, no images: its own
Content-Security-Policy forbids it): a header, the task table, the DAG, a timeline of every
attempt, a chart per metric, the failures with the end of their output, metadata, artifacts,
config versions with what changed between them, and the events. Charts are SVG written here;
the only script is a few lines for hover highlighting (allowed by its hash, nothing else is).

Everything a user or a task wrote (titles, ids, reasons, metadata, metric names, output) is
HTML-escaped, and every attribute value is quoted. DOM hooks for tests and users' scripts
(docs/user-guide.md, "Metrics and reports"): a ``data-task`` element per task in the task
table, a ``data-task`` + ``data-attempt`` element per attempt in the timeline, an
``<svg data-metric>`` per metric holding a ``data-task`` element per task that logged it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import html
import json
import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from runyard.errors import ConfigError, RunyardError
from runyard.metrics import lower_is_better
from runyard.serialization import TAG
from runyard.views import AttemptView, TaskView

if TYPE_CHECKING:
    from runyard.experiment import Experiment

REPORT_NAME = "report.html"
DASH = "\u2013"  # for a value that is not there
MAX_CHART_POINTS = 12_000  # per chart, over all its lines (longer lines are thinned, keeping extremes)
MAX_MARKED_POINTS = 600  # a chart with fewer points draws a dot on each
MAX_LEGEND = 16
MAX_EVENTS = 1000
MAX_FAILURE_LOGS = 12
FAILURE_LOG_LINES = 8
DAG_COLUMN_ROWS = 40
# the metrics whose best last value the legend marks: lower_is_better ones and these (higher)
HIGHER_IS_BETTER = (
    "acc",
    "f1",
    "auc",
    "precision",
    "recall",
    "score",
    "bleu",
    "reward",
    "map",
    "iou",
)  # a DAG layer with more tasks wraps into several columns

PALETTE = (
    "#4263eb", "#f76707", "#2f9e44", "#d6336c", "#7048e8", "#1098ad", "#e8590c", "#5c940d",
    "#ae3ec9", "#0b7285", "#c92a2a", "#364fc7",
)  # fmt: skip
# timeline colours: an attempt's outcome (its failure kind, else its state)
OUTCOME_COLOURS = {
    "SUCCEEDED": "#37b24d", "RUNNING": "#1c7ed6", "SUBMITTED": "#74c0fc", "PAUSED": "#91a7ff",
    "PENDING": "#ced4da", "error": "#e03131", "oom": "#9c36b5", "timeout": "#f08c00",
    "preempted": "#fab005", "node_failure": "#c2255c", "lost": "#868e96", "cancelled": "#adb5bd",
    "dependency": "#dee2e6", "FAILED": "#e03131", "CANCELLED": "#adb5bd",
}  # fmt: skip
STATE_COLOURS = {
    "CREATED": "#868e96", "PENDING": "#868e96", "SUBMITTED": "#1c7ed6", "RUNNING": "#1c7ed6",
    "PAUSED": "#5f3dc4", "SUCCEEDED": "#2b8a3e", "FAILED": "#c92a2a", "CANCELLED": "#495057",
}  # fmt: skip


def _e(value: Any) -> str:
    """Text or an attribute value (always written between double quotes), escaped."""
    return html.escape(str(value), quote=True)


# ------------------------------------------------------------------------------------ the data
_XY = tuple[float, float]  # a point of a chart: (x, y) in the data's units


@attrs.frozen
class _Data:
    """What the report shows, read once."""

    id: str
    title: str
    description: str | None
    tags: list[str]
    state: str
    created: float
    launched: float | None
    ended: float | None
    now: float
    tasks: list[TaskView]
    attempts: dict[str, list[AttemptView]]
    metrics: dict[str, list[Any]]  # task id -> MetricPoints, oldest first
    events: list[Any]
    metadata: dict[str, Any]
    artifacts: dict[str, Any]
    configs: dict[str, list[tuple[int, Any, str | None, float]]]  # name -> (version, JSON form, ...)
    failure_logs: dict[tuple[str, int], str]  # (task id, attempt) -> the end of a failed attempt's output
    version: str

    @property
    def origin(self) -> float:
        """Time zero of the timeline and of time-axis charts: the launch (else the first start)."""
        starts = [a.start_time.timestamp() for v in self.attempts.values() for a in v if a.start_time]
        return self.launched or min(starts, default=self.created)


def _gather(exp: Experiment) -> _Data:
    from runyard import __version__

    tasks = exp.tasks  # brings the store up to date once
    eid, store = exp.experiment_id, exp.store
    record = store.experiment(eid)
    attempts = {t.id: [AttemptView.of(a) for a in store.attempts(eid, t.id)] for t in tasks}
    names: dict[str, None] = {}
    for _, _, _, kind, data in store.events(eid):
        if kind == "config_version" and isinstance(data, dict) and isinstance(data.get("name"), str):
            names[data["name"]] = None
    configs = {n: [(v, json.loads(c), d, ts) for v, c, d, ts in store.config_versions(eid, n)] for n in names}
    failed = [
        (t.id, a.attempt)
        for t in tasks
        for a in attempts[t.id]
        if a.failure not in (None, "dependency", "cancelled")
    ][-MAX_FAILURE_LOGS:]
    state = "CREATED" if record.launched_at is None else str(exp.status())
    return _Data(
        id=eid, title=record.title, description=record.description, tags=list(record.tags), state=state,
        created=record.created_at, launched=record.launched_at, ended=record.ended_at, now=time.time(),
        tasks=tasks, attempts=attempts, metrics=exp.get_all_metrics(), events=exp.events(),
        metadata=exp.get_metadata(), artifacts=exp.get_artifacts(), configs=configs,
        failure_logs={key: _output_tail(exp, *key) for key in failed}, version=__version__,
    )  # fmt: skip


def _output_tail(exp: Experiment, task_id: str, attempt: int) -> str:
    """The last lines of one attempt's output: its stderr, else its stdout."""
    try:
        logs = exp.get_logs(task_id, attempt)
    except (RunyardError, OSError) as exc:
        return f"(output unavailable: {exc})"
    text = logs.stderr if logs.stderr.strip() else logs.stdout
    lines = [line.rsplit("\r", 1)[-1] for line in text.rstrip().splitlines()]
    return "\n".join(lines[-FAILURE_LOG_LINES:])


# ------------------------------------------------------------------------------ formatting
def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.3g}"
    return f"{v:.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _short_duration(seconds: float) -> str:
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m" + (f"{s % 60:02d}s" if s % 60 else "")
    return f"{s // 3600}h" + (f"{s % 3600 // 60:02d}m" if s % 3600 // 60 else "")


def _when(ts: float | dt.datetime | None) -> str:
    if ts is None:
        return DASH
    value = ts if isinstance(ts, dt.datetime) else dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clock(ts: dt.datetime | None) -> str:
    """The time of day (UTC) alone: the header has the date."""
    return DASH if ts is None else ts.astimezone(dt.timezone.utc).strftime("%H:%M:%S")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _f(v: float) -> str:
    """An SVG coordinate."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 times 10^n apart) covering [lo, hi]."""
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _time_ticks(span: float, count: int = 6) -> list[float]:
    steps = (
        0.1,
        0.2,
        0.5,
        1,
        2,
        5,
        10,
        15,
        30,
        60,
        120,
        300,
        600,
        900,
        1800,
        3600,
        7200,
        10800,
        21600,
        43200,
        86400,
    )
    step = next((s for s in steps if s * count >= span), steps[-1] * math.ceil(span / (count * steps[-1])))
    return [i * step for i in range(int(span // step) + 1)]


def _span(lo: float, hi: float) -> tuple[float, float]:
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.1 or 1.0
    return lo - pad, hi + pad


# ------------------------------------------------------------------------------------ sections
def _section(anchor: str, title: str, body: str, note: str = "") -> str:
    note_html = f' <span class="note">{note}</span>' if note else ""
    return f'<section id="{anchor}"><h2>{_e(title)}{note_html}</h2>{body}</section>\n'


def _badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#495057")
    return f'<span class="badge" style="background:{colour}">{_e(state)}</span>'


def _header(d: _Data) -> str:
    start = d.launched
    end = d.ended if d.ended is not None else (d.now if start is not None and d.state != "CREATED" else None)
    counts: dict[str, int] = {}
    for t in d.tasks:
        counts[str(t.status)] = counts.get(str(t.status), 0) + 1
    chips = "".join(
        f'<span class="chip"><i style="background:{STATE_COLOURS.get(s, "#495057")}"></i>{n} {_e(s.lower())}</span>'
        for s, n in counts.items()
    )
    n_attempts = sum(len(v) for v in d.attempts.values())
    facts = [
        ("Experiment", f"<code>{_e(d.id)}</code>"),
        ("Created", _e(_when(d.created))),
        ("Launched", _e(_when(d.launched))),
        ("Ended", _e(_when(d.ended))),
        ("Duration", _e(_duration(end - start) if start is not None and end is not None else None)),
        ("Tasks", f"{len(d.tasks)} ({n_attempts} attempt{'s' if n_attempts != 1 else ''})"),
    ]
    tags = "".join(f'<span class="tag">{_e(t)}</span>' for t in d.tags)
    desc = f'<p class="desc">{_e(d.description)}</p>' if d.description else ""
    return (
        f'<header><div class="titlebar"><h1>{_e(d.title)}</h1>{_badge(d.state)}</div>{desc}'
        f'<div class="tags">{tags}</div>'
        '<dl class="facts">' + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts) + "</dl>"
        f'<div class="chips">{chips}</div></header>\n'
    )


def _last_values(points: Sequence[Any]) -> dict[str, float]:
    last: dict[str, float] = {}
    for p in points:
        if math.isfinite(p.value):
            last[p.name] = p.value
    return last


def _task_table(d: _Data, series: dict[str, dict[str, list[Any]]]) -> str:
    if not d.tasks:
        return _section("tasks", "Tasks", '<p class="empty">This experiment has no tasks.</p>')
    order = {name: i for i, name in enumerate(series)}  # the charts' order
    rows = []
    for t in d.tasks:
        dots = "".join(
            f'<i class="dot" style="background:{_outcome_colour(a)}" title="{_e(_attempt_title(t.id, a))}"></i>'
            for a in d.attempts.get(t.id, [])
        )
        last = _last_values(d.metrics.get(t.id, []))
        metrics = " ".join(
            f'<span class="mv">{_e(n)} <b>{_num(last[n])}</b></span>'
            for n in sorted(last, key=order.__getitem__)
        )
        dur = t.duration.total_seconds() if t.duration is not None else None
        rows.append(
            f'<tr data-task="{_e(t.id)}"><td class="id">{_e(t.id)}</td><td>{_badge(str(t.status))}</td>'
            f'<td class="dots">{dots or DASH}</td><td>{_e(t.failure or "")}</td>'
            f'<td class="r">{"" if t.exit_code is None else t.exit_code}</td>'
            f'<td class="time" title="{_e(_when(t.start_time))}">{_e(_clock(t.start_time))}</td>'
            f'<td class="r">{_e(_duration(dur))}</td>'
            f'<td class="deps">{_e(", ".join(t.dependencies))}</td><td class="reason">{_e(t.reason or "")}</td>'
            f"<td>{metrics}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Task", "State", "Attempts", "Failure", "Exit", "Started (UTC)", "Took", "Depends on", "Reason",
                  "Last metrics")
    )  # fmt: skip
    return _section(
        "tasks", "Tasks", f'<div class="scroll"><table class="tasks"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>', f"{len(d.tasks)}",
    )  # fmt: skip


def _outcome(a: AttemptView) -> str:
    return a.failure or str(a.status)


def _outcome_colour(a: AttemptView) -> str:
    return OUTCOME_COLOURS.get(_outcome(a), "#868e96")


def _attempt_title(task_id: str, a: AttemptView) -> str:
    dur = a.duration.total_seconds() if a.duration is not None else None
    parts = [f"{task_id} · attempt {a.attempt}", _outcome(a), _duration(dur)]
    if a.exit_code is not None:
        parts.append(f"exit {a.exit_code}")
    if a.job_id:
        parts.append(f"job {a.job_id}")
    if a.reason:
        parts.append(a.reason)
    return " · ".join(parts)


# ----------------------------------------------------------------------------------- timeline
def _timeline(d: _Data) -> str:
    rows = [(t, d.attempts.get(t.id, [])) for t in d.tasks]
    if not any(a for _, a in rows):
        return _section("timeline", "Timeline", '<p class="empty">No task has run yet.</p>')
    origin = d.origin
    ends = [
        (a.end_time.timestamp() if a.end_time else d.now)
        for _, v in rows
        for a in v
        if a.start_time or a.end_time
    ]
    span = max(max(ends, default=origin) - origin, 0.01)
    label_w, plot_w, row_h, top = 190.0, 770.0, 20.0, 26.0
    width, height = label_w + plot_w + 10, top + row_h * len(rows) + 8
    scale = plot_w / span

    def x_of(ts: float) -> float:
        return label_w + max(0.0, ts - origin) * scale

    out = [
        f'<svg class="gantt" viewBox="0 0 {_f(width)} {_f(height)}" width="{_f(width)}" height="{_f(height)}"'
        ' role="img" aria-label="timeline of every attempt">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="3" height="6" fill="rgba(0,0,0,.18)"/></pattern></defs>',
    ]
    for tick in _time_ticks(span):
        x = label_w + tick * scale
        out.append(
            f'<line class="grid" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(top - 4)}" y2="{_f(height - 6)}"/>'
            f'<text class="tick" x="{_f(x)}" y="{_f(top - 10)}" text-anchor="middle">{_short_duration(tick)}</text>'
        )
    for i, (t, attempts) in enumerate(rows):
        y = top + i * row_h
        if i % 2:
            out.append(f'<rect class="band" x="0" y="{_f(y)}" width="{_f(width)}" height="{_f(row_h)}"/>')
        out.append(
            f'<text class="label" x="{_f(label_w - 8)}" y="{_f(y + row_h / 2 + 4)}" text-anchor="end">'
            f"<title>{_e(t.id)}</title>{_e(_clip(t.id, 26))}</text>"
        )
        for a in attempts:
            out.append(_bar(t.id, a, x_of, y + 4, row_h - 8, d.now))
        if not attempts:
            out.append(
                f'<text class="never" x="{_f(label_w + 4)}" y="{_f(y + row_h / 2 + 4)}">'
                f"{_e(t.reason or 'never ran')}</text>"
            )
    out.append("</svg>")
    kinds = sorted({_outcome(a) for _, v in rows for a in v}, key=list(OUTCOME_COLOURS).index)
    legend = "".join(
        f'<span class="key"><i class="sw{" hatched" if k == "preempted" else ""}" '
        f'style="background-color:{OUTCOME_COLOURS[k]}"></i>{_e(k.lower())}</span>'
        for k in kinds
        if k in OUTCOME_COLOURS
    )
    return _section(
        "timeline", "Timeline", f'<div class="legend">{legend}</div><div class="scroll">{"".join(out)}</div>',
        "one row per task, one bar per attempt, from the launch",
    )  # fmt: skip


def _bar(task_id: str, a: AttemptView, x_of: Any, y: float, h: float, now: float) -> str:
    hook = f'data-task="{_e(task_id)}" data-attempt="{a.attempt}"'
    title = f"<title>{_e(_attempt_title(task_id, a))}</title>"
    colour = _outcome_colour(a)
    if a.start_time is None:  # ended before it started (cancelled, a dependency failed): a mark
        ts = a.end_time.timestamp() if a.end_time else now
        x = x_of(ts)
        return (
            f'<path {hook} class="mark" d="M{_f(x)} {_f(y)}l4 {_f(h / 2)}l-4 {_f(h / 2)}l-4 -{_f(h / 2)}z" '
            f'fill="{colour}">{title}</path>'
        )
    x0 = x_of(a.start_time.timestamp())
    x1 = x_of(a.end_time.timestamp() if a.end_time else now)
    cls = "bar" + (" live" if a.end_time is None else "")
    bar = (
        f'<rect {hook} class="{cls}" x="{_f(x0)}" y="{_f(y)}" width="{_f(max(x1 - x0, 2.5))}" '
        f'height="{_f(h)}" rx="2" fill="{colour}">{title}</rect>'
    )
    if a.failure == "preempted":
        bar += (
            f'<rect class="hatch" x="{_f(x0)}" y="{_f(y)}" width="{_f(max(x1 - x0, 2.5))}" height="{_f(h)}" '
            'rx="2" fill="url(#hatch)"/>'
        )
    return bar


# ---------------------------------------------------------------------------------------- DAG
def _dag(d: _Data) -> str:
    if not d.tasks:
        return _section("dag", "Dependencies", '<p class="empty">No tasks.</p>')
    depth: dict[str, int] = {}
    for t in d.tasks:  # a dependency is always added before the tasks that need it
        depth[t.id] = 1 + max((depth.get(p, 0) for p in t.dependencies), default=-1)
    layers: list[list[TaskView]] = [[] for _ in range(max(depth.values()) + 1)]
    for t in d.tasks:
        layers[depth[t.id]].append(t)
    node_w, node_h, gap_x, gap_y, pad = 168.0, 26.0, 56.0, 10.0, 8.0
    pos: dict[str, tuple[float, float]] = {}
    x = pad
    for layer in layers:
        if pos:  # parents' mean row first: fewer crossings
            layer.sort(key=lambda t: sum(pos[p][1] for p in t.dependencies) / max(len(t.dependencies), 1))
        cols = math.ceil(len(layer) / DAG_COLUMN_ROWS)
        for i, t in enumerate(layer):
            pos[t.id] = (
                x + (i // DAG_COLUMN_ROWS) * (node_w + 16),
                pad + (i % DAG_COLUMN_ROWS) * (node_h + gap_y),
            )
        x += cols * (node_w + 16) - 16 + gap_x
    width = x - gap_x + pad
    height = pad * 2 + min(max(len(v) for v in layers), DAG_COLUMN_ROWS) * (node_h + gap_y) - gap_y
    edges, nodes = [], []
    for t in d.tasks:
        tx, ty = pos[t.id]
        for p in t.dependencies:
            px, py = pos[p]
            x1, y1, x2, y2 = px + node_w, py + node_h / 2, tx, ty + node_h / 2
            c = max((x2 - x1) / 2, 20)
            edges.append(
                f'<path class="edge" d="M{_f(x1)} {_f(y1)}C{_f(x1 + c)} {_f(y1)} {_f(x2 - c)} {_f(y2)} '
                f'{_f(x2)} {_f(y2)}"/>'
            )
        colour = STATE_COLOURS.get(str(t.status), "#495057")
        nodes.append(
            f'<g class="node" data-node="{_e(t.id)}" transform="translate({_f(tx)},{_f(ty)})">'
            f"<title>{_e(t.id)} · {_e(t.status)} · {t.attempts} attempt(s)</title>"
            f'<rect width="{_f(node_w)}" height="{_f(node_h)}" rx="6" style="stroke:{colour}"/>'
            f'<circle cx="12" cy="{_f(node_h / 2)}" r="4.5" fill="{colour}"/>'
            f'<text x="22" y="{_f(node_h / 2 + 4)}">{_e(_clip(t.id, 20))}</text></g>'
        )
    svg = (
        f'<svg class="dag" viewBox="0 0 {_f(width)} {_f(height)}" width="{_f(width)}" height="{_f(height)}" '
        f'role="img" aria-label="task dependencies">{"".join(edges)}{"".join(nodes)}</svg>'
    )
    return _section("dag", "Dependencies", f'<div class="scroll">{svg}</div>', "left to right, by depth")


# ------------------------------------------------------------------------------------- charts
def _series(d: _Data) -> dict[str, dict[str, list[Any]]]:
    """metric name -> task id -> its points (MetricPoints), in the tasks' order."""
    out: dict[str, dict[str, list[Any]]] = {}
    isfinite = math.isfinite
    for t in d.tasks:
        mine: dict[str, list[Any]] = {}
        for p in d.metrics.get(t.id, ()):
            if isfinite(p.value):
                mine.setdefault(p.name, []).append(p)
        for name, points in mine.items():
            out.setdefault(name, {})[t.id] = points
    return out


def _thin(points: list[_XY], keep: int) -> list[_XY]:
    """At most about ``keep`` points of a line: the lowest and highest of each bucket, in order."""
    if len(points) <= keep:
        return points
    buckets = max(keep // 2, 1)
    size = len(points) / buckets
    out: list[_XY] = []
    for b in range(buckets):
        chunk = points[int(b * size) : int((b + 1) * size)]
        if chunk:
            lo, hi = chunk.index(min(chunk, key=_y)), chunk.index(max(chunk, key=_y))
            out.extend(chunk[i] for i in sorted({lo, hi}))
    return out


def _y(point: _XY) -> float:
    return point[1]


def _charts(d: _Data, series: dict[str, dict[str, list[Any]]]) -> str:
    if not series:
        return _section(
            "metrics", "Metrics",
            '<p class="empty">No metrics: log them with <code>runyard.job.log_metrics()</code>, or print '
            "<code>loss: 0.52</code> lines (the experiment's <code>metric_patterns</code>).</p>",
        )  # fmt: skip
    colours = {t.id: PALETTE[i % len(PALETTE)] for i, t in enumerate(d.tasks)}
    charts = [
        _chart(i, name, per_task, colours, d.origin) for i, (name, per_task) in enumerate(series.items())
    ]
    return _section(
        "metrics", "Metrics", f'<div class="charts">{"".join(charts)}</div>',
        "x: the step (where most points have one), else the time since the launch; earlier attempts dashed",
    )  # fmt: skip


def _by_step(per_task: dict[str, list[Any]]) -> bool:
    """Whether a chart's x axis is the step: when at least half of its points have one."""
    steps = sum(p.step is not None for v in per_task.values() for p in v)
    return steps * 2 >= sum(len(v) for v in per_task.values())


def _placed(points: list[Any], by_step: bool, origin: float) -> dict[int, list[_XY]]:
    """A task's points on the chart's x axis, each attempt's in order. On the step axis a point
    without a step sits at the step of the point before it in its attempt (0 for the first);
    a later attempt keeps its own steps: one resumed from a checkpoint continues the line, one
    that starts over draws over the earlier (dashed) one. On the time axis: seconds since the
    launch, so attempts follow each other as in the timeline. By attempt, oldest first."""
    out: dict[int, list[_XY]] = {}
    if not by_step:
        for p in points:
            out.setdefault(p.attempt, []).append((p.timestamp.timestamp() - origin, p.value))
        return out
    last: dict[int, float] = {}
    for p in points:
        x = float(p.step) if p.step is not None else last.get(p.attempt, 0.0)
        last[p.attempt] = x
        out.setdefault(p.attempt, []).append((x, p.value))
    for line in out.values():
        line.sort(key=_x)  # stable: points of one step keep their order
    return dict(sorted(out.items()))


def _x(point: _XY) -> float:
    return point[0]


def _chart(
    index: int, name: str, per_task: dict[str, list[Any]], colours: dict[str, str], origin: float
) -> str:
    by_step = _by_step(per_task)
    lines = {task_id: _placed(points, by_step, origin) for task_id, points in per_task.items()}
    total = sum(len(line) for v in lines.values() for line in v.values())
    keep = max(MAX_CHART_POINTS // max(len(lines), 1), 40)
    xs = [x for v in lines.values() for line in v.values() for x, _ in line]
    ys = [y for v in lines.values() for line in v.values() for _, y in line]
    x_lo, x_hi = _span(min(xs), max(xs))
    y_ticks = _ticks(*_span(min(ys), max(ys)))
    step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    y_lo = min(y_ticks[0], min(ys))
    y_hi = max(y_ticks[-1], max(ys))
    if y_lo < y_ticks[0]:
        y_ticks.insert(0, y_ticks[0] - step)
        y_lo = y_ticks[0]
    if y_hi > y_ticks[-1]:
        y_ticks.append(y_ticks[-1] + step)
        y_hi = y_ticks[-1]
    w, h, left, right, top, bottom = 560.0, 250.0, 58.0, 14.0, 12.0, 34.0
    pw, ph = w - left - right, h - top - bottom

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * pw

    def sy(v: float) -> float:
        return top + ph - (v - y_lo) / (y_hi - y_lo) * ph

    out = [
        f'<svg data-metric="{_e(name)}" viewBox="0 0 {_f(w)} {_f(h)}" role="img" aria-label="{_e(name)}">',
        f'<rect class="plot" x="{_f(left)}" y="{_f(top)}" width="{_f(pw)}" height="{_f(ph)}"/>',
    ]
    for v in y_ticks:
        y = sy(v)
        out.append(
            f'<line class="grid" x1="{_f(left)}" x2="{_f(left + pw)}" y1="{_f(y)}" y2="{_f(y)}"/>'
            f'<text class="tick" x="{_f(left - 6)}" y="{_f(y + 4)}" text-anchor="end">{_num(v)}</text>'
        )
    x_ticks = _time_ticks(x_hi) if not by_step and x_lo >= 0 else _ticks(x_lo, x_hi)
    for v in x_ticks:
        if x_lo - 1e-9 <= v <= x_hi + 1e-9:
            x = sx(v)
            label = _num(v) if by_step else _short_duration(v)
            out.append(
                f'<line class="grid" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(top)}" y2="{_f(top + ph)}"/>'
                f'<text class="tick" x="{_f(x)}" y="{_f(top + ph + 16)}" text-anchor="middle">{label}</text>'
            )
    out.append(
        f'<text class="axis" x="{_f(left + pw)}" y="{_f(h - 3)}" text-anchor="end">'
        f"{'step' if by_step else 'time since launch'}</text>"
    )
    kx, ky = pw / (x_hi - x_lo), ph / (y_hi - y_lo)
    for task_id, by_attempt in lines.items():
        colour = colours.get(task_id, PALETTE[0])
        count = sum(len(line) for line in by_attempt.values())
        parts = [
            f'<g class="series" data-task="{_e(task_id)}" data-points="{count}" style="color:{colour}">',
            f"<title>{_e(task_id)} · {_e(name)} · {count} point(s)</title>",
        ]
        latest = max(by_attempt)
        for n, line in by_attempt.items():
            shown = [(left + (x - x_lo) * kx, top + ph - (y - y_lo) * ky) for x, y in _thin(line, keep)]
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in shown)
            dashed = ' class="earlier"' if n != latest else ""
            parts.append(f'<polyline{dashed} data-attempt-line="{n}" points="{coords}"/>')
            if total <= MAX_MARKED_POINTS or len(shown) == 1:
                parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.4"/>' for x, y in shown)
        parts.append("</g>")
        out.append("".join(parts))
    out.append("</svg>")
    last = {task_id: points[-1].value for task_id, points in per_task.items()}
    best = None
    if len(last) > 1 and (lower_is_better(name) or any(w in name.lower() for w in HIGHER_IS_BETTER)):
        best = (min if lower_is_better(name) else max)(last, key=last.__getitem__)
    legend = []
    for task_id in list(per_task)[:MAX_LEGEND]:
        mark = ' <span class="best" title="best last value">best</span>' if task_id == best else ""
        legend.append(
            f'<span class="key"><i class="sw" style="background:{colours.get(task_id, PALETTE[0])}"></i>'
            f"{_e(task_id)} <b>{_num(last[task_id])}</b>{mark}</span>"
        )
    if len(per_task) > MAX_LEGEND:
        legend.append(f'<span class="key more">and {len(per_task) - MAX_LEGEND} more</span>')
    return (
        f'<figure class="chart" id="metric-{index}"><figcaption>{_e(name)}</figcaption>{"".join(out)}'
        f'<div class="legend">{"".join(legend)}</div></figure>'
    )


# --------------------------------------------------------------------------- the other sections
def _failures(d: _Data) -> str:
    """Every attempt that failed (its kind, exit code, reason; the end of its output, for the
    latest MAX_FAILURE_LOGS of them), and the tasks that never ran because a dependency failed."""
    items = []
    for t in d.tasks:
        attempts = d.attempts.get(t.id, [])
        for a in attempts:
            if a.failure in (None, "dependency"):
                continue
            exit_text = "" if a.exit_code is None else f" (exit {a.exit_code})"
            reason = a.reason if a.reason and a.reason != f"exit code {a.exit_code}" else None
            tail = d.failure_logs.get((t.id, a.attempt))
            items.append(
                f'<li><i class="sw" style="background:{_outcome_colour(a)}"></i><b>{_e(t.id)}</b> attempt '
                f"{a.attempt}: {_e(_outcome(a))}{exit_text}{' — ' + _e(reason) if reason else ''}"
                + (f"<pre>{_e(tail)}</pre>" if tail else "")
                + "</li>"
            )
        if not attempts and t.failure:
            items.append(
                f'<li><i class="sw" style="background:{OUTCOME_COLOURS.get(t.failure, "#868e96")}"></i>'
                f"<b>{_e(t.id)}</b> never ran: {_e(t.reason or t.failure)}</li>"
            )
    if not items:
        return ""
    return _section("failures", "Failures", f'<ul class="failures">{"".join(items)}</ul>', f"{len(items)}")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False, default=str)


def _metadata(d: _Data) -> str:
    if not d.metadata:
        return _section("metadata", "Metadata", '<p class="empty">No metadata.</p>')
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td><code>{_e(_json_text(v))}</code></td></tr>" for k, v in d.metadata.items()
    )
    return _section("metadata", "Metadata", f'<table class="kv">{rows}</table>')


def _artifacts(d: _Data) -> str:
    if not d.artifacts:
        return _section("artifacts", "Artifacts", '<p class="empty">No artifacts.</p>')
    rows = "".join(
        f'<tr><td class="id">{_e(n)}</td><td class="r">{_e(_size(a.size))}</td>'
        f'<td><code class="hash">{_e(a.sha256)}</code></td><td><code>{_e(a.path)}</code></td>'
        f"<td>{_e(a.description or '')}</td><td>{_e(_when(a.created_at))}</td></tr>"
        for n, a in d.artifacts.items()
    )
    head = "".join(f"<th>{h}</th>" for h in ("Name", "Size", "SHA-256", "Path", "Description", "Recorded"))
    return _section(
        "artifacts", "Artifacts", f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}'
        "</tbody></table></div>",
    )  # fmt: skip


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A config's JSON form as ``path -> value`` (runyard's tagged forms unwrapped: a Config's
    arguments are its keys, its target ``(target)``), for showing what changed."""
    out: dict[str, str] = {}

    def join(key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    if isinstance(value, dict):
        tag = value.get(TAG)
        if tag in ("config", "partial"):
            out[join("(target)")] = f"{value.get('target')}" + (" (partial)" if tag == "partial" else "")
            for i, a in enumerate(value.get("args") or []):
                out.update(flatten(a, f"{prefix}[{i}]"))
            for k, v in (value.get("kwargs") or {}).items():
                out.update(flatten(v, join(k)))
            return out
        if tag in ("tuple", "dict"):
            return flatten(value.get("items"), prefix)
        if tag in ("path", "ref"):
            return {prefix or "(value)": str(value.get("value", value.get("target")))}
        if not value and prefix:
            return {prefix: "{}"}
        for k, v in value.items():
            if k != TAG:
                out.update(flatten(v, join(str(k))))
        return out
    if isinstance(value, list):
        if not value and prefix:
            return {prefix: "[]"}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix or "(value)": _json_text(value)}


def config_changes(old: Any, new: Any) -> list[tuple[str, str | None, str | None]]:
    """What changed from one JSON form to the next: (path, old value or None, new value or None)."""
    a, b = flatten(old), flatten(new)
    keys = list(a) + [k for k in b if k not in a]
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]


def _configs(d: _Data) -> str:
    if not d.configs:
        return _section(
            "configs", "Config versions",
            '<p class="empty">No tracked configs (<code>exp.track_config_version(name, config)</code>).</p>',
        )  # fmt: skip
    blocks = []
    for name, versions in d.configs.items():
        items = []
        previous: Any = None
        for version, config, description, created in versions:
            desc = f" — {_e(description)}" if description else ""
            if previous is None:
                body = "".join(
                    f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>"
                    for k, v in flatten(config).items()
                )
                change = f'<table class="kv diff">{body}</table>'
            else:
                diff = config_changes(previous, config)
                change = (
                    '<table class="kv diff">'
                    + "".join(
                        f"<tr><th>{_e(k)}</th><td>"
                        + (f"<del>{_e(o)}</del>" if o is not None else "")
                        + (" → " if o is not None and n is not None else "")
                        + (f"<ins>{_e(n)}</ins>" if n is not None else "")
                        + "</td></tr>"
                        for k, o, n in diff
                    )
                    + "</table>"
                    if diff
                    else '<p class="note">no change</p>'
                )
            items.append(
                f'<li><div class="ver"><b>v{version}</b> <span class="note">{_e(_when(created))}</span>{desc}'
                f"</div>{change}</li>"
            )
            previous = config
        blocks.append(
            f'<div class="config"><h3>{_e(name)}</h3><ol class="versions">{"".join(items)}</ol></div>'
        )
    return _section(
        "configs", "Config versions", "".join(blocks), "each version: what changed since the one before"
    )


def _events(d: _Data) -> str:
    events = d.events
    if not events:
        return ""
    shown = events[-MAX_EVENTS:]
    note = f"the last {len(shown)} of {len(events)}" if len(shown) < len(events) else f"{len(events)}"
    rows = "".join(
        f'<tr><td>{_e(_when(e.timestamp))}</td><td class="id">{_e(e.task_id or "(experiment)")}</td>'
        f'<td class="r">{"" if e.attempt is None else e.attempt}</td>'
        f'<td>{_e(e.from_state or "")} → {_e(e.to_state or "")}</td><td class="reason">{_e(e.reason or "")}</td></tr>'
        for e in shown
    )
    head = "".join(f"<th>{h}</th>" for h in ("Time", "Task", "Attempt", "Change", "Reason"))
    return _section(
        "events", "Events",
        f'<details><summary>every state change</summary><div class="scroll"><table class="events"><thead>'
        f"<tr>{head}</tr></thead><tbody>{rows}</tbody></table></div></details>", note,
    )  # fmt: skip


# ----------------------------------------------------------------------------------- the page
CSS = """
:root{--fg:#212529;--muted:#6c757d;--line:#e9ecef;--bg:#f4f5f7;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","DejaVu Sans",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 24px 40px}
header,section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;
 margin:0 0 16px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
.titlebar{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
h1{font-size:24px;margin:0;word-break:break-word}
h2{font-size:16px;margin:0 0 12px}
h3{font-size:14px;margin:8px 0}
.note{color:var(--muted);font-weight:normal;font-size:12px}
.desc{margin:6px 0 8px;color:#343a40}
.badge{color:#fff;border-radius:999px;padding:1px 9px;font-size:11px;font-weight:600;letter-spacing:.03em}
.tag{display:inline-block;background:#edf2ff;color:#364fc7;border-radius:4px;padding:0 7px;margin:0 6px 4px 0;
 font-size:12px}
.facts{display:flex;flex-wrap:wrap;gap:8px 36px;margin:10px 0}
.facts div{min-width:0;max-width:100%}.facts dt{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.04em}
.facts dd{margin:0;overflow-wrap:anywhere}
.chips{display:flex;gap:14px;flex-wrap:wrap}
.chip i,.key i,.sw{display:inline-block;width:10px;height:10px;border-radius:3px;margin-right:5px;
 vertical-align:-1px}
nav{display:flex;gap:16px;flex-wrap:wrap;margin:0 0 14px;padding:0 4px;font-size:13px}
nav a{color:#364fc7;text-decoration:none}
.scroll{overflow:auto;max-height:720px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
thead th{position:sticky;top:0;background:#f8f9fa;font-size:12px;color:#495057;white-space:nowrap}
td.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.time{white-space:nowrap;font-variant-numeric:tabular-nums}
td.id{font-family:"DejaVu Sans Mono",ui-monospace,monospace;font-size:12px;white-space:nowrap}
td.reason,td.deps{color:#495057;max-width:260px;overflow-wrap:anywhere}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:3px}
.mv{white-space:nowrap;margin-right:8px;color:#495057}
tr.hl td{background:#fff9db}
code{font-family:"DejaVu Sans Mono",ui-monospace,monospace;font-size:12px;overflow-wrap:anywhere}
.hash{font-size:11px}
.kv th{width:28%;color:#495057;font-weight:600}
svg text{font-family:"DejaVu Sans",system-ui,sans-serif}
.gantt .tick,.tick{font-size:10px;fill:var(--muted)}
.gantt .label{font-size:11px;fill:#343a40}
.gantt .never{font-size:10px;fill:var(--muted);font-style:italic}
.grid{stroke:#e9ecef;stroke-width:1}
.band{fill:#f8f9fa}
.bar.live{opacity:.75}
.gantt rect[data-task]:hover,.gantt path[data-task]:hover,.hl{filter:brightness(.85)}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;color:#495057;margin:4px 0 8px}
.key b{font-weight:600;color:var(--fg)}
.best{background:#fff3bf;color:#8a5a00;border-radius:3px;padding:0 4px;font-size:10px;font-weight:600}
.hatched{background-image:repeating-linear-gradient(45deg,rgba(0,0,0,.2) 0 2px,transparent 2px 5px)}
.dag .edge{fill:none;stroke:#adb5bd;stroke-width:1.4}
.dag .node rect{fill:#fff;stroke-width:1.6}
.dag .node text{font-size:11px;fill:#212529}
.dag .node.hl rect{fill:#fff9db}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:18px}
.chart{margin:0}
figcaption{font-weight:600;font-size:13px;margin-bottom:2px;overflow-wrap:anywhere}
.chart svg{width:100%;height:auto;display:block}
.plot{fill:#fcfcfd;stroke:#dee2e6}
.axis{font-size:10px;fill:var(--muted)}
.series polyline{fill:none;stroke:currentColor;stroke-width:1.8;stroke-linejoin:round}
.series polyline.earlier{stroke-dasharray:4 3;opacity:.6}
.series circle{fill:currentColor}
.series:hover polyline,.series.hl polyline{stroke-width:3.2}
.failures{list-style:none;margin:0;padding:0}
.failures li{margin:0 0 10px}
pre{background:#212529;color:#f1f3f5;border-radius:6px;padding:8px 10px;margin:6px 0 0;font-size:12px;
 overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere}
.versions{margin:0;padding-left:18px}
.versions li{margin:0 0 8px}
del{background:#ffe3e3;color:#c92a2a;text-decoration:line-through;padding:0 3px;border-radius:3px}
ins{background:#d3f9d8;color:#2b8a3e;text-decoration:none;padding:0 3px;border-radius:3px}
.empty{color:var(--muted);margin:0}
summary{cursor:pointer;color:#364fc7;margin-bottom:6px}
footer{color:var(--muted);font-size:12px;text-align:center}
"""

# error trap first (a script error lands in the DOM: data-js-error), then hover highlighting of
# one task everywhere (table row, timeline bars, DAG node, chart lines)
SCRIPT = """
window.addEventListener("error", function (e) {
  document.documentElement.setAttribute("data-js-error", String(e.message || e));
});
(function () {
  var lit = [], sel = "[data-task],[data-node]";
  function key(n) { return n.getAttribute("data-task") || n.getAttribute("data-node"); }
  document.addEventListener("mouseover", function (e) {
    var t = e.target.closest ? e.target.closest(sel) : null, id = t ? key(t) : null;
    lit.forEach(function (n) { n.classList.remove("hl"); });
    lit = [];
    if (!id) return;
    document.querySelectorAll(sel).forEach(function (n) {
      if (key(n) === id) { n.classList.add("hl"); lit.push(n); }
    });
  });
})();
""".strip()

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
# nothing may be loaded: no request leaves the page, whatever a user's text holds
CSP = (
    f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


def render(exp: Experiment) -> str:
    """The report of ``exp`` as one HTML document."""
    return _page(_gather(exp))


def _page(d: _Data) -> str:
    series = _series(d)
    sections = [
        ("tasks", "Tasks", _task_table(d, series)),
        ("timeline", "Timeline", _timeline(d)),
        ("metrics", "Metrics", _charts(d, series)),
        ("dag", "Dependencies", _dag(d)),
        ("failures", "Failures", _failures(d)),
        ("metadata", "Metadata", _metadata(d)),
        ("artifacts", "Artifacts", _artifacts(d)),
        ("configs", "Config versions", _configs(d)),
        ("events", "Events", _events(d)),
    ]
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t, body in sections if body)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="runyard {_e(d.version)}">'
        f"<title>{_e(d.title)} · runyard report</title><style>{CSS}</style><script>{SCRIPT}</script></head>\n"
        f'<body><main data-experiment="{_e(d.id)}">{_header(d)}<nav>{nav}</nav>\n'
        + "".join(body for _, _, body in sections)
        + f"<footer>runyard {_e(d.version)} · report made {_e(_when(d.now))}</footer></main></body></html>\n"
    )


def write(exp: Experiment, path: str | os.PathLike[str] | None = None) -> str:
    """Write the report of ``exp`` to ``path`` (default: ``report.html`` in the experiment's
    folder), atomically; returns the absolute path written. A path that is a folder, a
    device or a pipe is refused (ConfigError)."""
    target = os.path.join(exp.directory, REPORT_NAME) if path is None else os.fspath(path)
    if not isinstance(target, str) or not target:
        raise ConfigError(f"report path must be a file's path, got {path!r}")
    target = os.path.abspath(os.path.expanduser(target))
    if os.path.islink(target):
        target = os.path.realpath(target)
    if os.path.exists(target) and not os.path.isfile(target):
        raise ConfigError(
            f"cannot write the report to {target!r}: it is not a regular file; give a file's path"
        )
    text = render(exp)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
    return target
