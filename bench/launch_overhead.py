"""What ``seqbox run`` adds to a command's start-up and end.

Median of N runs of ``seqbox run --mem 256M -- true`` minus the median of N
bare ``true``, per backend (runs interleaved round-robin, after one warm-up
round), with Python's own start-up for reference, ``python -m seqbox`` for
comparison with the console script, and a breakdown: a ``-X importtime``
profile of the run path (top imports, so that one that creeps onto it
shows), and the time of ``python -c "import <what the run path imports>"``
without -X importtime, to split the overhead into start-up, imports and the
rest (probe, cgroup setup, fork/exec, wait, teardown).

    python bench/launch_overhead.py [--backend all|auto|cgroup2|cgroup1|poll] [--runs 21] [--json]
                                    [--also LABEL=PATH ...]

``--also`` times another seqbox (the console script of another checkout's
venv, say the commit before a change) in the same rounds, interleaved with
this one, so that a machine whose speed drifts between two runs of the bench
does not pass for a change in the code: ``--also old=../old/.venv/bin/seqbox``.

Target (from the issue): overhead <= 40 ms with cgroup1 (and cgroup2).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from benchlib import (
    Doctor,
    Report,
    add_also,
    also_scripts,
    bench_env,
    median,
    ms,
    parser,
    remove_dir,
    scratch_dir,
)

TARGET_S = 0.040
IMPORTTIME_RUNS = 5
TOP = 10
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)\s*$")

#: module -> (self us, cumulative us, nesting depth)
Imports = dict[str, tuple[float, float, int]]


def spawn_wait(argv: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Start ``argv`` (stdout and stderr to /dev/null) in the current
    directory, wait; (seconds, pid, exit code)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        start = time.perf_counter()
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)],
        )
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
    finally:
        os.close(devnull)
    return elapsed, pid, os.waitstatus_to_exitcode(status)


def parse_importtime(stderr: str) -> dict[str, tuple[int, int, int]]:
    """module -> (self us, cumulative us, nesting depth) from -X importtime output."""
    found: dict[str, tuple[int, int, int]] = {}
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            found[m.group(4)] = (int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2)
    return found


def importtime(args: list[str], env: dict[str, str], runs: int) -> Imports:
    """Median self and cumulative import time (us) per module of ``python
    -X importtime ARGS`` over ``runs`` runs."""
    samples: dict[str, list[tuple[int, int, int]]] = {}
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, env=env, check=False
        )
        for name, value in parse_importtime(proc.stderr).items():
            samples.setdefault(name, []).append(value)
    return {
        name: (median([float(v[0]) for v in vals]), median([float(v[1]) for v in vals]), vals[0][2])
        for name, vals in samples.items()
    }


def run_path_imports(mods: Imports, startup: Imports) -> list[str]:
    """The top-level imports of the run path beyond python's own start-up, in order.
    (``warnings`` is imported by the forked child: os.execvpe -> os.get_exec_path.)"""
    return [
        name
        for name, v in mods.items()
        if v[2] == 0 and name not in startup and name not in ("warnings", "posix", "marshal")
    ]


def breakdown(
    label: str, overhead: float, *, python_startup: float, imports_s: float, mods: Imports, startup: Imports
) -> dict[str, Any]:
    """Print where the time of one variant goes; return it for --json."""
    extra = {k: v for k, v in mods.items() if k not in startup}
    extra_self = sum(v[0] for v in extra.values())
    seqbox_self = sum(v[0] for k, v in extra.items() if k.split(".")[0] == "seqbox")
    third = sorted(
        {k.split(".")[0] for k in extra if k.split(".")[0] not in sys.stdlib_module_names | {"seqbox"}}
    )
    rest = overhead - python_startup - imports_s
    print(f"\n-- {label}: overhead {ms(overhead)} =")
    print(f"   {ms(python_startup):>9}  python start-up (python -c pass - true)")
    print(
        f"   {ms(imports_s):>9}  imports of the run path (python -c 'import ...' minus "
        f"python -c pass): {len(extra)} modules; under -X importtime {extra_self / 1000:.1f} ms "
        f"self, of which seqbox.* {seqbox_self / 1000:.1f} ms; third-party: "
        f"{', '.join(third) or 'none'}"
    )
    print(f"   {ms(rest):>9}  the rest: probe, cgroup setup, fork/exec, wait, teardown, exit")
    # a top-level (depth 0) import of warnings comes from the forked child; psutil
    # imports it nested, in the parent, and then the child finds it loaded
    if "warnings" in mods and mods["warnings"][2] == 0 and "warnings" not in startup:
        print(
            "   note: 'warnings' is imported in the forked child before exec "
            "(os.execvpe -> os.get_exec_path), on the critical path of every run"
        )
    print(
        f"   top {TOP} imports by cumulative time, median of {IMPORTTIME_RUNS} runs, us "
        f"(* = python -c pass imports it too):"
    )
    top = sorted(mods.items(), key=lambda kv: kv[1][1], reverse=True)[:TOP]
    for name, (self_us, cum_us, depth) in top:
        mark = "*" if name in startup else " "
        print(f"     {cum_us:>8.0f} cum {self_us:>7.0f} self {mark} {'  ' * depth}{name}")
    return {
        "overhead_s": overhead,
        "python_startup_s": python_startup,
        "imports_s": imports_s,
        "rest_s": rest,
        "importtime_self_us": extra_self,
        "seqbox_importtime_self_us": seqbox_self,
        "third_party": third,
        "top_cumulative_us": {n: v[1] for n, v in top},
    }


def main() -> int:
    p = parser(__doc__.splitlines()[0], ("auto", "cgroup2", "cgroup1", "poll"))
    p.add_argument("--runs", type=int, default=21, help="timed runs per variant (default 21)")
    add_also(p, "time")
    args = p.parse_args()
    also = also_scripts(p, args.also)
    report = Report("launch_overhead")
    doctor = Doctor()
    backends = doctor.pick(args.backend, ("cgroup2", "cgroup1", "poll", "auto"))
    env = bench_env()
    cwd = scratch_dir("launch")
    os.chdir(cwd)  # outside any project: no project config applies
    true = shutil.which("true") or "/bin/true"
    run_args = ["--mem", "256M", "--", "true"]  # by name, as a user types it: PATH is searched

    # The -X importtime profile first: it tells what the run path imports.
    startup = importtime(["-c", "pass"], env, IMPORTTIME_RUNS)
    script = report.argv[-1:] if len(report.argv) == 1 else ["-m", "seqbox"]
    profiles = {
        backend: importtime([*script, "run", "--backend", backend, *run_args], env, IMPORTTIME_RUNS)
        for backend in backends
    }

    variants: dict[str, list[str]] = {"true": [true], "python -c pass": [sys.executable, "-c", "pass"]}
    for backend in backends:
        variants[f"seqbox {backend}"] = [*report.argv, "run", "--backend", backend, *run_args]
    kernel = [b for b in backends if doctor.resolve(b) in ("cgroup1", "cgroup2") and b != "auto"]
    if kernel and len(report.argv) == 1:  # the same, without the console script's wrapper
        variants[f"python -m seqbox {kernel[0]}"] = [
            sys.executable,
            "-m",
            "seqbox",
            "run",
            "--backend",
            kernel[0],
            *run_args,
        ]
    for label, path in also.items():  # the same run, by another seqbox
        variants[f"{label} {backends[0]}"] = [path, "run", "--backend", backends[0], *run_args]
    for backend, mods in profiles.items():
        statement = "import " + ", ".join(run_path_imports(mods, startup))
        variants[f"imports only, {backend}"] = [sys.executable, "-c", statement]
    times: dict[str, list[float]] = {name: [] for name in variants}
    failures: dict[str, int] = {}
    try:
        for round_ in range(args.runs + 1):  # round 0 warms up (bytecode, caches)
            for name, argv in variants.items():
                elapsed, pid, code = spawn_wait(argv, env)
                if "seqbox" in name or name.split(" ")[0] in also:
                    report.seqbox_pids.append(pid)
                if code != 0:
                    failures[name] = failures.get(name, 0) + 1
                if round_ > 0:
                    times[name].append(elapsed)

        base = median(times["true"])
        python_startup = median(times["python -c pass"]) - base
        print(
            f"\n{args.runs} timed runs per variant, interleaved, after one warm-up round; "
            f"seqbox: run --backend B --mem 256M -- true"
        )
        print(f"{'variant':<26} {'median':>9} {'min':>9} {'max':>9} {'minus true':>11}")
        for name, values in times.items():
            extra = "" if name == "true" else ms(median(values) - base)
            print(f"{name:<26} {ms(median(values)):>9} {ms(min(values)):>9} {ms(max(values)):>9} {extra:>11}")
        for name, count in failures.items():
            print(f"warning: {name} exited non-zero {count} of {args.runs + 1} times")
        report.results.update(
            runs=args.runs,
            true_median_s=base,
            python_startup_s=python_startup,
            medians_s={name: median(v) for name, v in times.items()},
            failures=failures,
            backends={},
        )

        for backend in backends:
            concrete = doctor.resolve(backend)
            overhead = median(times[f"seqbox {backend}"]) - base
            imports_s = median(times[f"imports only, {backend}"]) - base - python_startup
            label = f"seqbox {backend}" + (f" ({concrete})" if backend == "auto" else "")
            info = breakdown(
                label,
                overhead,
                python_startup=python_startup,
                imports_s=imports_s,
                mods=profiles[backend],
                startup=startup,
            )
            report.results["backends"][backend] = {"concrete": concrete, **info}
            by_min = min(times[f"seqbox {backend}"]) - min(times["true"])
            print(f"   (best case, min - min: {ms(by_min)})")
            report.results["backends"][backend]["overhead_min_s"] = by_min
            if concrete in ("cgroup1", "cgroup2"):
                report.check(
                    f"launch overhead, {label}",
                    overhead <= TARGET_S and not failures,
                    ms(overhead) + (" (some runs failed)" if failures else ""),
                    f"<= {ms(TARGET_S)}",
                )
            else:
                report.check(
                    f"launch overhead, {label} [informational, no target]", True, ms(overhead), "none"
                )
    finally:
        os.chdir("/")
        remove_dir(cwd)
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
