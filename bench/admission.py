"""Memory admission: 12 jobs, each allocating 1.5 GiB (every page touched) and
holding it 2 s, under ``--mem 2G``.

1. Inside a cgroup limited to 8 GiB that the benchmark creates (and puts the
   shell that starts the jobs into): ``seqbox run --budget auto`` vs ``--slots 1``
   (one at a time) vs GNU parallel ``--memfree 2G -j 12`` vs ``xargs -P 12``.
   For each: wall time, jobs completed, job attempts killed (by the kernel or
   by the tool), the cgroup's peak usage.
2. On the bare machine: ``--budget 8G`` vs ``--slots 1``.

Targets (issue 11), for the ``--budget`` rows: 0 jobs killed, the cgroup's peak
within its limit, wall time within 15 % of the ideal packing for that budget
(rounds x one job's wall time alone), and at least 3.5x faster than --slots 1.

Needs root and a writable cgroup memory controller (v1 or v2); installs GNU
parallel with apt-get when it is missing. Removes its cgroups afterwards.

    sudo python bench/admission.py [--jobs 12] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1 << 30
MIB = 1 << 20
JOB_BYTES = 3 * GIB // 2
HOLD_S = 2.0
MEM = "2G"
LIMIT = 8 * GIB
#: one job: note the attempt, allocate and touch 1.5 GiB (bytes * n is a memset), hold, note it finished
JOB = (
    "import sys, time; f = sys.argv[1]; open(f, 'a').write('start\\n'); "
    f"b = b'\\1' * {JOB_BYTES}; time.sleep({HOLD_S}); open(f, 'a').write('done\\n')"
)


def seqbox_command() -> list[str]:
    script = Path(sys.executable).parent / "seqbox"
    return [str(script)] if script.exists() else [sys.executable, "-m", "seqbox"]


def job_argv(record: str) -> list[str]:
    return [sys.executable, "-c", JOB, record]


class Cgroup:
    """A memory cgroup limited to ``limit`` bytes (v2 where the unified
    hierarchy has the memory controller, else v1)."""

    def __init__(self, name: str, limit: int) -> None:
        v2_root = "/sys/fs/cgroup"
        if "memory" in _read(os.path.join(v2_root, "cgroup.controllers")).split():
            own = _read("/proc/self/cgroup").splitlines()[-1].split(":", 2)[2]
            self.v2 = True
            self.path = os.path.join(v2_root + os.path.dirname(own.rstrip("/")), name)
        else:
            self.v2 = False
            own = next(
                line.split(":", 2)[2]
                for line in _read("/proc/self/cgroup").splitlines()
                if "memory" in line.split(":")[1].split(",")
            )
            self.path = os.path.join("/sys/fs/cgroup/memory" + own.rstrip("/"), name)
        os.mkdir(self.path)
        if self.v2:
            _write(os.path.join(self.path, "memory.max"), str(limit))
            _write(os.path.join(self.path, "memory.swap.max"), "0")
        else:
            _write(os.path.join(self.path, "memory.limit_in_bytes"), str(limit))

    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def peak(self) -> int | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        text = _read(os.path.join(self.path, name)).strip()
        return int(text) if text.isdigit() else None

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in _read(os.path.join(self.path, name)).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        """Kill whatever is left inside (only what this benchmark started), then rmdir bottom up."""
        for _ in range(100):
            pids = []
            for dirpath, _, _ in os.walk(self.path):
                pids += _read(os.path.join(dirpath, "cgroup.procs")).split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for dirpath, _, _ in os.walk(self.path, topdown=False):
            for _ in range(100):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def ensure_parallel() -> str | None:
    found = shutil.which("parallel")
    if found is None and os.getuid() == 0 and shutil.which("apt-get"):
        print("installing GNU parallel (apt-get install parallel)...")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        if subprocess.run(["apt-get", "install", "-y", "parallel"], check=False, **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], check=False, **quiet)
            subprocess.run(["apt-get", "install", "-y", "parallel"], check=False, **quiet)
        found = shutil.which("parallel")
    return found


def variants(jobs: int, record: str, parallel: str | None) -> dict[str, str]:
    """Shell command lines that start ``jobs`` jobs and wait for them all."""
    one = shlex.join(job_argv(record))
    seqbox = shlex.join(seqbox_command())

    def under_seqbox(options: str) -> str:
        run = f"{seqbox} run -q --lock bench --mem {MEM} {options} -- {one}"
        return f"for i in $(seq {jobs}); do {run} & done; wait"

    lines = {
        "seqbox --budget auto": under_seqbox("--budget auto"),
        "seqbox --budget 8G": under_seqbox("--budget 8G"),
        "seqbox --slots 1": under_seqbox("--slots 1"),
    }
    if parallel is not None:
        lines["parallel --memfree 2G -j 12"] = (
            f"seq {jobs} | {parallel} --will-cite -q --memfree {MEM} -j {jobs} {one}"
        )
    lines[f"xargs -P {jobs}"] = f"seq {jobs} | xargs -P {jobs} -I{{}} {one}"
    return lines


def run_variant(name: str, line: str, record: str, cgroup: Cgroup | None) -> dict[str, object]:
    Path(record).write_text("")
    into = None if cgroup is None else cgroup.procs_file()

    def join_cgroup() -> None:
        if into is not None:
            with open(into, "w") as f:
                f.write("0")

    start = time.monotonic()
    proc = subprocess.run(
        ["sh", "-c", line],
        preexec_fn=join_cgroup,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - start
    marks = Path(record).read_text().split()
    result: dict[str, object] = {
        "variant": name,
        "wall_s": round(wall, 2),
        "completed": marks.count("done"),
        "killed": marks.count("start") - marks.count("done"),
        "exit": proc.returncode,
    }
    if cgroup is not None:
        result["peak_bytes"] = cgroup.peak()
        result["kernel_oom_kills"] = cgroup.oom_kills()
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if errors:
        result["stderr"] = errors[-2:]
    return result


def alone(record: str) -> float:
    """One job's wall time under seqbox with nothing else running."""
    Path(record).write_text("")
    start = time.monotonic()
    seqbox = [*seqbox_command(), "run", "-q", "--lock", "bench-alone", "--mem", MEM]
    subprocess.run([*seqbox, "--", *job_argv(record)], check=True)
    return time.monotonic() - start


def show(result: dict[str, object]) -> None:
    peak = result.get("peak_bytes")
    extra = ""
    if "peak_bytes" in result:
        peak_text = "?" if not isinstance(peak, int) else f"{peak / GIB:.2f} GiB"
        extra = f", cgroup peak {peak_text}, kernel OOM kills {result['kernel_oom_kills']}"
    print(
        f"  {result['variant']:<30} wall {result['wall_s']:6.2f} s, completed {result['completed']:2}, "
        f"killed {result['killed']:2}{extra}"
    )
    for line in result.get("stderr", []):  # type: ignore[attr-defined]
        print(f"      stderr: {line[:150]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not sys.platform.startswith("linux") or os.getuid() != 0:
        print("SKIP admission: needs root on Linux (it makes a memory cgroup)")
        return 0
    parallel = ensure_parallel()
    if parallel is None:
        print("note: GNU parallel is not installed and could not be; its row is left out")
    checks: list[tuple[str, bool, str]] = []
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="seqbox-admission-") as tmp:
        os.environ.update(SEQBOX_STATE_DIR=os.path.join(tmp, "state"), SEQBOX_PROJECT=tmp)
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        record = os.path.join(tmp, "record")
        one = alone(record)
        print(f"one job alone under seqbox: {one:.2f} s (start-up + touching 1.5 GiB + {HOLD_S:.0f} s hold)")
        results["alone_s"] = round(one, 2)

        print(f"\n1. inside a cgroup limited to {LIMIT / GIB:.0f} GiB, {args.jobs} jobs, --mem {MEM}:")
        inside = []
        for name, line in variants(args.jobs, record, parallel).items():
            cgroup = Cgroup(f"sbxbench-admission-{os.getpid()}", LIMIT)
            try:
                inside.append(run_variant(name, line, record, cgroup))
            finally:
                cgroup.remove()
            show(inside[-1])
        results["inside_cgroup"] = inside

        print(f"\n2. on the bare machine, {args.jobs} jobs, --mem {MEM}:")
        bare_lines = variants(args.jobs, record, None)
        bare = [
            run_variant(name, bare_lines[name], record, None)
            for name in ("seqbox --budget 8G", "seqbox --slots 1")
        ]
        for result in bare:
            show(result)
        results["bare"] = bare

    auto_budget = max(0, LIMIT - max(int(LIMIT * 0.05), 256 * MIB))  # what --budget auto makes of the limit
    for where, rows in (("cgroup", inside), ("bare", bare)):
        by_name = {str(r["variant"]): r for r in rows}
        slots1 = float(by_name["seqbox --slots 1"]["wall_s"])  # type: ignore[arg-type]
        for name, budget in (("seqbox --budget auto", auto_budget), ("seqbox --budget 8G", 8 * GIB)):
            row = by_name.get(name)
            if row is None or (where == "bare" and name.endswith("auto")):
                continue
            at_once = budget // (2 * GIB)
            rounds = math.ceil(args.jobs / at_once)
            ideal = rounds * one
            wall = float(row["wall_s"])  # type: ignore[arg-type]
            label = f"{where}, {name} ({at_once} at once, {rounds} rounds)"
            checks.append((f"{label}: 0 killed", row["killed"] == 0 and row["completed"] == args.jobs,
                           f"{row['killed']} killed, {row['completed']} completed"))  # fmt: skip
            peak = row.get("peak_bytes")
            if where == "cgroup":
                within = isinstance(peak, int) and peak <= LIMIT
                checks.append(
                    (f"{label}: peak within {LIMIT / GIB:.0f} GiB", within, f"{(peak or 0) / GIB:.2f} GiB")
                )
            checks.append((f"{label}: within 15 % of ideal packing ({ideal:.1f} s)", wall <= 1.15 * ideal,
                           f"{wall:.2f} s = {wall / ideal:.2f}x ideal"))  # fmt: skip
            checks.append((f"{label}: >= 3.5x faster than --slots 1 ({slots1:.1f} s)", slots1 / wall >= 3.5,
                           f"{slots1 / wall:.2f}x"))  # fmt: skip
    print()
    for name, ok, measured in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {name}: {measured}")
    if args.json:
        print(
            json.dumps(
                {
                    "results": results,
                    "checks": [{"name": n, "pass": ok, "measured": m} for n, ok, m in checks],
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
