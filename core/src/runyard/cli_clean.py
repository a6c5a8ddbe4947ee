"""``runyard delete`` and ``runyard gc``: remove experiments, their rows in the store and
their folders (cli.py; docs/cli.md)."""

from __future__ import annotations

import argparse
import shutil
import time
from typing import Any

from runyard.cli_util import age, confirm, find_experiment, require_home
from runyard.errors import DamagedStoreError, RunyardError

STOP_WAIT = 30.0  # seconds --force waits for the driver of a cancelled experiment to exit

# every row of an experiment, in every table that holds some (the experiment's own row last)
_DELETES = (
    "DELETE FROM unit_leases WHERE experiment_id = ?",
    "DELETE FROM attempts WHERE experiment_id = ?",
    "DELETE FROM tasks WHERE experiment_id = ?",
    "DELETE FROM events WHERE experiment_id = ?",
    "DELETE FROM metadata WHERE experiment_id = ?",
    "DELETE FROM artifacts WHERE experiment_id = ?",
    "DELETE FROM config_versions WHERE experiment_id = ?",
    "DELETE FROM experiments WHERE id = ?",
)


def _live(store: Any, record: Any) -> bool:
    """Launched and not ended: a task that has not ended, or a live process driving it."""
    from runyard.scheduler import is_driven

    if record.launched_at is None:
        return False
    return is_driven(record) or not all(s.is_final for s in store.task_states(record.id))


def remove(store: Any, experiment_id: str) -> None:
    """The experiment's rows (one transaction: all or none), then its folder."""
    with store.write() as db:
        for sql in _DELETES:
            db.execute(sql, (experiment_id,))
    folder = store.experiment_dir(experiment_id)
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RunyardError(
            f"deleted {experiment_id} from the store, but could not remove its folder {folder}: "
            f"{exc.strerror or exc}; remove it by hand"
        ) from None


def cmd_delete(args: argparse.Namespace) -> int:
    from runyard.scheduler import is_driven

    exp = find_experiment(args.experiment, args.home, acting=not args.force)
    store, exp_id = exp.store, exp.id
    record = store.experiment(exp_id)
    live = _live(store, record)
    if live and not args.force:
        raise RunyardError(
            f"experiment {exp_id} has not ended ({exp.status()}): cancel it first"
            f" (`runyard cancel {exp_id} --all`), or delete it with --force, which cancels it"
        )
    count = store.task_count(exp_id)
    doing = "cancel and delete" if live else "delete"
    confirm(
        f"{doing} experiment {exp_id} ({exp.status()}, {count} task{'s' if count != 1 else ''}) and its"
        f" folder {store.experiment_dir(exp_id)}?",
        yes=args.yes,
        doing=f"runyard delete {exp_id}",
    )
    if live:
        exp.cancel_all()
        deadline = time.monotonic() + STOP_WAIT
        while is_driven(store.experiment(exp_id)):
            if time.monotonic() > deadline:
                raise RunyardError(
                    f"cancelled the tasks of {exp_id}, but its driver (pid {store.experiment(exp_id).driver_pid})"
                    f" has not exited after {STOP_WAIT:g}s: nothing deleted; try again"
                )
            time.sleep(0.1)
    remove(store, exp_id)
    print(f"deleted {exp_id}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from runyard.store import open_store
    from runyard.views import CREATED, experiment_status

    home = require_home(args.home)
    store = open_store(home)
    now = time.time()
    old: list[tuple[str, str]] = []  # (id, state)
    for exp_id, _ in store.experiment_titles():
        try:
            record = store.experiment(exp_id)
            states = store.task_states(exp_id)
        except DamagedStoreError:
            continue  # (`runyard list` names what is wrong with it)
        state = experiment_status(record.launched_at is not None, states)
        if state == CREATED or _live(store, record):
            continue
        ended = record.ended_at or record.launched_at or record.created_at
        if now - ended > args.older_than:
            old.append((exp_id, state))
    if not old:
        print(f"nothing to delete: no experiment in {home} ended more than {age(args.older_than)} ago")
        return 0
    listing = "".join(f"\n  {exp_id}  {state}" for exp_id, state in old)
    confirm(
        f"delete these {len(old)} experiment(s), ended more than {age(args.older_than)} ago, and their"
        f" folders?{listing}\n",
        yes=args.yes,
        doing="runyard gc",
    )
    for exp_id, _ in old:
        remove(store, exp_id)
        print(f"deleted {exp_id}")
    return 0
