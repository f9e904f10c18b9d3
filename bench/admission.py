"""Memory admission that learns (issue 18): a mixed workload in a 6 GiB cgroup.

12 jobs under ``--mem 2G``: 10 fill 400 MiB and 2 fill 1.6 GiB (every page
touched), each then holds its memory 3 s mostly asleep (as agents wait on a
model and test suites on I/O). Every variant runs in the same fresh cgroup
limited to 6 GiB that the benchmark creates (the shell that starts the jobs is
put into it):

1. ``seqbox run --slots 1`` (one at a time, the recipe's way);
2. ``--budget auto`` with an empty history (each run reserves its ``--mem``);
3. ``--budget auto`` after that round (learned reservations);
4. GNU parallel ``--memfree 1G -j 12`` and ``--memsuspend 1G -j 12``;
5. ``xargs -P 12``;
6. the overshoot: variant 3 again, but 2 of the small jobs now fill 1.6 GiB
   (their command line is the same: they share the small jobs' learned
   reservation and outgrow it). GNU parallel ``--memsuspend`` and xargs are run
   on it too, for comparison.

Right after variant 3, the same jobs are started by the admission rule alone
(section 3a, a few lines of Python: in the order seqbox admitted them, each as
soon as what it reserved there fits in the budget next to the running ones'):
what the contract allows on this machine now, so that variant 3 minus it is
seqbox's own cost.

For each: wall time, jobs completed, jobs killed (started but never finished:
by the kernel or by the tool), total frozen seconds (seqbox's summaries), the
cgroup's peak and ``memory.failcnt`` (v2: the ``max`` events), the CPU time of
everything started (seqbox's own: less the jobs' cgroups). ``--timeline``
prints each job's times (arrival in the queue, admission, start, memory
filled, done, end of the run log); ``--repeat N`` runs every variant N times
and checks the medians.

Targets: variant 3 at least 2.5x faster than variant 2 and 5x faster than
variant 1, and within 10 % of GNU parallel ``--memsuspend``; variants 2, 3 and
6 with 0 jobs killed and the cgroup's limit never reached (failcnt 0).

Needs root and a writable cgroup memory controller (v1 or v2). GNU parallel
rows are left out when it is not installed. Removes its cgroups afterwards.

    sudo python bench/admission.py [--json] [--only NAME ...] [--timeline] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchlib import Report, bench_env, loadavg, remove_dir, scratch_dir

GIB = 1 << 30
MIB = 1 << 20
JOBS = 12
BIG = (3, 9)  # the 1.6 GiB jobs (1-based positions in the line)
SMALL_MIB, BIG_MIB = 400, 1600
HOLD_S = 3.0
MEM = "2G"
LIMIT = 6 * GIB
#: one job: note the attempt, fill its size (bytes * n is a memset: every page
#: touched), hold it mostly asleep, note that it finished. Its kind (small or
#: big) is on the command line (what seqbox learns by); the size it really
#: fills comes from FILL_MIB when set (the overshoot).
JOB = (
    "import os, sys, time; f = sys.argv[1]; j = os.environ.get('SBX_JOB', '?'); p = os.getppid(); "
    "open(f, 'a').write(f'start {time.time()} {j} {p}\\n'); "
    f"mib = int(os.environ.get('FILL_MIB') or ({SMALL_MIB} if sys.argv[2] == 'small' else {BIG_MIB})); "
    f"b = b'\\1' * (mib << 20); open(f, 'a').write(f'filled {{time.time()}} {{j}} {{p}}\\n'); "
    f"time.sleep({HOLD_S}); open(f, 'a').write(f'done {{time.time()}} {{j}} {{p}}\\n')"
)

#: the contract's admission rule with nothing else (section 3a): start the jobs
#: in the given order, each as soon as its reservation fits next to those of
#: the jobs running (no queue files, no cgroups, no sampling, one process)
IDEAL = """
import json, os, sys
budget, jobs = int(sys.argv[1]), json.load(open(sys.argv[2]))
running = {}
def reap():
    pid, _ = os.wait()
    running.pop(pid, None)
for argv, env, reserved in jobs:
    while running and sum(running.values()) + reserved > budget:
        reap()
    running[os.posix_spawn(argv[0], argv, {**os.environ, **env})] = reserved
while running:
    reap()
"""


def job_argv(record: str, kind: str) -> list[str]:
    return [sys.executable, "-c", JOB, record, kind]


class Cgroup:
    """A memory cgroup limited to ``limit`` bytes (v2 where the unified
    hierarchy has the memory controller, else v1), swap closed."""

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
            memsw = os.path.join(self.path, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):
                _write(memsw, str(limit))

    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def peak(self) -> int | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        text = _read(os.path.join(self.path, name)).strip()
        return int(text) if text.isdigit() else None

    def failcnt(self) -> int | None:
        """How often the limit was reached (v1 memory.failcnt + memsw.failcnt; v2 the ``max`` events)."""
        if not self.v2:  # memory, and memory+swap (its limit is the same: it may be the one hit)
            counts = [
                _read(os.path.join(self.path, name)).strip()
                for name in ("memory.failcnt", "memory.memsw.failcnt")
            ]
            return sum(int(text) for text in counts if text.isdigit()) if counts[0].isdigit() else None
        return _keyed(_read(os.path.join(self.path, "memory.events"))).get("max")

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        return _keyed(_read(os.path.join(self.path, name))).get("oom_kill", 0)

    def lock_parents(self) -> list[str]:
        """seqbox's lock parents left inside (there should be none)."""
        try:
            return [name for name in os.listdir(self.path) if name.startswith("seqboxlock-")]
        except OSError:
            return []

    def remove(self) -> None:
        """Kill whatever is left inside (only what this benchmark started), then rmdir bottom up."""
        for dirpath, _, _ in os.walk(self.path):  # a frozen leftover cannot die
            for name, value in (("cgroup.freeze", "0"), ("freezer.state", "THAWED")):
                if os.path.exists(os.path.join(dirpath, name)):
                    try:
                        _write(os.path.join(dirpath, name), value)
                    except OSError:
                        pass
        for _ in range(100):
            pids = []
            for dirpath, _, _ in os.walk(self.path):
                pids += _read(os.path.join(dirpath, "cgroup.procs")).split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
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


def _keyed(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def kinds(overshoot: bool) -> list[tuple[str, dict[str, str]]]:
    """Each job's kind and extra environment, in the order they are started."""
    jobs: list[tuple[str, dict[str, str]]] = [
        ("big", {}) if i in BIG else ("small", {}) for i in range(1, JOBS + 1)
    ]
    if overshoot:  # two small jobs (same command line) now fill what a big one does
        for i in (1, 6):
            jobs[i - 1] = ("small", {"FILL_MIB": str(BIG_MIB)})
    return jobs


def line_for(tool: str, options: str, work: str, seqbox: list[str], overshoot: bool) -> str:
    """A shell command line that starts the 12 jobs with ``tool`` and waits for them all."""
    record, reports = os.path.join(work, "record"), os.path.join(work, "reports")
    jobs = kinds(overshoot)
    if tool == "seqbox":
        runs = []
        for i, (kind, env) in enumerate(jobs, 1):
            prefix = "".join(f"{k}={v} " for k, v in {"SBX_JOB": str(i), **env}.items())
            report = os.path.join(reports, f"job-{i}.json")
            run = f"{shlex.join(seqbox)} run -q --lock bench --mem {MEM} {options} --report {report} -- "
            runs.append(f"{prefix}{run}{shlex.join(job_argv(record, kind))} &")
        return " ".join(runs) + " wait"
    if tool == "ideal":  # options: "BUDGET SPEC" (see ideal_spec)
        budget, spec = options.split()
        return shlex.join([sys.executable, "-c", IDEAL, budget, spec])
    script = os.path.join(work, "job.sh")  # job.sh INDEX KIND [FILL_MIB]
    Path(script).write_text(f'SBX_JOB="$1" FILL_MIB="$3" exec {shlex.join(job_argv(record, "")[:-1])} "$2"\n')
    lines = "".join(
        f"{i} {kind} {env.get('FILL_MIB', '')}".strip() + "\\n" for i, (kind, env) in enumerate(jobs, 1)
    )
    if tool == "xargs":
        return f"printf '{lines}' | xargs -P {JOBS} -L 1 sh {script}"
    columns = "{1} {2} {3}"
    return f"printf '{lines}' | {tool} --will-cite {options} -j {JOBS} --colsep ' ' sh {script} {columns}"


class Result:
    """How one variant went."""

    def __init__(self, variant: str, wall_s: float, record: str, stderr: str) -> None:
        self.variant = variant
        self.wall_s = wall_s
        events = [line.split() for line in Path(record).read_text().splitlines() if line.strip()]
        starts = sum(1 for e in events if e[0] == "start")
        self.completed = sum(1 for e in events if e[0] == "done")
        #: attempts that started and never finished: killed by the kernel or the tool
        self.killed = starts - self.completed
        self.frozen_s: float | None = None
        self.seqbox_memory_kills = 0
        self.peak: int | None = None
        self.failcnt: int | None = None
        self.oom_kills: int | None = None
        self.stderr = [line for line in stderr.splitlines() if line.strip()][-2:]
        #: each job's times (see read_jobs)
        self.jobs: dict[str, dict[str, float]] = {}
        #: CPU seconds of everything the variant started, and of the jobs alone (seqbox: their cgroups)
        self.cpu_s: float | None = None
        self.jobs_cpu_s: float | None = None

    def show(self) -> None:
        peak = "?" if self.peak is None else f"{self.peak / GIB:.2f} GiB"
        frozen = "" if self.frozen_s is None else f", frozen {self.frozen_s:5.1f} s"
        cpu = "" if self.cpu_s is None else f", CPU {self.cpu_s:.1f} s"
        if self.cpu_s is not None and self.jobs_cpu_s is not None:
            cpu += f" (the tool {self.cpu_s - self.jobs_cpu_s:.2f} s)"
        print(
            f"  {self.variant:<40} wall {self.wall_s:6.2f} s, completed {self.completed:2}, "
            f"killed {self.killed:2}{frozen}, cgroup peak {peak}, failcnt {self.failcnt}, "
            f"OOM kills {self.oom_kills}{cpu}"
        )
        for line in self.stderr:
            print(f"      stderr: {line[:150]}")

    def as_json(self) -> dict[str, object]:
        return {
            "variant": self.variant,
            "wall_s": round(self.wall_s, 2),
            "completed": self.completed,
            "killed": self.killed,
            "frozen_s": self.frozen_s,
            "peak_bytes": self.peak,
            "failcnt": self.failcnt,
            "kernel_oom_kills": self.oom_kills,
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 2),
            "jobs_cpu_s": None if self.jobs_cpu_s is None else round(self.jobs_cpu_s, 2),
        }


def read_jobs(work: str, record: str, t0: float, tool: str) -> dict[str, dict[str, float]]:
    """Each job's times, in seconds from the variant's start (by its number in
    the line): for every tool, when the job's Python started (``start``), had
    filled its memory (``filled``) and was done (``done``), from the record;
    with seqbox also when it arrived in the queue (``arrive``), was admitted
    (``admit``) and its run log ended (``exit``), what it reserved and the
    budget (bytes), and its frozen seconds, from the run logs."""
    jobs: dict[str, dict[str, float]] = {}
    by_pid: dict[str, str] = {}
    for line in Path(record).read_text().splitlines():
        words = line.split()
        if len(words) == 4:
            event, at, job, ppid = words
            jobs.setdefault(job, {})[event] = float(at) - t0
            by_pid[ppid] = job
    if tool != "seqbox":
        return jobs
    for path in Path(work, "state", "logs").glob("*/*.jsonl"):
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not events or events[0].get("t", 0) < t0 - 1:
            continue
        owner = by_pid.get(str(events[0].get("pid")))
        if owner is None:
            continue
        row = jobs.setdefault(owner, {})
        start = events[0]
        row["arrive"] = start["t"] - t0
        row["reserved"] = float(start.get("reserved") or 0)
        row["learned"] = float(start.get("reserved_how") == "learned")
        row["budget"] = float(start.get("budget") or 0)
        for event in events[1:]:
            if event.get("event") == "lock":
                row["admit"] = event["t"] - t0
            elif event.get("event") == "exit":
                row["exit"] = event["t"] - t0
                row["frozen"] = float((event.get("summary") or {}).get("frozen_s") or 0.0)
    return jobs


def admission_order(jobs: dict[str, dict[str, float]]) -> list[str]:
    """The jobs by when they were admitted (started, for the tools)."""
    return sorted(jobs, key=lambda j: (jobs[j].get("admit", jobs[j].get("start", 1e9)), int(j)))


def timeline(jobs: dict[str, dict[str, float]]) -> list[str]:
    """The table of :func:`read_jobs`, by admission."""
    kinds_of = {str(i): kind for i, (kind, _) in enumerate(kinds(False), 1)}
    names = ("arrive", "admit", "start", "filled", "done", "exit", "frozen")
    lines = ["      job kind  reserved " + " ".join(f"{n:>6}" for n in names)]
    for job in admission_order(jobs):
        row = jobs[job]
        reserved = (
            f"{row['reserved'] / MIB:.0f}{'l' if row.get('learned') else ''}" if "reserved" in row else "-"
        )
        cells = " ".join(f"{row[n]:6.2f}" if n in row else f"{'-':>6}" for n in names)
        lines.append(f"      {job:>3} {kinds_of.get(job, '?'):<5} {reserved:>8} {cells}")
    return lines


def run_variant(
    name: str,
    tool: str,
    options: str,
    work: str,
    seqbox: list[str],
    overshoot: bool,
    show_timeline: bool = False,
) -> Result:
    record = os.path.join(work, "record")
    reports = os.path.join(work, "reports")
    Path(record).write_text("")
    shutil.rmtree(reports, ignore_errors=True)
    os.makedirs(reports)
    line = line_for(tool, options, work, seqbox, overshoot)
    cgroup = Cgroup(f"sbxbench-admission-{os.getpid()}", LIMIT)
    into = cgroup.procs_file()

    def join_cgroup() -> None:
        with open(into, "w") as f:
            f.write("0")

    try:
        cpu_before = children_cpu()
        start, t0 = time.monotonic(), time.time()
        proc = subprocess.Popen(
            ["sh", "-c", line],
            preexec_fn=join_cgroup,  # noqa: PLW1509 - this script starts no threads
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=work,
            env=bench_env({"SEQBOX_STATE_DIR": os.path.join(work, "state"), "SEQBOX_PROJECT": work}),
        )
        try:
            _, stderr = proc.communicate()
        except BaseException:  # interrupted: every seqbox tears its tree down on SIGTERM
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        wall = time.monotonic() - start
        result = Result(name, wall, record, stderr)
        result.cpu_s = children_cpu() - cpu_before  # every level waits for its children
        result.peak, result.failcnt, result.oom_kills = cgroup.peak(), cgroup.failcnt(), cgroup.oom_kills()
        left = cgroup.lock_parents()
        if left:
            result.stderr.append(f"[bench] lock parents left behind: {left}")
    finally:
        cgroup.remove()
    if tool == "seqbox":
        frozen = jobs_cpu = 0.0
        for path in Path(reports).glob("*.json"):
            doc = json.loads(path.read_text())
            frozen += doc.get("frozen_s") or 0.0
            jobs_cpu += doc.get("cpu_s") or 0.0
            result.seqbox_memory_kills += doc.get("status") == "memory"
        result.frozen_s = frozen
        result.jobs_cpu_s = jobs_cpu
    result.jobs = read_jobs(work, record, t0, tool)
    result.show()
    if show_timeline:
        for line in timeline(result.jobs):
            print(line)
    return result


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ideal_spec(learned: Result, work: str, seqbox: list[str]) -> str | None:
    """``BUDGET SPEC`` for the ideal scheduler: the jobs of the learned round in
    the order seqbox admitted them, with what each reserved there."""
    jobs = learned.jobs
    order = [job for job in admission_order(jobs) if jobs[job].get("reserved")]
    if len(order) != JOBS:
        return None
    record = os.path.join(work, "record")
    spec = [
        [job_argv(record, kind), {"SBX_JOB": job, **env}, int(jobs[job]["reserved"])]
        for job in order
        for kind, env in [kinds(False)[int(job) - 1]]
    ]
    path = os.path.join(work, "ideal.json")
    Path(path).write_text(json.dumps(spec))
    return f"{int(jobs[order[0]]['budget'])} {path}"


SLOTS1 = "1. seqbox --slots 1"
COLD = "2. seqbox --budget auto (empty history)"
LEARNED = "3. seqbox --budget auto (learned)"
MEMFREE = "4. parallel --memfree 1G -j 12"
MEMSUSPEND = "4. parallel --memsuspend 1G -j 12"
IDEAL_FIFO = "3. ideal: the same admission, no seqbox"
XARGS = "5. xargs -P 12"
OVERSHOOT = "6. overshoot: seqbox --budget auto (learned)"
OVER_SUSPEND = "6. overshoot: parallel --memsuspend 1G"
OVER_XARGS = "6. overshoot: xargs -P 12"


def measure(
    work: str, seqbox: list[str], parallel: str | None, only: list[str] | None, show_timeline: bool = False
) -> dict[str, Result]:
    """Every variant, in an order where each seqbox variant has the history it
    needs: 2 (cold) then 3 (learned from 2) then 6 share one project."""
    rows: dict[str, Result] = {}
    slots1_dir = os.path.join(work, "slots1")
    budget_dir = os.path.join(work, "budget")  # one project: its history carries over from 2 to 3 and 6
    tools_dir = os.path.join(work, "tools")
    for path in (slots1_dir, budget_dir, tools_dir):
        os.makedirs(path, exist_ok=True)
    plan: list[tuple[str, str, str, str, bool]] = [
        (COLD, "seqbox", "--budget auto", budget_dir, False),
        (LEARNED, "seqbox", "--budget auto", budget_dir, False),
    ]
    if parallel is not None:
        plan += [
            (MEMSUSPEND, parallel, "--memsuspend 1G", tools_dir, False),
            (MEMFREE, parallel, "--memfree 1G", tools_dir, False),
        ]
    plan += [(XARGS, "xargs", "", tools_dir, False), (OVERSHOOT, "seqbox", "--budget auto", budget_dir, True)]
    if parallel is not None:
        plan.append((OVER_SUSPEND, parallel, "--memsuspend 1G", tools_dir, True))
    plan += [(OVER_XARGS, "xargs", "", tools_dir, True), (SLOTS1, "seqbox", "--slots 1", slots1_dir, False)]
    for name, tool, options, where, overshoot in plan:
        if only and not any(word in name for word in only) and name not in (COLD,):
            continue
        rows[name] = run_variant(name, tool, options, where, seqbox, overshoot, show_timeline)
        if name == LEARNED:  # what the contract's rule alone gives, in the same order, right after
            spec = ideal_spec(rows[name], tools_dir, seqbox)
            if spec is not None:
                rows[IDEAL_FIFO] = run_variant(
                    IDEAL_FIFO, "ideal", spec, tools_dir, seqbox, False, show_timeline
                )
    return rows


def median_rows(rounds: list[dict[str, Result]]) -> dict[str, Result]:
    """Each variant's round with the median wall time (the lower middle one)."""
    rows: dict[str, Result] = {}
    for name in rounds[0]:
        done = sorted((r[name] for r in rounds if name in r), key=lambda row: row.wall_s)
        rows[name] = done[(len(done) - 1) // 2]
    return rows


def checks(report: Report, rounds: list[dict[str, Result]]) -> None:
    rows = median_rows(rounds)
    slots1, cold, learned = rows.get(SLOTS1), rows.get(COLD), rows.get(LEARNED)
    suspend, ideal = rows.get(MEMSUSPEND), rows.get(IDEAL_FIFO)
    if len(rounds) > 1:
        print(f"\nmedian of {len(rounds)} rounds:")
        for name, row in rows.items():
            walls = ", ".join(f"{r[name].wall_s:.2f}" for r in rounds if name in r)
            print(f"  {name:<40} wall {row.wall_s:6.2f} s  ({walls})")
    if learned is not None and ideal is not None:
        print(
            f"seqbox's own cost over the admission rule alone (variant 3 vs the ideal, same order): "
            f"{learned.wall_s - ideal.wall_s:+.2f} s ({learned.wall_s / ideal.wall_s:.2f}x)"
        )
    if learned is not None and cold is not None:
        x = cold.wall_s / learned.wall_s
        report.check(
            "variant 3 vs variant 2",
            x >= 2.5,
            f"{x:.2f}x ({learned.wall_s:.1f} s vs {cold.wall_s:.1f} s)",
            ">= 2.5x faster",
        )
    if learned is not None and slots1 is not None:
        x = slots1.wall_s / learned.wall_s
        report.check(
            "variant 3 vs variant 1",
            x >= 5,
            f"{x:.2f}x ({learned.wall_s:.1f} s vs {slots1.wall_s:.1f} s)",
            ">= 5x faster",
        )
    if learned is not None and suspend is not None:
        ratio = learned.wall_s / suspend.wall_s
        report.check(
            "variant 3 vs parallel --memsuspend",
            ratio <= 1.10,
            f"{ratio:.2f}x ({learned.wall_s:.1f} s vs {suspend.wall_s:.1f} s)",
            "within 10 %",
        )
    for name in (COLD, LEARNED, OVERSHOOT):
        every = [r[name] for r in rounds if name in r]
        if not every:
            continue
        killed, completed = max(row.killed for row in every), min(row.completed for row in every)
        report.check(
            f"{name}: nothing killed",
            killed == 0 and completed == JOBS,
            f"{killed} killed, {completed} completed" + (" (the worst round)" if len(every) > 1 else ""),
            f"0 killed, {JOBS} completed",
        )
        failcnts = [row.failcnt for row in every]
        peak = max(row.peak or 0 for row in every)
        report.check(
            f"{name}: the cgroup's limit never reached",
            all(count == 0 for count in failcnts),
            f"failcnt {', '.join(str(count) for count in failcnts)}, peak {peak / GIB:.2f} GiB",
            "failcnt 0",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", nargs="*", help="run only the variants whose name has one of these words")
    parser.add_argument(
        "--timeline", action="store_true", help="print each job's times (queue, admission, fill, end)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every variant (the checks take medians)"
    )
    args = parser.parse_args()
    if not sys.platform.startswith("linux") or os.getuid() != 0:
        print("SKIP admission: needs root on Linux (it makes a memory cgroup)")
        return 0
    report = Report("admission")
    parallel = shutil.which("parallel")
    if parallel is None:
        print("note: GNU parallel is not installed: its rows are left out")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    rounds: list[dict[str, Result]] = []
    print(
        f"\n{JOBS} jobs (10 x {SMALL_MIB} MiB, 2 x {BIG_MIB} MiB, each held {HOLD_S:g} s), --mem {MEM}, "
        f"each variant in a fresh cgroup limited to {LIMIT / GIB:.0f} GiB:"
    )
    for number in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"round {number} of {args.repeat}:")
        work = scratch_dir("admission")
        try:
            rounds.append(measure(work, report.argv, parallel, args.only, args.timeline))
        finally:
            remove_dir(work)
    print(f"load average after the variants: {loadavg()}")
    report.results = {name: row.as_json() for name, row in median_rows(rounds).items()}
    checks(report, rounds)
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
