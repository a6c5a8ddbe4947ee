"""The ``runyard`` command (also ``python -m runyard``). See docs/cli.md.

Errors print one line, ``runyard: error: ...``, with no traceback, and exit with code 1
(2 for a wrong command line); warnings one line each, ``runyard: warning: ...``.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from runyard.errors import RunyardError


def _experiment(args: argparse.Namespace) -> Any:
    """The experiment named by id, or else the newest with that title."""
    from runyard.errors import UnknownExperimentError
    from runyard.experiment import Experiment

    try:
        return Experiment.from_id(args.experiment, base_dir=args.home)
    except UnknownExperimentError:
        try:
            return Experiment.from_title(args.experiment, base_dir=args.home)
        except UnknownExperimentError:
            raise UnknownExperimentError(
                f"no experiment with id or title {args.experiment!r}"
                f" (see `runyard list`{' --home ' + args.home if args.home else ''})"
            ) from None


def _count(text: str) -> int:
    """A command-line count: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {text!r}")
    return value


def _seconds(text: str) -> float:
    """A command-line duration: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text!r}")
    return value


def _warn(message: str) -> None:
    print(f"runyard: warning: {message}", file=sys.stderr)


def _fmt_time(value: Any) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _table(rows: list[list[str]], out: Any) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


# ------------------------------------------------------------------------------ commands
def cmd_list(args: argparse.Namespace) -> int:
    from runyard.errors import DamagedStoreError
    from runyard.states import experiment_state
    from runyard.store import open_store

    store = open_store(args.home)
    rows: list[dict[str, Any]] = []
    for exp_id, title in store.experiment_titles(args.title, args.limit):
        try:
            created = store.experiment(exp_id).created_at
            states = store.task_states(exp_id)
        except DamagedStoreError as exc:
            if exc.experiment_id != exp_id:
                raise  # the whole store
            _warn(str(exc))  # listed, marked: the others are still worth listing
            rows.append({"id": exp_id, "title": title, "status": "DAMAGED", "tasks": None, "created": None,
                         "error": str(exc)})  # fmt: skip
            continue
        rows.append({"id": exp_id, "title": title, "status": str(experiment_state(states)), "tasks": len(states),
                     "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        _table([["ID", "TITLE", "STATUS", "TASKS", "CREATED"]]
               + [[r["id"], r["title"], r["status"], "-" if r["tasks"] is None else str(r["tasks"]),
                   r["created"] or "-"] for r in rows], sys.stdout)  # fmt: skip
    else:
        print(f"no experiments in {store.home}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    tasks = exp.tasks
    if args.json:
        print(json.dumps({
            "id": exp.experiment_id, "status": str(exp.status()), "driver_alive": exp.driver_alive(),
            "tasks": [{"id": t.id, "status": str(t.status), "job_id": t.job_id, "attempts": t.attempts,
                       "exit_code": t.exit_code, "reason": t.reason, "failure": t.failure,
                       "start_time": t.start_time.isoformat() if t.start_time else None,
                       "end_time": t.end_time.isoformat() if t.end_time else None,
                       "dependencies": t.dependencies} for t in tasks],
        }, indent=2))  # fmt: skip
        return 0
    state = exp.status()
    orphaned = (
        not state.is_final and exp.store.experiment(exp.experiment_id).launched_at and not exp.driver_alive()
    )
    print(
        f"{exp.experiment_id}: {state}"
        + (f"  (no live driver: `runyard takeover {exp.experiment_id}`)" if orphaned else "")
    )
    rows = [["TASK", "STATUS", "ATTEMPTS", "EXIT", "FAILURE", "JOB", "STARTED", "ENDED", "REASON"]]
    for t in tasks:
        rows.append([t.id, str(t.status), str(t.attempts), "" if t.exit_code is None else str(t.exit_code),
                     t.failure or "", t.job_id or "", _fmt_time(t.start_time), _fmt_time(t.end_time),
                     t.reason or ""])  # fmt: skip
    _table(rows, sys.stdout)
    return 0


def cmd_attempts(args: argparse.Namespace) -> int:
    attempts = _experiment(args).attempts(args.task)
    if args.json:
        iso = lambda t: t.isoformat() if t else None  # noqa: E731
        print(json.dumps([{"attempt": a.attempt, "status": str(a.status), "job_id": a.job_id,
                           "start_time": iso(a.start_time), "end_time": iso(a.end_time),
                           "exit_code": a.exit_code, "reason": a.reason, "failure": a.failure}
                          for a in attempts], indent=2))  # fmt: skip
        return 0
    if not attempts:
        print(f"task {args.task} has not run yet")
        return 0
    rows = [["ATTEMPT", "STATUS", "EXIT", "FAILURE", "JOB", "STARTED", "ENDED", "REASON"]]
    for a in attempts:
        rows.append([str(a.attempt), str(a.status), "" if a.exit_code is None else str(a.exit_code),
                     a.failure or "", a.job_id or "", _fmt_time(a.start_time), _fmt_time(a.end_time),
                     a.reason or ""])  # fmt: skip
    _table(rows, sys.stdout)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    if args.follow:
        for entry in exp.stream_logs(args.task, follow=True, attempt=args.attempt):
            out = sys.stderr if entry.stream == "stderr" else sys.stdout
            out.write(
                (f"{entry.timestamp.astimezone():%H:%M:%S} " if args.timestamps else "")
                + entry.message
                + "\n"
            )
            out.flush()
        return 0
    logs = exp.get_logs(args.task, attempt=args.attempt)
    if args.stream in ("stdout", "both"):
        sys.stdout.write(logs.stdout)
    if args.stream in ("stderr", "both"):
        sys.stderr.write(logs.stderr)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    if args.all:
        done = exp.cancel_all()
        print(f"cancelled {len(done)} task(s)" + (f": {', '.join(done)}" if done else ""))
    elif args.task:
        exp.cancel(args.task)
        print(f"cancelled {args.task}")
    else:
        raise RunyardError("name a task to cancel, or --all")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    again = exp.retry(args.task)
    print(f"retrying {', '.join(again)}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    _experiment(args).pause(args.task)
    print(f"paused {args.task}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    _experiment(args).resume(args.task)
    print(f"resumed {args.task}")
    return 0


def cmd_metadata(args: argparse.Namespace) -> int:
    meta = _experiment(args).get_metadata()
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        for key, value in meta.items():
            print(f"{key}: {json.dumps(value)}")
    return 0


def cmd_artifacts(args: argparse.Namespace) -> int:
    artifacts = _experiment(args).get_artifacts()
    if args.json:
        print(json.dumps({n: {"path": a.path, "description": a.description, "size": a.size,
                              "sha256": a.sha256, "created_at": a.created_at.isoformat(),
                              "store": a.store} for n, a in artifacts.items()}, indent=2))  # fmt: skip
        return 0
    rows = [["NAME", "SIZE", "SHA256", "PATH", "DESCRIPTION"]]
    for name, a in artifacts.items():
        rows.append([name, str(a.size), a.sha256[:12], a.path, a.description or ""])
    if len(rows) > 1:
        _table(rows, sys.stdout)
    else:
        print("no artifacts")
    return 0


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def cmd_metrics(args: argparse.Namespace) -> int:
    from runyard.metrics import best_tasks, lower_is_better, summarize

    exp = _experiment(args)
    every = {args.task: exp.get_metrics(args.task)} if args.task else exp.get_all_metrics()
    summaries = {task_id: summarize(points) for task_id, points in every.items()}
    names = sorted({name for metrics in summaries.values() for name in metrics})
    best = best_tasks(summaries) if len(summaries) > 1 else {}
    if args.json:
        out: dict[str, Any] = {
            "experiment": exp.experiment_id,
            "better": {name: "lower" if lower_is_better(name) else "higher" for name in names},
            "best": best,
            "tasks": {t: {n: s.to_json() for n, s in metrics.items()} for t, metrics in summaries.items()},
        }
        if args.task:
            out["points"] = [p.to_json() for p in every[args.task]]
        print(json.dumps(out, indent=2))
        return 0
    if not names:
        print("no metrics: none logged with runyard.job.log_metrics, no output line matched metric_patterns")
        return 0
    if args.task:
        rows = [["METRIC", "LAST", "MIN", "MAX", "STEPS", "LAST STEP"]]
        for name, m in sorted(summaries[args.task].items()):
            step = "" if m.last_step is None else str(m.last_step)
            rows.append([name, _number(m.last), _number(m.min), _number(m.max), str(m.steps), step])
        _table(rows, sys.stdout)
        return 0
    rows = [["TASK", *names]]
    for task_id, metrics in summaries.items():
        cells = [task_id]
        for name in names:
            got = metrics.get(name)
            mark = "*" if best.get(name) == task_id else ""
            span = "" if got is None else f" ({_number(got.min)}..{_number(got.max)}, {got.steps})"
            cells.append("-" if got is None else f"{_number(got.last)}{mark}{span}")
        rows.append(cells)
    _table(rows, sys.stdout)
    if best:
        lower = ", ".join(n for n in names if lower_is_better(n))
        better = f"lower is better for {lower}, higher for the others" if lower else "higher is better"
        print(f"each cell: last value (min..max, steps); * the best last value ({better})")
    return 0


def _event_line(event: Any, width: int) -> str:
    when = event.timestamp.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    who = "(experiment)" if event.task_id is None else f"{event.task_id} #{event.attempt or '-'}"
    change = f"{event.from_state or '-'} -> {event.to_state or '-'}"
    return f"{when}  {who:<{width}}  {change:<22}  {event.reason or ''}".rstrip()


def cmd_events(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    width = max([len("(experiment)")] + [len(t.id) + 4 for t in exp.tasks])
    events = exp.events()
    if args.json and not args.follow:
        print(json.dumps([e.to_json() for e in events], indent=2))
        return 0

    def show(batch: list[Any]) -> None:
        for e in batch:
            print(json.dumps(e.to_json()) if args.json else _event_line(e, width), flush=True)

    show(events)
    seq = events[-1].seq if events else 0
    while args.follow and not _ended(exp):
        time.sleep(args.interval)
        batch = exp.events(since=seq)
        show(batch)
        seq = batch[-1].seq if batch else seq
    if args.follow:
        show(exp.events(since=seq))  # what came with the end
    return 0


def _ended(exp: Any) -> bool:
    """Whether the experiment has ended: every task has, and its end is recorded (or nothing
    drives it any more, to record it)."""
    if not exp.status().is_final:
        return False
    return exp.store.experiment(exp.experiment_id).ended_at is not None or not exp.driver_alive()


def cmd_snapshot(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    try:
        path = exp.create_snapshot().save(args.output)  # refuses devices, pipes, folders
    except OSError as exc:
        raise RunyardError(f"cannot write the snapshot to {args.output!r}: {exc}") from None
    print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    try:
        path = exp.report(args.output)  # refuses devices, pipes, folders
    except OSError as exc:
        where = args.output or "the experiment's folder"
        raise RunyardError(f"cannot write the report to {where!r}: {exc.strerror or exc}") from None
    print(path)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from runyard.experiment import ExperimentSnapshot

    exp = ExperimentSnapshot.load(args.snapshot).reproduce(base_dir=args.home)
    print(exp.experiment_id)
    if args.run or args.detach:
        state = exp.run(detach=args.detach)
        if not args.detach:
            return 0 if state == "SUCCEEDED" else 1
    return 0


def cmd_takeover(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    if all(t.status.is_final for t in exp.tasks):
        print(f"{exp.experiment_id}: every task has ended ({exp.status()}); nothing to take over")
        return 0
    state = exp.takeover(detach=not args.attach)
    if args.attach:
        return 0 if state == "SUCCEEDED" else 1
    print(f"{exp.experiment_id}: a new supervisor drives it ({state})")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    state = exp.wait(timeout=args.timeout)
    print(f"{exp.experiment_id}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def cmd_plugins(args: argparse.Namespace) -> int:
    from runyard.plugins import plugin_manager

    infos = plugin_manager().describe()
    if args.json:
        print(json.dumps([{"name": p.name, "distribution": p.distribution, "version": p.version,
                           "hooks": p.hooks, "exports": p.exports, "error": p.error} for p in infos], indent=2))  # fmt: skip
        return 0
    for p in infos:
        head = f"{p.name} ({p.distribution or '?'} {p.version or '?'})"
        if p.error:
            print(f"{head}  FAILED TO LOAD: {p.error}")
            continue
        print(head)
        if p.hooks:
            print(f"  hooks:   {', '.join(p.hooks)}")
        if p.exports:
            print(f"  exports: {', '.join(p.exports)}")
    return 0


# ------------------------------------------------------------------------------ parser
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runyard", description="Manage runyard experiments.")
    p.add_argument("--home", help="runyard home (default: $RUNYARD_HOME or ~/.runyard)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Any, help: str, *, exp: bool = True, task: bool | str = False
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        if exp:
            sp.add_argument("experiment", help="experiment id (or title: the newest with it)")
        if task is True:
            sp.add_argument("task", help="task id")
        elif task == "optional":
            sp.add_argument("task", nargs="?", help="task id")
        sp.set_defaults(func=func)
        return sp

    sp = add("list", cmd_list, "list experiments, newest first", exp=False)
    sp.add_argument("--title", help="only experiments with this title")
    sp.add_argument("--limit", type=_count, default=None, help="at most this many")
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp = add("status", cmd_status, "show an experiment's tasks and states")
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp = add("attempts", cmd_attempts, "list a task's attempts: status, exit code, failure, times", task=True)
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp = add("logs", cmd_logs, "print a task's output (latest attempt, or --attempt N)", task=True)
    sp.add_argument(
        "--attempt", type=_count, default=None, help="this attempt (1, 2, ...; default: the latest)"
    )
    sp.add_argument("-f", "--follow", action="store_true", help="follow the task until it ends")
    sp.add_argument(
        "-t", "--timestamps", action="store_true", help="with --follow: prefix each line with its time"
    )
    sp.add_argument("--stream", choices=["stdout", "stderr", "both"], default="both")
    sp = add("cancel", cmd_cancel, "cancel a task, or all with --all", task="optional")
    sp.add_argument("--all", action="store_true", help="cancel every task that has not ended")
    add("retry", cmd_retry, "run an ended task again, with what depends on it", task=True)
    add("pause", cmd_pause, "suspend a running task or hold a pending one", task=True)
    add("resume", cmd_resume, "continue a paused task", task=True)
    sp = add("metadata", cmd_metadata, "show an experiment's metadata")
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp = add("artifacts", cmd_artifacts, "show an experiment's artifacts")
    sp.add_argument("--json", action="store_true", help="JSON output")
    about = "show the metrics of an experiment's tasks: last, min, max, steps"
    sp = add("metrics", cmd_metrics, about, task="optional")
    sp.add_argument("--json", action="store_true", help="JSON output (with TASK: every point too)")
    sp = add("events", cmd_events, "list every state change of an experiment and its tasks, oldest first")
    sp.add_argument("--json", action="store_true", help="JSON output (with --follow: one object a line)")
    sp.add_argument("-f", "--follow", action="store_true", help="print new events until the experiment ends")
    sp.add_argument("--interval", type=_seconds, default=0.5, help="with --follow: seconds between looks")
    sp = add("snapshot", cmd_snapshot, "save a snapshot of an experiment as JSON")
    sp.add_argument("-o", "--output", required=True, help="file to write")
    sp = add("report", cmd_report, "write an experiment's one-file HTML report; prints its path")
    sp.add_argument("-o", "--output", help="file to write (default: report.html in the experiment's folder)")
    sp = add("reproduce", cmd_reproduce, "create a new experiment from a snapshot file", exp=False)
    sp.add_argument("snapshot", help="snapshot JSON file")
    sp.add_argument("--run", action="store_true", help="also run it, attached")
    sp.add_argument("--detach", action="store_true", help="also run it, detached")
    sp = add("takeover", cmd_takeover, "drive a detached experiment whose supervisor died")
    sp.add_argument(
        "--attach", action="store_true", help="drive it from this process instead of a new supervisor"
    )
    sp = add("wait", cmd_wait, "wait until every task has ended; exit 0 if all succeeded")
    sp.add_argument("--timeout", type=_seconds, default=None, help="give up after this many seconds")
    sp = add("plugins", cmd_plugins, "list installed plugins, their hooks and exports", exp=False)
    sp.add_argument("--json", action="store_true", help="JSON output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    shown: set[str] = set()  # a warning once, however many calls gave it

    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        if str(message) not in shown:
            shown.add(str(message))
            _warn(str(message))

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return int(args.func(args))
        except RunyardError as exc:
            print(f"runyard: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("runyard: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return 0
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                print(f"runyard: error: disk full: {exc}; free some space on that disk", file=sys.stderr)
            else:
                print(f"runyard: error: {exc}", file=sys.stderr)
            return 1
