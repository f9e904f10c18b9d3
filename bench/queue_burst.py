"""Queue burst: 100 ``seqbox run`` started at once. Checks that every run
completes exactly once, that they start in arrival order (the ticket number
each got, from ``-v``), that never two run at once, and that nothing is left in
the state directory afterwards. Prints the total time and the mean per run.

Target (issue 3): all complete exactly once, in arrival order, nothing left.

    python bench/queue_burst.py [--runs 100] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = 'echo "start $0 $(date +%s%N)" >> "$1"; echo "end $0 $(date +%s%N)" >> "$1"'
NUMBER_RE = re.compile(r"as number (\d+)")


def seqbox_command() -> list[str]:
    script = Path(sys.executable).parent / "seqbox"
    return [str(script)] if script.exists() else [sys.executable, "-m", "seqbox"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="seqbox-burst-") as tmp:
        state = os.path.join(tmp, "state")
        record = os.path.join(tmp, "record")
        env.update(SEQBOX_STATE_DIR=state, SEQBOX_PROJECT=tmp)
        began = time.monotonic()
        procs = [
            subprocess.Popen(
                [*seqbox_command(), "run", "-v", "--", "sh", "-c", JOB, str(i), record],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(args.runs)
        ]
        numbers: dict[int, int] = {}
        codes = []
        for i, proc in enumerate(procs):
            _, err = proc.communicate(timeout=600)
            codes.append(proc.returncode)
            match = NUMBER_RE.search(err)
            if match:
                numbers[i] = int(match.group(1))
        total = time.monotonic() - began
        starts: dict[int, list[int]] = {}
        ends: dict[int, int] = {}
        with open(record, encoding="ascii") as f:
            for line in f:
                kind, job, ns = line.split()
                if kind == "start":
                    starts.setdefault(int(job), []).append(int(ns))
                else:
                    ends[int(job)] = int(ns)
        left = (
            sorted(str(p.relative_to(state)) for p in Path(state).rglob("*")) if os.path.isdir(state) else []
        )

    once = len(starts) == args.runs and all(len(v) == 1 for v in starts.values())
    by_start = sorted(starts, key=lambda job: starts[job][0])
    in_order = [numbers.get(job, -1) for job in by_start] == sorted(numbers.get(job, -1) for job in by_start)
    intervals = sorted((starts[j][0], ends.get(j, starts[j][0])) for j in starts)
    overlaps = sum(1 for a, b in itertools.pairwise(intervals) if b[0] < a[1])
    ok = once and in_order and overlaps == 0 and not left and all(c == 0 for c in codes)
    result = {
        "runs": args.runs,
        "exit_codes_nonzero": sum(1 for c in codes if c),
        "completed_once": once,
        "arrival_order": in_order,
        "overlaps": overlaps,
        "state_left": left,
        "total_s": round(total, 2),
        "per_run_ms": round(1000 * total / args.runs, 1),
    }
    print(
        f"queue burst: {args.runs} runs started at once: {total:.2f}s total, "
        f"{result['per_run_ms']} ms per run"
    )
    print(
        f"  completed exactly once: {once}; in arrival order: {in_order}; overlaps: {overlaps}; "
        f"non-zero exits: {result['exit_codes_nonzero']}"
    )
    print(f"  state dir afterwards: {left or 'empty'}")
    print(f"{'PASS' if ok else 'FAIL'}: all complete once, in arrival order, nothing left")
    if args.json:
        print(json.dumps({**result, "pass": ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
