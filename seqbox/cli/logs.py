"""``seqbox logs [RUN] [--follow]``: recent runs, one run, or the current one live."""

from __future__ import annotations

import json
import os
import sys
import time

from rich.console import Console

from seqbox import history
from seqbox.backends import procinfo
from seqbox.project import project_root
from seqbox.render import command_started, event_line, lock_wait, plain, run_dir, runs_table

FOLLOW_POLL_S = 0.25


def logs_main(ref: str | None, follow: bool, limit: int, as_json: bool) -> int:
    log_dir = history.log_directory(os.getcwd(), os.environ)
    if follow:
        return _follow(log_dir, ref)
    if ref is not None:
        return _show(history.load(history.find(log_dir, ref)), as_json)
    records = list(history.recent(log_dir, limit))
    root = project_root(os.getcwd())
    if as_json:
        for record in records:
            sys.stdout.write(json.dumps(_row(record, root)) + "\n")
        return 0
    if not records:
        sys.stdout.write(f"no runs logged in {log_dir} yet (each 'seqbox run' adds one)\n")
        return 0

    console = Console(highlight=False, markup=False)
    if console.is_terminal:
        console.print(runs_table(records, root))
    else:  # a pipe or a file: every command whole (`seqbox logs | grep` finds it)
        sys.stdout.write(plain(runs_table(records, root, fit=False)))
    return 0


def _row(record: history.RunRecord, root: str) -> dict[str, object]:
    """One run in `logs --json`: the summary's names where the summary has the field."""
    return {
        "run_id": record.run_id,
        "invoked": record.started_at,  # when seqbox started
        "started": command_started(record),  # when the command started (after the lock)
        "lock_wait_s": lock_wait(record),
        "cwd": run_dir(record, root),
        "command": record.command,
        "status": record.status,
        "exit_code": record.exit_code,
        "peak_mem_bytes": record.peak_mem,
        "mem_limit_bytes": record.mem_limit,
        "wall_s": record.duration,
        "log": record.path,
    }


def _show(record: history.RunRecord, as_json: bool) -> int:
    if as_json:
        for event in record.events:
            sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        return 0

    sys.stdout.write(f"{record.path}\n")
    for event in record.events:
        sys.stdout.write(event_line(event) + "\n")
    if record.status in ("running", "crashed"):
        sys.stdout.write(f"({record.status}: no exit event yet)\n")
    return 0


def _follow(log_dir: str, ref: str | None) -> int:
    """Print the run's events as they are written, until it ends."""
    path = history.find(log_dir, ref) if ref is not None else history.current(log_dir)
    if path is None:
        newest = history.log_paths(log_dir)[:1]
        sys.stderr.write("seqbox: nothing is running now; waiting for the next run (Ctrl-C to stop)\n")
        while path is None:
            time.sleep(FOLLOW_POLL_S)
            paths = history.log_paths(log_dir)[:1]
            if paths and paths != newest:
                path = paths[0]
    sys.stdout.write(f"{path}\n")
    sys.stdout.flush()
    offset, pending = 0, b""
    pid: int | None = None  # the run's seqbox, from its start event
    while True:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
        offset += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        ended = False
        for event in history.parse(b"\n".join(lines).decode("utf-8", "replace")):
            sys.stdout.write(event_line(event) + "\n")
            ended = ended or event["event"] in ("exit", "error")
            if event["event"] == "start":
                pid = event.get("pid")
        sys.stdout.flush()
        if ended:
            return 0
        if not chunk and (pid is None or not procinfo.is_alive(pid, None)):
            sys.stdout.write("(the run's seqbox is gone without an exit event)\n")
            return 1
        time.sleep(FOLLOW_POLL_S)
