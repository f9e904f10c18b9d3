"""``seqbox status``, ``seqbox kill``, ``seqbox clean``: thin wrappers."""

from __future__ import annotations

import json
import os
import sys

from seqbox.control import clean, kill
from seqbox.describe import describe_command, plural
from seqbox.output import Output
from seqbox.project import project_key, project_root
from seqbox.status import collect
from seqbox.units import format_duration, format_size


def _project() -> tuple[str, str]:
    root = project_root(os.getcwd())
    return project_key(root), root


def status_main(as_json: bool) -> int:
    key, root = _project()
    data = collect(key, root)
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return 0
    locks = data["locks"]
    width = 60 if sys.stdout.isatty() else None  # a pipe or a file gets every command whole
    for orphan in data["orphaned"]:
        first = orphan["commands"][0] if orphan["commands"] else "?"
        sys.stdout.write(
            f"orphaned  {_processes(orphan['processes'])} left running by a crashed run "
            f'({orphan["name"]}), first "{describe_command(first, width)}"; '
            "end them with 'seqbox clean'\n"
        )
    if not locks and not data["orphaned"]:
        sys.stdout.write(f"nothing running or waiting in {root}\n")
        return 0
    for lock in locks:
        budget = ""
        if lock["budget_bytes"] is not None:
            used = format_size(lock["reserved_bytes"])
            budget = f": budget {format_size(lock['budget_bytes'])}, {used} reserved"
        sys.stdout.write(f'lock "{lock["lock"]}" ({root}){budget}\n')
        for run in lock["running"]:
            mem = format_size(run["mem_bytes"]) if run["mem_bytes"] is not None else "?"
            elapsed = format_duration(run["elapsed_s"]) if run["elapsed_s"] is not None else "?"
            reserves = ""
            if run["reservation_bytes"] is not None:
                how = run.get("reservation_how")
                reserves = f", reserves {format_size(run['reservation_bytes'])}"
                reserves += f" ({'--mem' if how == 'mem' else how})" if how else ""
            if run.get("frozen"):
                reserves += ", frozen (budget)"
            where = f" in {run['cwd']}" if run["cwd"] else ""
            sys.stdout.write(
                f'  running  pid {run["pid"]} "{describe_command(run["command"], width)}"{where} '
                f"for {elapsed}, {mem}{reserves}, {_processes(run['procs'])}, {run['backend']}\n"
            )
        for waiter in lock["waiting"]:
            why = f" ({waiter['waiting_for']})" if waiter["waiting_for"] else ""
            where = f" in {waiter['cwd']}" if waiter["cwd"] else ""
            sys.stdout.write(
                f"  waiting  {waiter['position']}. pid {waiter['pid']} "
                f'"{describe_command(waiter["command"], width)}"{where} '
                f"for {format_duration(waiter['waiting_s'])}{why}\n"
            )
    return 0


def kill_main(lock: str | None, cancel_all: bool) -> int:
    key, root = _project()
    killed, cancelled = kill(key, lock, cancel_all)
    width = 60 if sys.stdout.isatty() else None
    for waiter in cancelled:
        sys.stdout.write(
            f'cancelled pid {waiter.get("pid")} "{describe_command(waiter.get("command"), width)}" '
            f'(waiting for lock "{waiter.get("lock")}")\n'
        )
    for holder in killed:
        sys.stdout.write(
            f'killed pid {holder.get("pid")} "{describe_command(holder.get("command"), width)}" '
            f'(lock "{holder.get("lock")}") and its whole tree\n'
        )
    if not killed and not cancelled:
        sys.stdout.write(f"nothing running in {root}\n")
        return 1
    return 0


def clean_main() -> int:
    done, failed = clean()
    for item in done:
        sys.stdout.write(item + "\n")
    out = Output()
    for item in failed:
        out.error(f"{item}; run 'seqbox clean' again as root, or once its processes have exited")
    if not done and not failed:
        sys.stdout.write("nothing to clean\n")
    return 1 if failed else 0


def _processes(count: object) -> str:
    return plural(count, "process") if isinstance(count, int) else "? processes"
