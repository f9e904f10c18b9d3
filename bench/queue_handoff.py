"""Queue handoff: 10 queued ``seqbox run -- <job>`` started 50 ms apart, each job
sleeping 0.2 s. Prints the median gap from one job's end to the next one's start,
whether the jobs ran in the order they were started (FIFO), and whether two ever
overlapped. The same jobs under ``flock(1)`` give the baseline.

Each job records its own start and end with ``date +%s%N``, so a gap includes a
few ms of the job's own shell and ``date`` start-up, for seqbox and flock alike.

``--rounds N`` repeats the batch N times, the variants in a shuffled order each
round, and takes the median over every gap of every round. ``--also LABEL=PATH``
times another seqbox (another checkout's console script, say the commit before
a change) in the same rounds, so that a machine whose speed drifts does not pass
for a change in the code: ``--also main=../main/.venv/bin/seqbox``.

Target (issue 3): median gap <= 5 ms, FIFO, never two at once.

    python bench/queue_handoff.py [--jobs 10] [--stagger 0.05] [--rounds 1]
                                  [--backend auto|cgroup2|cgroup1|poll] [--also LABEL=PATH ...] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import add_also, also_scripts, bench_env, seqbox_argv

JOB = 'echo "start $0 $(date +%s%N)" >> "$1"; sleep {sleep}; echo "end $0 $(date +%s%N)" >> "$1"'
TARGET_MS = 5.0


def run_batch(
    prefix: list[str], jobs: int, stagger: float, sleep: float, env: dict[str, str]
) -> list[tuple[int, int, int]]:
    """Start ``jobs`` queued jobs; return (job index, start ns, end ns) in start order."""
    with tempfile.TemporaryDirectory(prefix="seqbox-bench-") as tmp:
        record = os.path.join(tmp, "record")
        procs = []
        for i in range(jobs):
            argv = [*prefix, "sh", "-c", JOB.format(sleep=sleep), str(i), record]
            procs.append(subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL))
            time.sleep(stagger)
        for proc in procs:
            proc.wait(timeout=120)
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        with open(record, encoding="ascii") as f:
            for line in f:
                kind, job, ns = line.split()
                (starts if kind == "start" else ends)[int(job)] = int(ns)
    return sorted(((job, starts[job], ends[job]) for job in starts), key=lambda row: row[1])


class Variant:
    """One way to queue the jobs, and every gap it showed."""

    def __init__(self, label: str, prefix: list[str], state: str | None) -> None:
        self.label = label
        self.prefix = prefix
        self.state = state  # seqbox's state directory (None: flock)
        self.gaps: list[float] = []
        self.round_medians: list[float] = []
        self.fifo = True
        self.overlaps = 0
        self.jobs_seen = 0

    def batch(self, args: argparse.Namespace, env: dict[str, str]) -> None:
        rows = run_batch(self.prefix, args.jobs, args.stagger, args.sleep, env)
        gaps = [(b[1] - a[2]) / 1e6 for a, b in itertools.pairwise(rows)]
        order = [job for job, _, _ in rows]
        self.jobs_seen += len(rows)
        self.fifo = self.fifo and order == sorted(order)
        self.overlaps += sum(1 for g in gaps if g < 0)
        self.gaps += gaps
        if gaps:
            self.round_medians.append(statistics.median(gaps))

    def summary(self) -> dict[str, object]:
        return {
            "jobs": self.jobs_seen,
            "median_gap_ms": round(statistics.median(self.gaps), 2) if self.gaps else None,
            "max_gap_ms": round(max(self.gaps), 2) if self.gaps else None,
            "round_medians_ms": [round(m, 2) for m in self.round_medians],
            "fifo": self.fifo,
            "overlaps": self.overlaps,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--stagger", type=float, default=0.05)
    parser.add_argument("--sleep", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--backend", default="auto")
    add_also(parser, "time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    also = also_scripts(parser, args.also)

    env = bench_env()
    backend = [] if args.backend == "auto" else ["--backend", args.backend]
    with tempfile.TemporaryDirectory(prefix="seqbox-bench-state-") as scratch:
        variants = [
            Variant("seqbox", [*seqbox_argv()[0], "run", *backend, "--"], os.path.join(scratch, "seqbox"))
        ]
        for label, path in also.items():
            variants.append(Variant(label, [path, "run", *backend, "--"], os.path.join(scratch, label)))
        variants.append(Variant("flock", ["flock", os.path.join(scratch, "flock.lock")], None))
        for _ in range(args.rounds):
            for variant in random.sample(variants, len(variants)):
                batch_env = (
                    env
                    if variant.state is None
                    else {**env, "SEQBOX_STATE_DIR": variant.state, "SEQBOX_PROJECT": scratch}
                )
                variant.batch(args, batch_env)
        leftover = sorted(  # the queue's files (the run logs stay, as they should)
            str(p.relative_to(scratch))
            for v in variants
            if v.state and os.path.isdir(os.path.join(v.state, "projects"))
            for p in Path(v.state, "projects").rglob("*")
        )

    results = {v.label: v.summary() for v in variants}
    ours = results["seqbox"]
    median = ours["median_gap_ms"]
    ok = isinstance(median, float) and median <= TARGET_MS and ours["fifo"] is True and ours["overlaps"] == 0
    print(
        f"queue handoff: {args.jobs} jobs, {args.stagger * 1000:.0f} ms apart, each {args.sleep}s, "
        f"{args.rounds} round(s)"
    )
    for label, r in results.items():
        print(
            f"  {label:8} median gap {r['median_gap_ms']} ms (max {r['max_gap_ms']}; "
            f"per round {r['round_medians_ms']}), "
            f"FIFO {r['fifo']}, overlaps {r['overlaps']}"
        )
    print(f"  load average afterwards: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  queue files afterwards: {leftover or 'none'}")
    print(f"{'PASS' if ok else 'FAIL'}: median handoff <= {TARGET_MS:g} ms, FIFO, never two at once")
    if args.json:
        print(json.dumps({"results": results, "state_left": leftover, "pass": ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
