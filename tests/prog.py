"""Small programs the tests run under seqbox: ``python tests/prog.py NAME ARGS...``.

Each one does one thing the contract talks about (grow memory fast, build a
process family that tries to escape, trap a signal, ...) and reports what it
did through files, so the test can check afterwards what survived.

Kept free of imports beyond the standard library's cheapest modules: it starts
many times per test run.
"""

from __future__ import annotations

import mmap
import os
import signal
import sys
import time

MIB = 1 << 20
PAGE = 4096
#: a hog never takes more than this, so a seqbox that fails to kill it cannot
#: take the machine (or a 2 GiB test VM) down
HOG_CAP_MIB = 1024


def _opts(args: list[str]) -> dict[str, str]:
    """``--key value`` pairs (every option takes a value)."""
    out: dict[str, str] = {}
    for i in range(0, len(args), 2):
        out[args[i].lstrip("-")] = args[i + 1]
    return out


def _touch(size: int, shared: bool = False) -> mmap.mmap:
    """``size`` bytes of anonymous memory, every page touched: private (like
    malloc) unless ``shared`` (MAP_SHARED, like shm and multiprocessing)."""
    flags = (mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE) | mmap.MAP_ANONYMOUS
    block = mmap.mmap(-1, size, flags=flags)
    for offset in range(0, size, PAGE):
        block[offset] = 1
    return block


def _bump(path: str) -> int:
    """Increment the counter in ``path``; return the new value."""
    try:
        with open(path) as f:
            n = int(f.read().strip() or 0)
    except FileNotFoundError:
        n = 0
    n += 1
    with open(path, "w") as f:
        f.write(f"{n}\n")
    return n


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()


def hog(o: dict[str, str]) -> int:
    """Allocate and touch ``--total`` MiB in ``--chunk`` MiB steps (default: until
    killed, capped), then hold it ``--hold`` seconds and exit 0. ``--shared 1``:
    shared anonymous memory instead of private. ``--pause-at MIB:SECONDS``: stop
    growing for SECONDS once, on reaching MIB."""
    if "count" in o:
        _bump(o["count"])
    chunk = int(o.get("chunk", "32")) * MIB
    total = min(int(o.get("total", str(HOG_CAP_MIB))), HOG_CAP_MIB) * MIB
    step_pause = float(o.get("pause", "0"))
    shared = o.get("shared") == "1"
    level, _, level_pause = o.get("pause-at", f"{total}:0").partition(":")
    blocks = []
    got = 0
    while got < total:
        size = min(chunk, total - got)
        blocks.append(_touch(size, shared))
        got += size
        if step_pause:
            time.sleep(step_pause)
        if got - size < int(level) * MIB <= got:
            time.sleep(float(level_pause))
    if "ready" in o:
        _append(o["ready"], "allocated")
    time.sleep(float(o.get("hold", "0")))
    return 0


def tree(o: dict[str, str]) -> int:
    """``--children`` processes, each touching ``--each`` MiB and sleeping; their
    pids go to ``--pids``. The parent sleeps too, after touching ``--own`` MiB
    before it forks (pages its children share with it, copy-on-write)."""
    pidfile = o["pids"]
    own = _touch(int(o.get("own", "0")) * MIB) if o.get("own", "0") != "0" else None
    each = int(o.get("each", "60")) * MIB
    hold = float(o.get("hold", "30"))
    for _ in range(int(o.get("children", "6"))):
        pid = os.fork()
        if pid == 0:
            try:
                _append(pidfile, str(os.getpid()))
                block = _touch(each) if each else None
                time.sleep(hold)
                del block
            finally:
                os._exit(0)
    time.sleep(hold)
    del own
    return 0


def family(o: dict[str, str]) -> int:
    """A family that tries to outlive its main process:

    * a background child (plain ``sleep``),
    * a child that ignores SIGTERM and SIGINT,
    * a double-forked daemon in its own session (``setsid``), whose parent exits.

    Their pids (and the main pid) are written to ``--pids`` at once, then the
    main process exits with ``--exit`` or, with ``--exit wait``, sleeps (ignoring
    SIGTERM if ``--main-ignores TERM``).
    """
    hold = float(o.get("hold", "60"))
    r, w = os.pipe()

    def child(ignore: bool, daemon: bool) -> None:
        pid = os.fork()
        if pid:
            return
        try:
            os.close(r)
            if daemon:
                os.setsid()
                if os.fork():
                    os._exit(0)  # the intermediate parent: the daemon is orphaned
            if ignore:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            kind = "daemon" if daemon else "ignorer" if ignore else "background"
            os.write(w, f"{kind} {os.getpid()}\n".encode())
            os.close(w)
            time.sleep(hold)
        finally:
            os._exit(0)

    child(ignore=False, daemon=False)
    child(ignore=True, daemon=False)
    child(ignore=False, daemon=True)
    os.close(w)
    data = b""
    while data.count(b"\n") < 3:
        chunk = os.read(r, 256)
        if not chunk:
            break
        data += chunk
    tmp = o["pids"] + ".tmp"
    with open(tmp, "w") as f:
        f.write(data.decode() + f"main {os.getpid()}\n")
    os.replace(tmp, o["pids"])  # readers never see half the family
    if o.get("main-ignores"):
        signal.signal(getattr(signal, "SIG" + o["main-ignores"]), signal.SIG_IGN)
    code = o.get("exit", "0")
    if code == "wait":
        while True:
            time.sleep(hold)
    return int(code)


def spawner(o: dict[str, str]) -> int:
    """Try to start ``--n`` sleeping children (fork); record in ``--out`` how many
    started and how many forks failed; write every pid to ``--pids``; wait
    ``--linger`` seconds and exit."""
    started = failed = 0
    with open(o["pids"], "a") as pids:
        for _ in range(int(o.get("n", "100"))):
            try:
                pid = os.fork()
            except OSError:
                failed += 1
                continue
            if pid == 0:
                try:
                    time.sleep(float(o.get("hold", "30")))
                finally:
                    os._exit(0)
            started += 1
            pids.write(f"{pid}\n")
            pids.flush()
    _append(o["out"], f"started {started} failed {failed}")
    time.sleep(float(o.get("linger", "0")))
    return 0  # the children stay behind: seqbox must end them


def bomb(o: dict[str, str]) -> int:
    """A fork bomb: every process forks as fast as it can, retrying (after
    ``--retry`` seconds) when fork fails, until ``--for`` seconds have passed
    (a safety net only)."""
    end = time.monotonic() + float(o.get("for", "20"))
    pause = float(o.get("retry", "0.05"))
    while time.monotonic() < end:
        try:
            os.fork()
        except OSError:
            time.sleep(pause)
    os._exit(0)


def trap(o: dict[str, str]) -> int:
    """Trap ``--signal``: on it, write its name to ``--marker`` and exit ``--exit``
    (default 0). Writes ``--ready`` once the handler is in place."""
    signum = getattr(signal, "SIG" + o["signal"])

    def handler(sig: int, frame: object) -> None:
        _append(o["marker"], signal.Signals(sig).name)
        os._exit(int(o.get("exit", "0")))

    signal.signal(signum, handler)
    if "ready" in o:
        _append(o["ready"], str(os.getpid()))
    while True:
        time.sleep(1)


def ignore_term(o: dict[str, str]) -> int:
    """Ignore SIGTERM (children inherit that), say ready, sleep."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "ready" in o:
        _append(o["ready"], str(os.getpid()))
    time.sleep(float(o.get("hold", "60")))
    return 0


def ttyinfo(o: dict[str, str]) -> int:
    """Print whether fds 0-2 are TTYs and whether we are in the terminal's
    foreground process group, then wait for a signal."""
    try:
        foreground = os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        foreground = False
    ttys = "".join("T" if os.isatty(fd) else "-" for fd in range(3))
    print(f"TTYINFO {ttys} fg={int(foreground)} pid={os.getpid()}", flush=True)
    time.sleep(float(o.get("hold", "60")))
    return 0


def fds(o: dict[str, str]) -> int:
    """Print the open file descriptors, one line, sorted."""
    listed = [int(name) for name in os.listdir("/proc/self/fd")]
    found = []
    for fd in listed:
        try:
            os.fstat(fd)  # the directory listdir used is closed again by now
        except OSError:
            continue
        found.append(fd)
    print(" ".join(map(str, sorted(found))), flush=True)
    return 0


def die(o: dict[str, str]) -> int:
    """Kill ourselves with ``--signal``, whatever we inherited: a suite started
    under nohup has SIGHUP ignored, and seqbox rightly passes that on."""
    sys.stdout.flush()
    sig = getattr(signal, "SIG" + o["signal"])
    if sig != signal.SIGKILL:
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    time.sleep(5)
    return 99


def counter(o: dict[str, str]) -> int:
    """Bump ``--count``; print the try number on stdout and stderr; exit 0 once
    the count reaches ``--ok-at`` (never by default), else ``--fail``."""
    n = _bump(o["count"])
    print(f"try {n} out", flush=True)
    print(f"try {n} err", file=sys.stderr, flush=True)
    if n >= int(o.get("ok-at", "1000000")):
        return 0
    return int(o.get("fail", "1"))


def live(o: dict[str, str]) -> int:
    """Print a line, then wait until the file ``--go`` exists, then print another:
    a test can only create ``--go`` after it saw the first line, live."""
    print("first", flush=True)
    print("first-err", file=sys.stderr, flush=True)
    deadline = time.monotonic() + float(o.get("max", "10"))
    while not os.path.exists(o["go"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("second", flush=True)
    return 0 if os.path.exists(o["go"]) else 3


V1_FILES = (
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "pids.max",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
)
V2_FILES = (
    "memory.max",
    "memory.swap.max",
    "memory.high",
    "memory.oom.group",
    "pids.max",
    "cpu.max",
)


def cgroupinfo(o: dict[str, str]) -> int:
    """Print (as JSON) the cgroups this process is in, and for each limit file the
    nearest cgroup, from ours up, that sets it: {file: [dir, value]}."""
    import json  # noqa: PLC0415 - this program starts many times per test run; only here is json needed

    mounts: dict[str, str] = {}  # controller ("" for v2) -> mount point
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                names = [""] if tail[0] == "cgroup2" else tail[2].split(",")
                for name in names:
                    mounts.setdefault(name, fields[4])
    dirs: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                if name in mounts:
                    dirs[name] = mounts[name] + path.rstrip("/") if path != "/" else mounts[name]
    limits: dict[str, list[str]] = {}

    def is_set(name: str, value: str) -> bool:
        if name == "cpu.cfs_period_us":
            return True
        if name == "memory.oom.group" and value == "0":
            return False
        return not (value.startswith("max") or value in ("-1", "9223372036854771712", "9223372036854775807"))

    for files in (V1_FILES, V2_FILES):
        for name in files:
            controller = name.split(".")[0]
            start = dirs.get("" if files is V2_FILES else controller)
            if start is None:
                continue
            path = start
            while path.startswith(mounts["" if files is V2_FILES else controller]):
                try:
                    with open(os.path.join(path, name)) as f:
                        value = f.read().strip()
                except OSError:
                    value = None
                if value is not None and is_set(name, value):
                    limits.setdefault(name, [path, value])
                    break
                if path == mounts["" if files is V2_FILES else controller]:
                    break
                path = os.path.dirname(path)
    print(json.dumps({"dirs": dirs, "limits": limits}), flush=True)
    return 0


def parent(o: dict[str, str], argv: list[str]) -> int:
    """Run ``argv`` as a child (``--daemon 1``: double-forked, in its own session),
    write its pid to ``--pids``, wait for it (not for a daemon), then exit
    ``--exit`` whatever became of it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        if o.get("daemon") == "1":
            os.setsid()
            if os.fork():
                os._exit(0)
        os.write(w, f"{os.getpid()}\n".encode())
        os.close(w)
        os.execv(argv[0], argv)
    os.close(w)
    child = int(os.read(r, 64).decode())
    _append(o["pids"], str(child))
    os.waitpid(pid, 0)
    time.sleep(float(o.get("hold", "0")))
    return int(o.get("exit", "0"))


def marked(o: dict[str, str]) -> int:
    """Write to ``--out`` the pids of the live (not zombie) processes whose
    environment holds ``--entry`` (NAME=VALUE), one per line."""
    entry = o["entry"].encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if entry not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X"):
            found.append(name)
    with open(o["out"], "w") as f:
        f.write("".join(f"{pid}\n" for pid in found))
    return 0


def _lines(path: str) -> int:
    try:
        with open(path) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def trio(o: dict[str, str]) -> int:
    """Three children: two hold ``--each`` MiB and sleep, the third (its pid the
    last line of ``--pids``) grows by ``--chunk`` MiB every ``--pause`` seconds
    up to ``--total`` MiB (default: until killed, capped), holds ``--hold``
    seconds and exits; the parent waits for all three."""
    pidfile = o["pids"]
    children = []
    for role in ("small", "small", "grows"):
        pid = os.fork()
        if pid == 0:
            try:
                _append(pidfile, f"{os.getpid()} {role}")
                if role == "small":
                    block = _touch(int(o.get("each", "8")) * MIB)
                    time.sleep(float(o.get("hold", "30")) + 30)
                    del block
                else:
                    hog({"chunk": o.get("chunk", "8"), "pause": o.get("pause", "0.05"),
                         "total": o.get("total", str(HOG_CAP_MIB)), "hold": o.get("hold", "0")})  # fmt: skip
            finally:
                os._exit(0)
        children.append(pid)
        while _lines(pidfile) < len(children):  # one at a time: "grows" last
            time.sleep(0.01)
    os.waitpid(children[-1], 0)
    for pid in children[:-1]:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    return 0


PROGRAMS = {
    "marked": marked,
    "trio": trio,
    "hog": hog,
    "tree": tree,
    "family": family,
    "spawner": spawner,
    "bomb": bomb,
    "trap": trap,
    "ignore-term": ignore_term,
    "ttyinfo": ttyinfo,
    "die": die,
    "counter": counter,
    "live": live,
    "cgroupinfo": cgroupinfo,
    "fds": fds,
}


if __name__ == "__main__":
    if sys.argv[1] == "parent":  # parent OPTIONS -- ARGV...
        split = sys.argv.index("--")
        sys.exit(parent(_opts(sys.argv[2:split]), sys.argv[split + 1 :]))
    sys.exit(PROGRAMS[sys.argv[1]](_opts(sys.argv[2:])))
