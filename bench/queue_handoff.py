"""Queue handoff: 10 queued ``seqbox run -- <job>`` started 50 ms apart, each job
sleeping 0.2 s. Prints the median gap from one job's end to the next one's start,
whether the jobs ran in the order they were started (FIFO), and whether two ever
overlapped. The same jobs under ``flock(1)`` give the baseline.

Each job records its own start and end with ``date +%s%N``, so a gap includes a
few ms of the job's own shell and ``date`` start-up, for seqbox and flock alike.

Target (issue 3): median gap <= 5 ms, FIFO, never two at once.

    python bench/queue_handoff.py [--jobs 10] [--stagger 0.05] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = 'echo "start $0 $(date +%s%N)" >> "$1"; sleep {sleep}; echo "end $0 $(date +%s%N)" >> "$1"'


def seqbox_command() -> list[str]:
    script = Path(sys.executable).parent / "seqbox"
    return [str(script)] if script.exists() else [sys.executable, "-m", "seqbox"]


NUMBER_RE = re.compile(r"as number (\d+)")


def run_batch(
    prefix: list[str], jobs: int, stagger: float, sleep: float, env: dict[str, str]
) -> tuple[list[tuple[int, int, int]], dict[int, int]]:
    """Start ``jobs`` queued jobs; return (job index, start ns, end ns) in start
    order, and each job's ticket number (seqbox -v says it) by job index."""
    tickets: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="seqbox-bench-") as tmp:
        record = os.path.join(tmp, "record")
        procs = []
        for i in range(jobs):
            argv = [*prefix, "sh", "-c", JOB.format(sleep=sleep), str(i), record]
            procs.append(subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True))
            time.sleep(stagger)
        for i, proc in enumerate(procs):
            _, err = proc.communicate(timeout=120)
            match = NUMBER_RE.search(err or "")
            if match:
                tickets[i] = int(match.group(1))
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        with open(record, encoding="ascii") as f:
            for line in f:
                kind, job, ns = line.split()
                (starts if kind == "start" else ends)[int(job)] = int(ns)
    rows = sorted(((job, starts[job], ends[job]) for job in starts), key=lambda row: row[1])
    return rows, tickets


def analyse(batch: tuple[list[tuple[int, int, int]], dict[int, int]]) -> dict[str, object]:
    rows, tickets = batch
    gaps = [(b[1] - a[2]) / 1e6 for a, b in itertools.pairwise(rows)]
    order = [job for job, _, _ in rows]
    by_ticket = [tickets.get(job, 0) for job in order]
    return {
        "jobs": len(rows),
        "median_gap_ms": round(statistics.median(gaps), 2) if gaps else None,
        "max_gap_ms": round(max(gaps), 2) if gaps else None,
        "fifo": order == sorted(order),
        "ticket_order": by_ticket == sorted(by_ticket) if tickets else None,
        "order": order,
        "overlaps": sum(1 for g in gaps if g < 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--stagger", type=float, default=0.05)
    parser.add_argument("--sleep", type=float, default=0.2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="seqbox-bench-state-") as state:
        env.update(SEQBOX_STATE_DIR=state, SEQBOX_PROJECT=state)
        seqbox = analyse(
            run_batch([*seqbox_command(), "run", "-v", "--"], args.jobs, args.stagger, args.sleep, env)
        )
        leftover = sorted(str(p.relative_to(state)) for p in Path(state).rglob("*"))
    with tempfile.TemporaryDirectory(prefix="seqbox-bench-flock-") as tmp:
        baseline = analyse(
            run_batch(["flock", os.path.join(tmp, "lock")], args.jobs, args.stagger, args.sleep, env)
        )

    ok = (
        seqbox["median_gap_ms"] is not None
        and seqbox["median_gap_ms"] <= 5.0  # type: ignore[operator]
        and seqbox["fifo"]
        and seqbox["overlaps"] == 0
    )
    print(f"queue handoff: {args.jobs} jobs, {args.stagger * 1000:.0f} ms apart, each {args.sleep}s")
    print(
        f"  seqbox  median gap {seqbox['median_gap_ms']} ms (max {seqbox['max_gap_ms']}), "
        f"FIFO {seqbox['fifo']} (by ticket: {seqbox['ticket_order']}), overlaps {seqbox['overlaps']}, "
        f"order {seqbox['order']}"
    )
    print(
        f"  flock   median gap {baseline['median_gap_ms']} ms (max {baseline['max_gap_ms']}), "
        f"FIFO {baseline['fifo']}, overlaps {baseline['overlaps']}"
    )
    print(f"  state dir afterwards: {leftover or 'empty'}")
    print(f"{'PASS' if ok else 'FAIL'}: median handoff <= 5 ms, FIFO, never two at once")
    if args.json:
        print(json.dumps({"seqbox": seqbox, "flock": baseline, "state_left": leftover, "pass": ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
