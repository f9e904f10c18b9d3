"""Launch overhead on the laptop path: ``seqbox run --mem 200M -- true`` as an
unprivileged user through the delegated systemd scope, against ``--backend
poll`` for the same user and against root (which makes its own cgroups), as
ratios measured in the same machine (made for the laptop lane's VM, where
absolute times are those of an emulated CPU: compare the ratios).

    python bench/laptop_overhead.py --user tester [--runs 11]

Run as root; the user's samples start as that user (uid switch in the forked
child), with its ``XDG_RUNTIME_DIR``, so seqbox finds its user manager. Runs
interleave round-robin after one warm-up round; medians are printed.
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--user", default="tester")
    ap.add_argument("--runs", type=int, default=11)
    opts = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (it compares root's path with the user's)")
    user = pwd.getpwnam(opts.user)
    python = sys.executable
    scratch = tempfile.mkdtemp(prefix="seqbox-laptop-bench-")
    os.chmod(scratch, 0o755)
    env_user = {
        "PATH": f"{os.path.dirname(python)}:/usr/bin:/bin",
        "HOME": user.pw_dir,
        "XDG_RUNTIME_DIR": f"/run/user/{user.pw_uid}",
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path=/run/user/{user.pw_uid}/bus",
        "SEQBOX_PROJECT": user.pw_dir,
    }
    env_root = {"PATH": env_user["PATH"], "HOME": "/root", "SEQBOX_PROJECT": scratch,
                "SEQBOX_STATE_DIR": os.path.join(scratch, "state")}  # fmt: skip
    seqbox = [python, "-m", "seqbox", "run", "--mem", "200M"]
    modes: dict[str, tuple[list[str], bool]] = {  # name -> (argv, as the user)
        "python -c pass (user)": ([python, "-c", "pass"], True),
        "systemd-run --user --scope true": (["systemd-run", "--user", "--scope", "-q", "--", "true"], True),
        "seqbox run, delegated scope (user, auto)": ([*seqbox, "--", "true"], True),
        "seqbox run --backend poll (user)": ([*seqbox, "--backend", "poll", "--", "true"], True),
        "seqbox run, root (auto: cgroup2)": ([*seqbox, "--", "true"], False),
    }
    way = subprocess.run(
        [*seqbox, "-v", "--", "true"],
        env=env_user,
        cwd=user.pw_dir,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    said = [line for line in way.stderr.splitlines() if "D-Bus" in line or "systemd-run" in line]
    print(f"the delegated scope, as -v says: {said[0] if said else '(nothing said: no scope?)'}")
    samples: dict[str, list[float]] = {name: [] for name in modes}
    for round_ in range(opts.runs + 1):
        for name, (argv, as_user) in modes.items():
            start = time.perf_counter()
            proc = subprocess.run(
                argv,
                env=env_user if as_user else env_root,
                cwd=user.pw_dir if as_user else scratch,
                user=user.pw_uid if as_user else None,
                group=user.pw_gid if as_user else None,
                extra_groups=[] if as_user else None,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                print(f"{name}: exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}")
            if round_:  # the first round warms caches
                samples[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    root = medians["seqbox run, root (auto: cgroup2)"]
    print(f"median of {opts.runs} runs each (interleaved):")
    for name, value in medians.items():
        print(f"  {name:<42} {value:6.3f} s   x{value / root:.2f} of root's")
    scope = medians["seqbox run, delegated scope (user, auto)"]
    poll = medians["seqbox run --backend poll (user)"]
    print(
        f"ratios: scope/root {scope / root:.2f}, poll/root {poll / root:.2f}, scope/poll {scope / poll:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
