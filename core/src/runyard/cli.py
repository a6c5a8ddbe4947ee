"""The ``runyard`` command (also ``python -m runyard``). See docs/cli.md.

Errors print one line, ``runyard: error: ...``, with no traceback, and exit with code 1
(2 for a wrong command line, with a "did you mean" for a near miss); warnings one line each,
``runyard: warning: ...``. Global options (``--home``) go before or after the command. The
commands live here; what they share is in ``cli_util``, and ``cli_logs``, ``cli_clean`` and
``cli_completion`` hold the bigger ones.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from runyard.cli_completion import SHELLS
from runyard.cli_logs import regex
from runyard.cli_util import duration, find_experiment, fit_width, iso, local_time, require_home, since, table
from runyard.errors import RunyardError

# the experiment states `list --status` filters by (DAMAGED: a row runyard cannot read)
LIST_STATES = ("CREATED", "PENDING", "SUBMITTED", "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "DAMAGED")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("runyard")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


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


def _key_json(text: str) -> tuple[str, Any]:
    """``KEY=JSON`` on the command line: a metadata key and its value."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=JSON, such as lr=0.1 or owner='\"me\"'; got {text!r}")
    try:
        return key, json.loads(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"the value of {key} is not JSON ({getattr(exc, 'msg', exc)}): {raw!r}; a string needs its"
            f" quotes, as in {key}='\"{raw}\"'"
        ) from None


def _warn(message: str) -> None:
    print(f"runyard: warning: {message}", file=sys.stderr)


def _usage_error(args: argparse.Namespace, message: str) -> NoReturn:
    parser: argparse.ArgumentParser = args.command_parser
    parser.error(message)


# ------------------------------------------------------------------------------ commands
def cmd_list(args: argparse.Namespace) -> int:
    from runyard.errors import DamagedStoreError
    from runyard.store import open_store
    from runyard.views import experiment_status

    if args.quiet and args.json:
        _usage_error(args, "-q/--quiet prints ids, --json every field: give one of them")
    store = open_store(require_home(args.home))
    filtered = bool(args.status or args.tag)
    wanted = set(args.status or ())
    rows: list[dict[str, Any]] = []
    created: dict[str, float] = {}
    for exp_id, title in store.experiment_titles(args.title, None if filtered else args.limit):
        if filtered and args.limit is not None and len(rows) >= args.limit:
            break
        try:
            record = store.experiment(exp_id)
            states = store.task_states(exp_id)
        except DamagedStoreError as exc:
            if exc.experiment_id != exp_id:
                raise  # the whole store
            if filtered and ("DAMAGED" not in wanted or args.tag):
                continue
            _warn(str(exc))  # listed, marked: the others are still worth listing
            rows.append({"id": exp_id, "title": title, "status": "DAMAGED", "tasks": None, "created": None,
                         "launched": None, "ended": None, "tags": None, "error": str(exc)})  # fmt: skip
            continue
        state = experiment_status(record.launched_at is not None, states)
        if (wanted and state not in wanted) or not set(args.tag or ()) <= set(record.tags):
            continue
        created[exp_id] = record.created_at
        rows.append({"id": exp_id, "title": title, "status": state, "tasks": len(states),
                     "created": iso(record.created_at), "launched": iso(record.launched_at),
                     "ended": iso(record.ended_at), "tags": list(record.tags)})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.quiet:
        for r in rows:
            print(r["id"])
    elif rows:
        # on a terminal, no TITLE beside ids that end with it; piped, every column (for scripts)
        titled = fit_width(sys.stdout) is None or any(not r["id"].endswith("_" + r["title"]) for r in rows)
        tagged = any(r["tags"] for r in rows)
        head = [
            "ID",
            *(["TITLE"] if titled else []),
            "STATUS",
            "TASKS",
            "CREATED",
            *(["TAGS"] if tagged else []),
        ]
        lines = [head]
        for r in rows:
            tasks = "-" if r["tasks"] is None else str(r["tasks"])
            when = local_time(created.get(r["id"]))
            tags = [", ".join(r["tags"] or [])] if tagged else []
            lines.append([r["id"], *([r["title"]] if titled else []), r["status"], tasks, when, *tags])
        status = 2 if titled else 1
        table(lines, sys.stdout, keep={0, status}, first={status - 1, len(head) - 1} - {0, status})
    elif filtered or args.title:
        print(f"no experiments in {store.home} match")
    else:
        print(f"no experiments in {store.home}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from runyard.views import CREATED, experiment_status

    exp = find_experiment(args.experiment, args.home)
    tasks = exp.tasks
    record = exp.store.experiment(exp.experiment_id)
    state = experiment_status(record.launched_at is not None, [t.status for t in tasks])
    if args.json:
        print(json.dumps({
            "id": exp.experiment_id, "title": exp.title, "status": state, "driver_alive": exp.driver_alive(),
            "created": iso(record.created_at), "launched": iso(record.launched_at), "ended": iso(record.ended_at),
            "tasks": [{"id": t.id, "status": str(t.status), "job_id": t.job_id, "attempts": t.attempts,
                       "exit_code": t.exit_code, "reason": t.reason, "failure": t.failure,
                       "start_time": iso(t.start_time), "end_time": iso(t.end_time),
                       "dependencies": t.dependencies} for t in tasks],
        }, indent=2))  # fmt: skip
        return 0
    ended = all(t.status.is_final for t in tasks)
    orphaned = not ended and record.launched_at and not exp.driver_alive()
    note = ""
    if orphaned:
        note = f"  (no live driver: `runyard takeover {exp.experiment_id}`)"
    elif state == CREATED:
        note = "  (never launched)"
    print(f"{exp.experiment_id}: {state}{note}")
    rows = [["TASK", "STATUS", "ATTEMPTS", "EXIT", "FAILURE", "JOB", "STARTED", "ENDED", "REASON"]]
    for t in tasks:
        rows.append([t.id, str(t.status), str(t.attempts), "" if t.exit_code is None else str(t.exit_code),
                     t.failure or "", t.job_id or "", local_time(t.start_time), local_time(t.end_time),
                     t.reason or ""])  # fmt: skip
    table(rows, sys.stdout, keep={0, 1}, first={8})
    return 0


def cmd_attempts(args: argparse.Namespace) -> int:
    attempts = find_experiment(args.experiment, args.home).attempts(args.task)
    if args.json:
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
                     a.failure or "", a.job_id or "", local_time(a.start_time), local_time(a.end_time),
                     a.reason or ""])  # fmt: skip
    table(rows, sys.stdout, keep={0, 1}, first={7})
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from runyard import cli_logs

    cli_logs.check(args, args.command_parser)
    return cli_logs.cmd_logs(args)


def cmd_cancel(args: argparse.Namespace) -> int:
    if args.all and args.task:
        _usage_error(args, "give a TASK or --all, not both")
    if not args.all and not args.task:
        _usage_error(args, "name a TASK to cancel, or --all for every task that has not ended")
    exp = find_experiment(args.experiment, args.home, acting=True)
    if args.all:
        done = exp.cancel_all()
        print(f"cancelled {len(done)} task(s)" + (f": {', '.join(done)}" if done else ""))
    else:
        exp.cancel(args.task)
        print(f"cancelled {args.task}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    exp = find_experiment(args.experiment, args.home, acting=True)
    again = exp.retry(args.task)
    print(f"retrying {', '.join(again)}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    find_experiment(args.experiment, args.home, acting=True).pause(args.task)
    print(f"paused {args.task}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    find_experiment(args.experiment, args.home, acting=True).resume(args.task)
    print(f"resumed {args.task}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from runyard import cli_clean

    return cli_clean.cmd_delete(args)


def cmd_gc(args: argparse.Namespace) -> int:
    from runyard import cli_clean

    return cli_clean.cmd_gc(args)


def cmd_metadata(args: argparse.Namespace) -> int:
    exp = find_experiment(args.experiment, args.home)
    if args.set:
        exp.add_metadata(dict(args.set))
    meta = exp.get_metadata()
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        for key, value in meta.items():
            print(f"{key}: {json.dumps(value)}")
    return 0


def cmd_artifacts(args: argparse.Namespace) -> int:
    if args.output is not None and args.fetch is None:
        _usage_error(args, "-o/--output says where --fetch puts the artifact: give --fetch NAME too")
    if args.fetch is not None and args.json:
        _usage_error(args, "--fetch prints the path it fetched to: not with --json")
    exp = find_experiment(args.experiment, args.home)
    if args.fetch is not None:
        print(exp.fetch_artifact(args.fetch, args.output))
        return 0
    artifacts = exp.get_artifacts()
    if args.json:
        print(json.dumps({n: {"path": a.path, "description": a.description, "size": a.size,
                              "sha256": a.sha256, "created_at": iso(a.created_at),
                              "store": a.store} for n, a in artifacts.items()}, indent=2))  # fmt: skip
        return 0
    rows = [["NAME", "SIZE", "SHA256", "PATH", "DESCRIPTION"]]
    for name, a in artifacts.items():
        rows.append([name, str(a.size), a.sha256[:12], a.path, a.description or ""])
    if len(rows) > 1:
        table(rows, sys.stdout, keep={0, 1, 2}, first={3, 4})
    else:
        print("no artifacts")
    return 0


def cmd_dry_run(args: argparse.Namespace) -> int:
    exp = find_experiment(args.experiment, args.home)
    if not exp.dry_run(file=sys.stdout):
        print(f"experiment {exp.experiment_id} has no tasks: nothing would be launched")
    return 0


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def cmd_metrics(args: argparse.Namespace) -> int:
    from runyard.metrics import best_tasks, lower_is_better, summarize

    exp = find_experiment(args.experiment, args.home)
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
        table(rows, sys.stdout)
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
    table(rows, sys.stdout)
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
    if args.interval is not None and not args.follow:
        _usage_error(args, "--interval is the time between two looks of --follow: give -f/--follow too")
    interval = 0.5 if args.interval is None else args.interval
    exp = find_experiment(args.experiment, args.home)
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
        time.sleep(interval)
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
    exp = find_experiment(args.experiment, args.home)
    try:
        path = exp.create_snapshot().save(args.output)  # refuses devices, pipes, folders
    except OSError as exc:
        raise RunyardError(f"cannot write the snapshot to {args.output!r}: {exc}") from None
    print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    exp = find_experiment(args.experiment, args.home)
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
    exp = find_experiment(args.experiment, args.home, acting=True)
    if all(t.status.is_final for t in exp.tasks):
        print(f"{exp.experiment_id}: every task has ended ({exp.status()}); nothing to take over")
        return 0
    state = exp.takeover(detach=not args.attach)
    if args.attach:
        return 0 if state == "SUCCEEDED" else 1
    print(f"{exp.experiment_id}: a new supervisor drives it ({state})")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    exp = find_experiment(args.experiment, args.home, acting=True)
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


def cmd_completion(args: argparse.Namespace) -> int:
    from runyard.cli_completion import script

    sys.stdout.write(script(parser(), args.shell))
    return 0


# ------------------------------------------------------------------------------ parser
class Parser(argparse.ArgumentParser):
    """argparse, with a "did you mean" for a mistyped command or choice."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        names = [str(c) for c in choices]
        close = difflib.get_close_matches(str(value), names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "choose from " + ", ".join(map(repr, names))
        raise argparse.ArgumentError(action, f"invalid choice: {value!r} ({hint})")


GLOBAL_HELP = "global option, before or after the command: --home HOME, the runyard home"


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="runyard",
        description="Manage runyard experiments. See docs/cli.md for every command.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=32),
        epilog="`runyard COMMAND -h` shows a command's arguments and options.",
    )
    p.add_argument(
        "--home", help="runyard home (default: $RUNYARD_HOME or ~/.runyard); also after the command"
    )
    p.add_argument("--version", action="version", version=f"runyard {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Any, help: str, *, exp: bool = True, task: bool | str = False
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, epilog=GLOBAL_HELP)
        if exp:
            sp.add_argument("experiment", help="experiment id (or title: the newest with it)")
        if task is True:
            sp.add_argument("task", help="task id")
        elif task == "optional":
            sp.add_argument("task", nargs="?", help="task id")
        sp.set_defaults(func=func, command_parser=sp)
        return sp

    sp = add("list", cmd_list, "list experiments, newest first", exp=False)
    sp.add_argument("--title", help="only experiments with this title")
    sp.add_argument(
        "--status", action="append", type=str.upper, choices=LIST_STATES, metavar="STATE",
        help=f"only experiments in this state: {', '.join(LIST_STATES)} (repeatable: any of them)",
    )  # fmt: skip
    sp.add_argument("--tag", action="append", help="only experiments with this tag (repeat: with every one)")
    sp.add_argument("--limit", type=_count, default=None, help="at most this many")
    sp.add_argument("-q", "--quiet", action="store_true", help="only the ids, one a line")
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp = add("status", cmd_status, "show an experiment's tasks and states")
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp = add("attempts", cmd_attempts, "list a task's attempts: status, exit code, failure, times", task=True)
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp = add("logs", cmd_logs, "print a task's output, or every task's with --all", task="optional")
    sp.add_argument("--all", action="store_true", help="every task's output, merged in time order")
    sp.add_argument(
        "--attempt", type=_count, default=None, help="this attempt (1, 2, ...; default: the latest)"
    )
    sp.add_argument("--tail", type=_count, default=None, metavar="N", help="only the last N lines")
    sp.add_argument(
        "--since", type=since, default=None, metavar="WHEN",
        help="only lines from then on: a duration ago (10m, 2h) or a time (15:30, 2026-11-27 15:30)",
    )  # fmt: skip
    sp.add_argument("--grep", type=regex, default=None, metavar="RE", help="only lines that match RE")
    sp.add_argument("-f", "--follow", action="store_true", help="follow the task until it ends")
    sp.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
    sp.add_argument(
        "--stream", choices=["stdout", "stderr", "both"], default="both", help="which output (default: both)"
    )
    sp = add("cancel", cmd_cancel, "cancel a task, or all with --all", task="optional")
    sp.add_argument("--all", action="store_true", help="cancel every task that has not ended")
    add("retry", cmd_retry, "run an ended task again, with what depends on it", task=True)
    add("pause", cmd_pause, "suspend a running task or hold a pending one", task=True)
    add("resume", cmd_resume, "continue a paused task", task=True)
    sp = add("delete", cmd_delete, "delete an experiment: its records and its folder")
    sp.add_argument("--force", action="store_true", help="also one that has not ended: cancel it first")
    sp.add_argument("-y", "--yes", action="store_true", help="do not ask for a confirmation")
    sp = add("gc", cmd_gc, "delete the experiments that ended more than a while ago", exp=False)
    sp.add_argument(
        "--older-than", type=duration, required=True, metavar="DURATION", help="ended this long ago: 30d, 12h"
    )
    sp.add_argument("-y", "--yes", action="store_true", help="do not ask for a confirmation")
    sp = add("metadata", cmd_metadata, "show an experiment's metadata, or add to it with --set")
    sp.add_argument(
        "--set", action="append", type=_key_json, metavar="KEY=JSON",
        help="set KEY to the JSON value (repeatable): lr=0.1, owner='\"me\"'",
    )  # fmt: skip
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp = add("artifacts", cmd_artifacts, "show an experiment's artifacts, or fetch one")
    sp.add_argument("--fetch", metavar="NAME", help="fetch this artifact and print its local path")
    sp.add_argument("-o", "--output", metavar="PATH", help="with --fetch: copy it here")
    sp.add_argument("--json", action="store_true", help="JSON output")
    add("dry-run", cmd_dry_run, "show what each task would launch, without launching anything")
    about = "show the metrics of an experiment's tasks: last, min, max, steps"
    sp = add("metrics", cmd_metrics, about, task="optional")
    sp.add_argument("--json", action="store_true", help="JSON output (with TASK: every point too)")
    sp = add("events", cmd_events, "list every state change of an experiment and its tasks, oldest first")
    sp.add_argument("--json", action="store_true", help="JSON output (with --follow: one object a line)")
    sp.add_argument("-f", "--follow", action="store_true", help="print new events until the experiment ends")
    sp.add_argument(
        "--interval", type=_seconds, default=None, help="with --follow: seconds between looks (default 0.5)"
    )
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
    sp = add("completion", cmd_completion, "print a shell completion script", exp=False)
    sp.add_argument("shell", choices=SHELLS, help="the shell: bash, zsh or fish")
    return p


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, with the global options taken from wherever they are."""
    p = parser()
    found = argparse.ArgumentParser(prog="runyard", add_help=False, allow_abbrev=False, exit_on_error=False)
    found.add_argument("--home")
    try:
        globals_, rest = found.parse_known_args(list(argv))
    except argparse.ArgumentError as exc:
        p.error(str(exc))
    args, extra = p.parse_known_args(rest)
    command = _subcommands(p)[args.command]
    last = [a for a in command._actions if not a.option_strings][-1:]
    if last and last[0].nargs == "?" and getattr(args, last[0].dest) is None:
        # an optional positional after an option (`logs EXP -f TASK`): argparse took it for absent
        words = [w for w in extra if not w.startswith("-")]
        if words:
            setattr(args, last[0].dest, words[0])
            extra.remove(words[0])
    if extra:
        options = [o for a in command._actions for o in a.option_strings] + ["--home"]
        hints = {}
        for word in extra:
            if word.startswith("-"):
                close = difflib.get_close_matches(word.split("=", 1)[0], options, n=1)
                if close:
                    hints[word] = f"did you mean {close[0]}?"
        said = "; ".join(h if len(hints) == 1 else f"{w}: {h}" for w, h in hints.items())
        command.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({said})" if said else ""))
    args.home = globals_.home
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
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
