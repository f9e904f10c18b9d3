"""What crashed runs leave behind, and removing it.

A run's cgroups are named ``seqbox-<project key>-<UTC time>-<supervisor pid>``
(``-<try>`` for retries): the name says whose they are. A cgroup whose
supervisor is gone (that pid is dead, or now belongs to a process that started
later) is a leftover: its processes are killed and the cgroup removed. So is a
cgroup v2 ``seqbox-sup-<pid>`` leaf whose seqbox has exited.

A poll run's tree has no cgroup: its record of members
(seqbox/backends/treerecord.py) carries the same name, in the state
directory's ``trees/``, and is a leftover by the same rule.

``seqbox run`` removes its own project's leftovers before it starts;
``seqbox clean`` removes everyone's (that it may) and the queue's dead tickets.
"""

from __future__ import annotations

import os
import time

from seqbox.backends import cgroupfs, procinfo, treerecord
from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.records import Entry

PREFIX = "seqbox-"
SUP_PREFIX = "seqbox-sup-"
#: the parent cgroup of a lock with a budget (seqbox/ceiling.py), its runs' cgroups inside
LOCK_PREFIX = "seqboxlock-"
TIME_FORMAT = "%Y%m%dT%H%M%S"
CLOCK_SLACK_S = 2.0


def run_stamp() -> str:
    """The time part of a run id (UTC, so clock zones never matter)."""
    return time.strftime(TIME_FORMAT, time.gmtime())


def owner_alive(pid: int, stamp: str) -> bool:
    """Whether the seqbox that made a cgroup at ``stamp`` (UTC) with ``pid`` still runs."""
    import calendar  # with datetime and locale: 4 ms, so only when a cgroup is in question

    started = procinfo.started_epoch(pid)
    if started is None or not procinfo.is_alive(pid, None):
        return False
    made = calendar.timegm(time.strptime(stamp, TIME_FORMAT))
    return started <= made + CLOCK_SLACK_S


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _stamp(text: str) -> bool:
    """``20261130T055830``: a run's UTC start time."""
    return len(text) == 15 and text[8] == "T" and _digits(text[:8]) and _digits(text[9:])


def parse_name(name: str) -> tuple[str, str, int] | None:
    """(project key, time, pid) of a run's cgroup or record name,
    ``seqbox-<key>-<time>-<pid>`` (maybe ``-<n>`` after it), or None.
    (By hand, not with ``re``: importing it costs every run milliseconds.)"""
    if not name.startswith(PREFIX) or "\n" in name:
        return None
    parts = name[len(PREFIX) :].split("-")
    if len(parts) >= 3 and _stamp(parts[-2]) and _digits(parts[-1]):
        key, stamp, pid = parts[:-2], parts[-2], parts[-1]
    elif len(parts) >= 4 and _stamp(parts[-3]) and _digits(parts[-2]) and _digits(parts[-1]):
        key, stamp, pid = parts[:-3], parts[-3], parts[-2]
    else:
        return None
    project_key = "-".join(key)
    return (project_key, stamp, int(pid)) if project_key else None


def is_leftover(name: str, project_key: str | None = None) -> bool:
    parsed = parse_name(name)
    if parsed is not None:
        key, stamp, pid = parsed
        if project_key is not None and key != project_key:
            return False
        return not owner_alive(pid, stamp)
    sup = name[len(SUP_PREFIX) :] if name.startswith(SUP_PREFIX) else ""
    if _digits(sup) and project_key is None:
        return procinfo.started_epoch(int(sup)) is None
    return False


def places() -> list[str]:
    """Directories where seqbox creates cgroups, as seen from this process: its
    own cgroup in each writable hierarchy and, in the unified one, also its
    parent and the root (cgroup v2 runs go beside a shared cgroup, or into the
    root)."""
    paths: set[str] = set()
    try:
        own = cgroupfs.own_cgroups()
    except BackendError:  # no /proc/self/cgroup: no cgroups here
        return []
    for cgroup in own:
        if cgroup.mount.read_only:
            continue
        paths.add(cgroup.path)
        if cgroup.key == cgroupfs.UNIFIED:
            paths.update({os.path.dirname(cgroup.path) if cgroup.path != cgroup.mount.path else cgroup.path,
                          cgroup.mount.path})  # fmt: skip
            paths.update(delegated_scopes(cgroup.path))
    return sorted(p for p in paths if os.path.isdir(p))


def delegated_scopes(own: str) -> list[str]:
    """The transient scopes of this user's systemd manager (where an
    unprivileged seqbox runs, see scope.py), found from the user's
    slice among this cgroup's ancestors; only those that are ours."""
    uid = os.getuid()
    if uid == 0:
        return []
    slice_name = f"user-{uid}.slice"
    path = own
    while path not in ("", "/") and os.path.basename(path) != slice_name:
        path = os.path.dirname(path)
    if os.path.basename(path) != slice_name:
        return []
    apps = os.path.join(path, f"user@{uid}.service", "app.slice")
    try:
        names = os.listdir(apps)
    except OSError:
        return []
    # only transient scopes (systemd-run's and seqbox's own are run-*.scope), not every app's
    return [os.path.join(apps, name) for name in names if name.startswith("run-") and name.endswith(".scope")
            and os.access(os.path.join(apps, name), os.W_OK)]  # fmt: skip


def find(project_key: str | None = None, trees: str | None = None) -> list[str]:
    """Leftover cgroup directories and poll tree records (of one project, or
    of any); ``trees`` is the directory of the records."""
    found = []
    spots = places()
    for place in spots:  # grows: a lock's parent is looked into too
        try:
            names = os.listdir(place)
        except OSError:
            continue
        for name in names:
            if name.startswith(LOCK_PREFIX) and (project_key is None or name.endswith("@" + project_key)):
                spots.append(os.path.join(place, name))  # runs of a lock with a budget (seqbox/ceiling.py)
            elif name.startswith("seqbox-") and is_leftover(name, project_key):
                path = os.path.join(place, name)
                if os.path.isdir(path):
                    found.append(path)
    if trees is not None:
        try:
            names = os.listdir(trees)
        except OSError:
            names = []
        for name in names:
            stem = name.removesuffix(treerecord.SUFFIX)
            if name.startswith("seqbox-") and stem != name and is_leftover(stem, project_key):
                found.append(os.path.join(trees, name))
    return sorted(found)


def run_id_of(name: str) -> str | None:
    """The run id (``<UTC time>-<pid>``) in a cgroup's or record's name."""
    parsed = parse_name(name.removesuffix(treerecord.SUFFIX))
    return None if parsed is None else f"{parsed[1]}-{parsed[2]}"


def end_run(entry: Entry) -> list[str]:
    """End the tree of a run whose supervisor died holding its slot: its
    cgroups, or its poll record and the processes carrying its run id.
    Returns what was removed."""
    removed = []
    for path in entry.get("cgroups", []):
        if os.path.basename(path).startswith("seqbox-") and os.path.isdir(path) and remove(path):
            removed.append(path)
    tree = entry.get("tree")
    if tree is not None and tree.endswith(treerecord.SUFFIX) and remove(tree):
        removed.append(tree)
    run_id = entry.get("run_id")
    if run_id is not None and treerecord.end_tree([], run_id):
        removed.append(f"processes of run {run_id}")
    return removed


def remove(path: str) -> bool:
    """Kill every process in the leftover cgroup tree (or recorded poll tree)
    and remove it."""
    if path.endswith(treerecord.SUFFIX):
        treerecord.end_tree(treerecord.read_record(path), run_id_of(os.path.basename(path)))
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        return True
    from seqbox.suspend import thaw_cgroup

    thaw_cgroup(path)  # a tree its crashed run had frozen cannot die frozen
    kill = os.path.join(path, "cgroup.kill")
    if os.path.exists(kill):
        try:
            cgroupfs.write(kill, "1")
        except BackendError:  # killed one by one below
            pass
    cgroupfs.kill_until_empty(path, rounds=50, pause=0.01)
    try:
        cgroupfs.remove_tree(path, attempts=50)
        return True
    except BackendError:  # reported by the caller
        return False


# -- whole leftovers: every hierarchy's directory of one crashed run ------------------

#: how deep ``seqbox clean`` looks for seqbox cgroups below each hierarchy's root
SEARCH_DEPTH = 8


class Leftover:
    """One crashed run's cgroups: the same name in each hierarchy it used."""

    __slots__ = ("name", "paths")

    def __init__(self, name: str, paths: list[str]) -> None:
        self.name = name
        self.paths = sorted(paths)

    def pids(self) -> list[int]:
        """The processes still running in it (in any of its hierarchies)."""
        found: set[int] = set()
        for path in self.paths:
            found.update(cgroupfs.tree_pids(path))
        return sorted(found)

    def where(self) -> str:
        """The hierarchies it spans, for messages: ``memory, pids, unified``."""
        names = []
        for path in self.paths:
            mount = _mount_of(path)
            if mount is None:
                names.append(path)
            elif mount.fstype == "cgroup2":
                names.append("unified")
            else:
                names.append(",".join(sorted(mount.controllers)) or os.path.basename(mount.path))
        return ", ".join(names)


def _mount_of(path: str) -> cgroupfs.Mount | None:
    best = None
    for mount in cgroupfs.mounts():
        if (path == mount.path or path.startswith(mount.path + "/")) and (
            best is None or len(mount.path) > len(best.path)
        ):
            best = mount
    return best


def command_of(pid: int) -> str | None:
    """A process's command line, or None when it is gone."""
    text = cgroupfs.try_read(f"/proc/{pid}/cmdline")
    if not text:
        return None
    return " ".join(text.rstrip("\0").split("\0"))


def _search(root: str, depth: int) -> list[str]:
    """``seqbox-*`` directories below ``root`` (not below each other)."""
    found = []
    stack = [(root, 0)]
    while stack:
        path, level = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.startswith("seqbox-"):
                found.append(entry.path)
            elif level < depth:
                stack.append((entry.path, level + 1))
    return found


def find_whole(project_key: str | None = None, everywhere: bool = False) -> list[Leftover]:
    """Leftovers grouped by run. With ``everywhere``, every writable cgroup
    hierarchy is searched, not only where this process's cgroups are: a run
    started from another login session made its cgroups under that session's
    path, which may differ per controller."""
    paths = find(project_key)
    if everywhere:
        for mount in cgroupfs.mounts():
            if not mount.read_only:
                paths.extend(
                    p
                    for p in _search(mount.path, SEARCH_DEPTH)
                    if is_leftover(os.path.basename(p), project_key)
                )
    groups: dict[str, set[str]] = {}
    for path in paths:
        groups.setdefault(os.path.basename(path), set()).add(path)
    return [Leftover(name, list(group)) for name, group in sorted(groups.items())]


def remove_whole(leftover: Leftover) -> tuple[list[str], list[str]]:
    """Kill what runs in every one of the leftover's cgroups, then remove them
    all. Returns (the commands killed, the directories that could not be
    removed, each with the reason)."""
    pids = leftover.pids()
    commands = [c for c in (command_of(pid) for pid in pids) if c]
    from seqbox.suspend import thaw_cgroup

    for path in leftover.paths:
        thaw_cgroup(path)  # a frozen tree cannot die
    for path in leftover.paths:  # first kill everywhere: a process is in all of them
        kill = os.path.join(path, "cgroup.kill")
        if os.path.exists(kill):
            try:
                cgroupfs.write(kill, "1")
            except BackendError:
                pass
        cgroupfs.kill_until_empty(path, rounds=50, pause=0.01)
    failed = []
    for path in leftover.paths:
        try:
            cgroupfs.remove_tree(path, attempts=50)
        except BackendError as err:
            failed.append(f"{path} ({err})")
    return commands, failed


def orphaned_trees(project_key: str, trees: str) -> list[tuple[str, list[int]]]:
    """Crashed poll runs of the project whose processes still run: (the
    record's name, their pids). No cgroup holds them: the record's members
    still alive as the same processes, and those carrying the run id."""
    found = []
    for path in find(project_key, trees):
        if path.endswith(treerecord.SUFFIX):
            pids = _tree_pids(path)
            if pids:
                found.append((os.path.basename(path).removesuffix(treerecord.SUFFIX), pids))
    return found


def _tree_pids(path: str) -> list[int]:
    pids = {pid for pid, start in treerecord.read_record(path) if procinfo.is_alive(pid, start)}
    run_id = run_id_of(os.path.basename(path))
    if run_id is not None:
        pids.update(treerecord.carriers(run_id))
    return sorted(pids)


def tree_commands(path: str) -> list[str]:
    """The commands of a crashed poll run's processes still alive."""
    return [c for c in (command_of(pid) for pid in _tree_pids(path)) if c]
