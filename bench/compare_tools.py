"""What other tools add to a command's start-up, and what they leave running,
beside ``seqbox run``.

1. Start-up: median of N runs of ``TOOL ... true`` minus the median of N bare
   ``true`` (runs interleaved round-robin after one warm-up round).
2. Leftovers: ``TOOL ... sh -c 'setsid sleep & sleep & exit 0'``: how many of the
   two background processes are still alive when the tool has returned (they are
   killed afterwards).

For the tools of the README's comparison that this machine has: ``seqbox run --mem
256M``, ``timeout 60``, ``flock FILE``, GNU parallel's ``sem --id ... -j1 --fg``,
``systemd-run --scope`` (only where systemd runs) and BenchExec's ``runexec`` (only
when on PATH).

    python bench/compare_tools.py [--runs 21]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time

from benchlib import bench_env, median, ms, seqbox_argv


def _time(argv: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    res = subprocess.run(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}")
    return elapsed


def tools(scratch: str) -> dict[str, list[str]]:
    true = shutil.which("true") or "/bin/true"
    seqbox, _ = seqbox_argv()
    found = {"true": [true], "seqbox run --mem 256M": [*seqbox, "run", "--mem", "256M", "--", true]}
    if shutil.which("timeout"):
        found["timeout 60"] = ["timeout", "60", true]
    if shutil.which("flock"):
        found["flock FILE"] = ["flock", os.path.join(scratch, "lock"), true]
    if shutil.which("sem"):
        found["sem --id X -j1 --fg"] = ["sem", "--will-cite", "--id", "seqbox-bench", "-j1", "--fg", true]
    if shutil.which("systemd-run") and os.path.isdir("/run/systemd/system"):
        found["systemd-run --scope"] = ["systemd-run", "--quiet", "--scope", "-p", "MemoryMax=256M", true]
    if shutil.which("runexec"):
        found["runexec --no-container"] = ["runexec", "--no-container", "--memlimit", "256MB", "--", true]
    return found


def _leftovers(argv: list[str], env: dict[str, str], cwd: str, marker: int) -> int:
    """How many of a setsid daemon and a background child outlive ``argv``."""
    script = f"setsid sleep {marker}.1 & sleep {marker}.2 & exit 0"
    subprocess.run(
        [*argv, "sh", "-c", script],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    time.sleep(0.5)
    alive = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
        except OSError:
            continue
        if words[:1] == [b"sleep"] and words[1:2] in ([f"{marker}.1".encode()], [f"{marker}.2".encode()]):
            alive += 1
            os.kill(int(pid), signal.SIGKILL)
    return alive


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--runs", type=int, default=21)
    runs = args.parse_args().runs
    scratch = tempfile.mkdtemp(prefix="seqbox-compare-")
    env = bench_env({"HOME": scratch})
    try:
        commands = tools(scratch)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(runs + 1):
            for name, argv in commands.items():
                elapsed = _time(argv, env, scratch)
                if round_:  # the first round warms up
                    samples[name].append(elapsed)
        base = median(samples["true"])
        print(f"start-up cost over a bare `true` ({ms(base)}), median of {runs}, {os.cpu_count()} CPUs;")
        print("left running: of a setsid daemon and a background child, when the tool returned")
        for number, (name, values) in enumerate(samples.items()):
            if name != "true":
                left = _leftovers(commands[name][:-1], env, scratch, 3000 + number)
                print(f"  {name:<26} {ms(median(values) - base):>10}   left running: {left} of 2")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
