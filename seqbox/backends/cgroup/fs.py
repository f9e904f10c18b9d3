"""The cgroup filesystem: pure parsers of the kernel's text files, and small
read/write helpers that turn OSErrors into BackendErrors naming the file.

Parsers take text and return data, so they are tested on canned kernel output.
"""

from __future__ import annotations

import errno
import os
import signal

from seqbox.errors import BackendError

V1_CONTROLLERS = frozenset(
    {
        "memory",
        "pids",
        "cpu",
        "cpuacct",
        "freezer",
        "cpuset",
        "blkio",
        "devices",
        "net_cls",
        "net_prio",
        "perf_event",
        "hugetlb",
        "rdma",
        "misc",
    }
)
UNIFIED = ""  # the key of the cgroup v2 hierarchy in parse_proc_cgroup's result
#: cgroup v1 says "no limit" with a huge page-aligned number (2^63 - 4096 on
#: x86-64); its page counter's maximum starts here
UNLIMITED_V1 = 1 << 62
#: the process's own limits, not the cgroup's: raised as they are, for the CLI to
#: explain (a backend short of descriptors is no reason to fall back to another,
#: which would be as short of them)
SYSTEM_LIMITS = frozenset({errno.EMFILE, errno.ENFILE})


class Mount:
    """One cgroup or cgroup2 mount from /proc/self/mountinfo."""

    __slots__ = ("controllers", "fstype", "path", "read_only", "root")

    def __init__(
        self, path: str, root: str, fstype: str, controllers: frozenset[str], read_only: bool
    ) -> None:
        self.path = path
        self.root = root
        self.fstype = fstype
        self.controllers = controllers
        self.read_only = read_only

    def __repr__(self) -> str:
        return f"Mount({self.path!r}, {self.fstype}, {sorted(self.controllers)}, ro={self.read_only})"


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup (v1) and cgroup2 mounts in /proc/self/mountinfo's text."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 3:
            continue
        fstype = tail[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mount_options = fields[5].split(",")
        super_options = tail[2].split(",")
        read_only = "ro" in mount_options or "ro" in super_options
        controllers = frozenset(opt for opt in super_options if opt in V1_CONTROLLERS)
        mounts.append(Mount(_unescape(fields[4]), _unescape(fields[3]), fstype, controllers, read_only))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup -> {controller: path}; the v2 hierarchy's key is ``""``.

    ``4:memory:/a`` gives ``{"memory": "/a"}``; ``2:cpu,cpuacct:/`` gives both
    ``cpu`` and ``cpuacct``; ``0::/b`` gives ``{"": "/b"}``.
    """
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[UNIFIED] = path
            continue
        for name in controllers.split(","):
            paths[name] = path
    return paths


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.events, memory.oom_control, cpu.stat,
    cgroup.events, memory.stat) -> {key: int}. Non-numeric values are skipped."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key and (value.isdigit() or (value.startswith("-") and value[1:].isdigit())):
            values[key] = int(value)
    return values


def parse_limit(text: str) -> int | None:
    """A limit file (memory.max, pids.max, memory.swap.max; v1's
    memory.limit_in_bytes) -> the limit, or None for none: ``max``, v1's huge
    number, or no number at all."""
    value = first_int(text)
    return None if value is None or value >= UNLIMITED_V1 else value


def first_int(text: str | None) -> int | None:
    """Pure: the number a one-value file starts with (memory.current,
    pids.peak, cpuacct.usage...), or None when there is none."""
    words = text.split(maxsplit=1) if text else None
    if not words:
        return None
    try:
        return int(words[0])
    except ValueError:
        return None


def parse_cpu_max(text: str) -> tuple[int | None, int]:
    """cpu.max ``"150000 100000"`` or ``"max 100000"`` -> (quota or None, period)."""
    quota, _, period = text.strip().partition(" ")
    return (None if quota == "max" else int(quota)), int(period or 100000)


def parse_pids(text: str) -> list[int]:
    """cgroup.procs / tasks -> pids."""
    return [int(word) for word in text.split()]


def host_path(mount: Mount, cgroup_path: str) -> str:
    """Where the cgroup ``cgroup_path`` (as in /proc/self/cgroup) is on disk."""
    root = mount.root.rstrip("/")
    rel = cgroup_path
    if root and (rel == root or rel.startswith(root + "/")):
        rel = rel[len(root) :]
    return mount.path.rstrip("/") + (rel if rel.startswith("/") else "/" + rel).rstrip("/")


class OwnCgroup:
    """This process's cgroup in one hierarchy: the mount and where the cgroup is
    on disk. ``key`` is the /proc/self/cgroup key (a v1 controller, or
    :data:`UNIFIED` for the v2 hierarchy)."""

    __slots__ = ("key", "mount", "path")

    def __init__(self, key: str, mount: Mount, path: str) -> None:
        self.key = key
        self.mount = mount
        self.path = path

    def __repr__(self) -> str:
        return f"OwnCgroup({self.key!r}, {self.path!r})"


def own_cgroups_in(mount_list: list[Mount], self_paths: dict[str, str]) -> list[OwnCgroup]:
    """Pure: my cgroup in each mounted hierarchy, from the mounts and the parsed
    /proc/self/cgroup. One entry per v1 controller (co-mounted ones share a
    path), one for the unified hierarchy (its first mount)."""
    found: list[OwnCgroup] = []
    keys: set[str] = set()
    for mount in mount_list:
        if mount.fstype == "cgroup":
            for controller in sorted(mount.controllers):
                if controller in self_paths and controller not in keys:
                    keys.add(controller)
                    found.append(OwnCgroup(controller, mount, host_path(mount, self_paths[controller])))
        elif mount.fstype == "cgroup2" and UNIFIED in self_paths and UNIFIED not in keys:
            keys.add(UNIFIED)
            found.append(OwnCgroup(UNIFIED, mount, host_path(mount, self_paths[UNIFIED])))
    return found


def own_cgroups() -> list[OwnCgroup]:
    """My cgroup in each hierarchy, now (seqbox may have moved itself into a leaf)."""
    return own_cgroups_in(mounts(), parse_proc_cgroup(read("/proc/self/cgroup")))


def own_cgroup_names() -> set[str]:
    """Every path component of this process's cgroups, read now (all hierarchies)."""
    names: set[str] = set()
    for path in parse_proc_cgroup(try_read("/proc/self/cgroup") or "").values():
        names.update(part for part in path.split("/") if part)
    return names


def kill_at_once(path: str) -> bool:
    """SIGKILL the whole cgroup v2 tree ``path`` in one write (``cgroup.kill``,
    Linux 5.14); False where that cannot be done (then kill it process by
    process, :func:`kill_until_empty`)."""
    kill = os.path.join(path, "cgroup.kill")
    try:
        write(kill, "1")
        return True
    except (BackendError, OSError):
        return False


def kill_until_empty(path: str, rounds: int = 100, pause: float = 0.0) -> bool:
    """SIGKILL every process in the cgroup tree ``path``, again and again until
    none is left (a process may fork between listing and kill), then wait for
    each to be gone (a task leaves the cgroup a moment before it stops
    running). True when empty."""
    import time

    killed: set[int] = set()
    empty = False
    for _ in range(rounds):
        pids = tree_pids(path)
        if not pids:
            empty = True
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        if pause:
            time.sleep(pause)
    from seqbox.backends.procinfo import wait_gone

    wait_gone(sorted(killed))
    return empty or not tree_pids(path)


# -- reading and writing, with errors that name the file ---------------------


class OpenFiles:
    """Files the supervisor reads again and again (usage, events): kept open
    and read with one pread each, instead of open + read + close."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def open(self, key: str, path: str) -> bool:
        try:
            self._fds[key] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            return True
        except OSError:
            return False

    def fd(self, key: str) -> int | None:
        return self._fds.get(key)

    def text(self, key: str) -> str | None:
        fd = self._fds.get(key)
        if fd is None:
            return None
        chunks, offset = [], 0
        try:
            while True:
                chunk = os.pread(fd, 65536, offset)
                chunks.append(chunk)
                if len(chunk) < 65536:
                    break
                offset += len(chunk)
        except OSError:
            return None
        return b"".join(chunks).decode("ascii", "replace")

    def number(self, key: str) -> int | None:
        return first_int(self.text(key))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _system_limit(err: OSError) -> None:
    """Raise ``err`` itself when it is one of :data:`SYSTEM_LIMITS`."""
    if err.errno in SYSTEM_LIMITS:
        raise err


def read(path: str) -> str:
    """The file's text. The kernel's paths in it are bytes, decoded as
    os.fsdecode does: a mount point named in UTF-8 (or in no encoding at all)
    anywhere on the machine shows in /proc/self/mountinfo."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError as err:
        _system_limit(err)
        raise BackendError(f"cannot read {path}: {err.strerror}") from None


def read_int_or_none(path: str) -> int | None:
    """The first number in the file, or None when it is missing or not a number."""
    return first_int(try_read(path))


def remove_tree(path: str, attempts: int = 200) -> None:
    """Remove a cgroup and the cgroups below it (deepest first)."""
    if not os.path.isdir(path):
        return
    for dirpath, _, _ in os.walk(path, topdown=False):
        remove_dir(dirpath, attempts)


def tree_pids(path: str) -> list[int]:
    """Every process in the cgroup ``path`` and the cgroups below it."""
    pids: set[int] = set()  # v1 may list a process once per thread
    for dirpath, _, _ in os.walk(path):
        pids.update(parse_pids(try_read(os.path.join(dirpath, "cgroup.procs")) or ""))
    return sorted(pids)


def write_checked(path: str, value: str, tolerance: int = 0) -> None:
    """Write a limit and read it back: a silently ignored limit is the worst
    failure. Numbers may differ by ``tolerance`` (the kernel rounds memory to
    pages); anything else must come back as written."""
    write(path, value)
    got = read(path).strip()
    if got.split() == value.split():
        return
    if tolerance and value.isdigit() and got.isdigit() and abs(int(got) - int(value)) <= tolerance:
        return
    raise BackendError(f"{path}: wrote {value}, the kernel kept {got}")


_mounts: list[Mount] | None = None


def mounts() -> list[Mount]:
    """This process's cgroup mounts (read once: they do not change under a run)."""
    global _mounts
    if _mounts is None:
        _mounts = parse_mountinfo(read("/proc/self/mountinfo"))
    return _mounts


def try_read(path: str) -> str | None:
    """The file's text (as :func:`read` decodes it), or None when it does not
    exist or cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as err:
        _system_limit(err)
        raise BackendError(f"cannot open {path}: {err.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as err:
        _system_limit(err)
        raise BackendError(f"cannot write {value!r} to {path}: {err.strerror}") from None
    finally:
        os.close(fd)


def make_dir(path: str, exist_ok: bool = False) -> None:
    try:
        os.mkdir(path)
    except OSError as err:
        if exist_ok and isinstance(err, FileExistsError):
            return
        _system_limit(err)
        raise BackendError(f"cannot create cgroup {path}: {err.strerror}") from None


def remove_dir(path: str, attempts: int = 200) -> None:
    """rmdir a cgroup, retrying while the kernel finishes tearing down its tasks."""
    import time

    delay = 0.0005
    for _ in range(attempts):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise BackendError(f"cannot remove cgroup {path}: {err.strerror}") from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    raise BackendError(f"cannot remove cgroup {path}: still busy")


class Into:
    """A cgroup v2 directory to create a child in: ``dir_fd`` for
    clone3(CLONE_INTO_CGROUP), ``procs_fd`` (its cgroup.procs) for the fallback."""

    __slots__ = ("dir_fd", "procs_fd")

    def __init__(self, dir_fd: int, procs_fd: int) -> None:
        self.dir_fd = dir_fd
        self.procs_fd = procs_fd


def open_into(path: str) -> Into:
    """What the fork needs to create a child inside the cgroup v2 ``path``."""
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        _system_limit(err)
        raise BackendError(f"cannot open {path}: {err.strerror}") from None
    try:
        return Into(dir_fd, open_procs(path))
    except BaseException:
        os.close(dir_fd)
        raise


def close_into(into: Into | None) -> None:
    if into is not None:
        os.close(into.dir_fd)
        os.close(into.procs_fd)


def open_procs(path: str, v1: bool = False) -> int:
    """An O_WRONLY fd for a freshly forked child to join ``path`` before exec.

    On cgroup v1 that is ``tasks``: moving one thread (the single-threaded
    child, writing ``0``) skips the kernel's global threadgroup lock, whose
    write side waits for an RCU grace period (5-15 ms measured) on every
    ``cgroup.procs`` write.
    """
    target = os.path.join(path, "tasks" if v1 else "cgroup.procs")
    try:
        return os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as err:
        _system_limit(err)
        raise BackendError(f"cannot open {target}: {err.strerror}") from None
