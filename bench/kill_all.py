"""Does anything of the command's tree outlive ``seqbox run``?

The command starts, and waits until each has written its own pid (and start
time, against pid reuse) to a file:

* a double-forked ``setsid`` daemon (re-parented away, in its own session),
* a child that ignores SIGTERM,
* a background child (``sh -c '...; exec sleep 60' &``),
* a child that stopped itself (SIGSTOP),

then exits (variant ``exit``), or sleeps until ``--timeout 1 --grace 1``
stops it (variant ``timeout``: the main process dies of SIGTERM; variant
``timeout-ignore``: it ignores SIGTERM too, so the grace period runs out).
Right after seqbox exits, the bench counts the survivors (a zombie is dead:
PID 1 here does not reap orphans) and kills any it finds.

    python bench/kill_all.py [--backend all|cgroup2|cgroup1|poll] [--json]

Target (from the issue): 0 survivors on every backend, in every variant.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from benchlib import Doctor, Report, is_alive, ms, parser, remove_dir, run_seqbox, scratch_dir

MEMBERS = ("main", "daemon", "noterm", "background", "stopped")
VARIANTS: dict[str, list[str]] = {
    "exit": [],
    "timeout": ["--timeout", "1", "--grace", "1"],
    "timeout-ignore": ["--timeout", "1", "--grace", "1"],
}
EXPECTED = {"exit": (0, "ok"), "timeout": (124, "timeout"), "timeout-ignore": (124, "timeout")}
TREE = r'''
import os, signal, subprocess, sys, time
mode, d = sys.argv[1], sys.argv[2]

def me(name):
    """Write "pid starttime" of this process to d/name (atomically)."""
    with open("/proc/self/stat") as f:
        st = f.read()
    start = st[st.rfind(")") + 2:].split()[19]
    tmp = os.path.join(d, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()} {start}\n")
    os.rename(tmp, os.path.join(d, name))

def linger():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1)
    os._exit(0)

me("main")
# 1. a double-forked setsid daemon
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.chdir("/")
        me("daemon")
        linger()
    os._exit(0)
os.waitpid(pid, 0)
# 2. a child that ignores SIGTERM
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    me("noterm")
    linger()
# 3. a background child, as `cmd &` in a shell
bg = os.path.join(d, "background")
subprocess.Popen(["sh", "-c", 'echo "$$ $(cut -d" " -f22 /proc/$$/stat)" > "$1.tmp" && '
                  'mv "$1.tmp" "$1" && exec sleep 60', "sh", bg])
# 4. a child that stops itself
if os.fork() == 0:
    me("stopped")
    os.kill(os.getpid(), signal.SIGSTOP)
    linger()
deadline = time.monotonic() + 10
while time.monotonic() < deadline and not all(
        os.path.exists(os.path.join(d, n)) for n in ("daemon", "noterm", "background", "stopped")):
    time.sleep(0.005)
if mode == "exit":
    sys.exit(0)
if mode == "timeout-ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(30)
'''


def read_members(d: str) -> dict[str, tuple[int, int]]:
    found = {}
    for name in MEMBERS:
        try:
            with open(os.path.join(d, name), encoding="ascii") as f:
                pid, start = f.read().split()
            found[name] = (int(pid), int(start))
        except (OSError, ValueError):
            continue
    return found


def one(report: Report, backend: str, variant: str, tree: str, base: str) -> dict[str, Any]:
    d = os.path.join(base, f"{backend}-{variant}")
    os.mkdir(d)
    run = run_seqbox(
        report,
        ["--backend", backend, "--mem", "512M", *VARIANTS[variant]],
        [sys.executable, tree, variant, d],
        cwd=base,
    )
    members = read_members(d)
    survivors = [name for name, (pid, start) in members.items() if is_alive(pid, start)]
    time.sleep(0.5)
    later = [name for name, (pid, start) in members.items() if is_alive(pid, start)]
    for name in later:  # the bench's own processes: clean up what seqbox left
        pid, start = members[name]
        if is_alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    missing = [name for name in MEMBERS if name not in members]
    code, status = EXPECTED[variant]
    label = f"{backend}, {variant}"
    print(
        f"-- {label}: exit {run.returncode}, seqbox wall {ms(run.wall_s)}, tree members "
        f"{len(members)}/{len(MEMBERS)} started, alive right after seqbox exited: "
        f"{', '.join(survivors) or 'none'}; 0.5 s later: {', '.join(later) or 'none'}"
    )
    for line in run.stderr.strip().splitlines()[-3:]:
        print(f"   stderr: {line}")
    if missing:
        print(f"   warning: never started (setup failed or killed too early): {', '.join(missing)}")
    report.check(
        f"survivors, {label}",
        not survivors and not missing,
        f"{len(survivors)} ({', '.join(survivors) or 'none'})"
        + (f"; {len(missing)} members never started" if missing else ""),
        "0",
    )
    report.check(f"exit code, {label}", run.returncode == code, str(run.returncode), str(code))
    return {
        "backend": backend,
        "variant": variant,
        "exit_code": run.returncode,
        "wall_s": run.wall_s,
        "started": sorted(members),
        "survivors": survivors,
        "survivors_after_0.5s": later,
        "expected_status": status,
    }


def control(report: Report, tree: str, base: str) -> int:
    """The same tree without seqbox: the bench must see the survivors (then kills them)."""
    d = os.path.join(base, "control")
    os.mkdir(d)
    subprocess.run([sys.executable, tree, "exit", d], cwd=base, check=False)
    members = read_members(d)
    alive = [name for name, (pid, start) in members.items() if is_alive(pid, start)]
    for name in alive:
        pid, _ = members[name]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print(
        f"-- control, no seqbox: {len(alive)} survivors ({', '.join(alive)}), killed by the "
        f"bench; {len(MEMBERS) - 1} expected, so the counts below can be trusted"
    )
    report.results["control_survivors"] = alive
    return len(alive)


def main() -> int:
    p = parser(__doc__.splitlines()[0], ("cgroup2", "cgroup1", "poll"))
    args = p.parse_args()
    report = Report("kill_all")
    doctor = Doctor()
    backends = doctor.pick(args.backend, ("cgroup2", "cgroup1", "poll"))
    base = scratch_dir("kill")
    tree = os.path.join(base, "tree.py")
    with open(tree, "w", encoding="utf-8") as f:
        f.write(TREE)
    report.results["runs"] = []
    try:
        seen = control(report, tree, base)
        report.check(
            "control run without seqbox leaves survivors (bench sanity)",
            seen == len(MEMBERS) - 1,
            str(seen),
            str(len(MEMBERS) - 1),
        )
        for backend in backends:
            for variant in VARIANTS:
                report.results["runs"].append(one(report, backend, variant, tree, base))
    finally:
        remove_dir(base)
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
