"""What crashed runs leave behind, and removing it.

A run's cgroups are named ``seqbox-<project key>-<UTC time>-<supervisor pid>``
(``-<try>`` for retries): the name says whose they are. A cgroup whose
supervisor is gone (that pid is dead, or now belongs to a process that started
later) is a leftover: its processes are killed and the cgroup removed. So is a
cgroup v2 ``seqbox-sup-<pid>`` leaf whose seqbox has exited: any run removes it
when nothing is left in it (it names no project), ``seqbox clean`` also when
something is.

A poll run's tree has no cgroup: its record of members
(seqbox/backends/poll/treerecord.py) carries the same name, in the state
directory's ``trees/``, and is a leftover by the same rule.

``seqbox run`` removes its own project's leftovers before it starts;
``seqbox clean`` removes everyone's (that it may) and the queue's dead tickets.
"""

from __future__ import annotations

import os
import time

from seqbox.backends import procinfo
from seqbox.backends.base import LOCK_PREFIX, LOCK_SLICES, NAME_PREFIX, SUPERVISOR_PREFIX, lock_dir_parts
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.host import HAVE_PROC
from seqbox.backends.poll import treerecord
from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.records import Entry

TIME_FORMAT = "%Y%m%dT%H%M%S"
CLOCK_SLACK_S = 2.0


def run_stamp() -> str:
    """The time part of a run id (UTC, so clock zones never matter)."""
    return time.strftime(TIME_FORMAT, time.gmtime())


def owner_alive(pid: int, stamp: str) -> bool:
    """Whether the seqbox that made a cgroup at ``stamp`` (UTC) with ``pid`` still runs."""
    return _alive_since(pid, stamp_epoch(stamp))


def _alive_since(pid: int, made: int | None) -> bool:
    """Whether ``pid`` runs and started before ``made`` (seconds since the epoch)."""
    started = procinfo.started_epoch(pid)
    if started is None or made is None or not procinfo.is_alive(pid, None):
        return False
    return started <= made + CLOCK_SLACK_S


def owner_alive_inside(path: str, pid: int, made: int | None = None) -> bool:
    """Whether the cgroup tree ``path`` belongs to a live seqbox in another pid
    namespace (a container's, seen from the host, where the pid in its name
    means nothing): a process of the tree is in a namespace other than ours,
    where ``pid`` is a process that started before the cgroup was made
    (``made``, seconds since the epoch, when known). (A run's command that made
    a pid namespace of its own, as bubblewrap does, has no seqbox in it.)"""
    if not HAVE_PROC:
        return False
    namespaces = {procinfo.pid_namespace(member) for member in cgroupfs.tree_pids(path)}
    for namespace in namespaces - {procinfo.pid_namespace(), None}:
        here = procinfo.in_namespace(str(namespace)).get(pid)
        started = None if here is None else procinfo.started_epoch(here)
        if started is not None and (made is None or started <= made + CLOCK_SLACK_S):
            return True
    return False


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def stamp_epoch(text: str) -> int | None:
    """The seconds since the epoch of a run's UTC start time ``20261130T055830``
    (:data:`TIME_FORMAT`), or None when ``text`` is none.

    What ``calendar.timegm(time.strptime(text, TIME_FORMAT))`` says, by hand:
    those imports (calendar, datetime, locale, _strptime) cost 4-8 ms, and every
    run looks at the cgroups of the runs beside it (the one waiting behind it,
    while its command starts up)."""
    if len(text) != 15 or text[8] != "T" or not _digits(text[:8]) or not _digits(text[9:]):
        return None
    year, month, day = int(text[:4]), int(text[4:6]), int(text[6:8])
    hour, minute, second = int(text[9:11]), int(text[11:13]), int(text[13:])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if not (
        1 <= month <= 12 and 1 <= day <= month_days[month - 1] and hour < 24 and minute < 60 and second < 62
    ):
        return None
    # days from 1970-01-01 (the proleptic Gregorian calendar, as "days from civil")
    y = year - (month <= 2)
    era, year_of_era = divmod(y, 400)
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


def _stamp(text: str) -> bool:
    """``20261130T055830``: a run's UTC start time."""
    return stamp_epoch(text) is not None


def parse_name(name: str) -> tuple[str, str, int] | None:
    """(project key, time, pid) of a run's cgroup or record name,
    ``seqbox-<key>-<time>-<pid>`` (maybe ``-<n>`` after it), or None.
    (By hand, not with ``re``: importing it costs every run milliseconds.)"""
    if not name.startswith(NAME_PREFIX) or "\n" in name:
        return None
    parts = name[len(NAME_PREFIX) :].split("-")
    if len(parts) >= 3 and _stamp(parts[-2]) and _digits(parts[-1]):
        key, stamp, pid = parts[:-2], parts[-2], parts[-1]
    elif len(parts) >= 4 and _stamp(parts[-3]) and _digits(parts[-2]) and _digits(parts[-1]):
        key, stamp, pid = parts[:-3], parts[-3], parts[-2]
    else:
        return None
    project_key = "-".join(key)
    return (project_key, stamp, int(pid)) if project_key else None


def is_leftover(name: str, project_key: str | None = None, path: str | None = None) -> bool:
    """Whether the cgroup or record ``name`` (at ``path``) is a leftover of a
    run of ``project_key`` (of any project when None)."""
    parsed = parse_name(name)
    if parsed is not None:
        key, stamp, pid = parsed
        if project_key is not None and key != project_key:
            return False
        made = stamp_epoch(stamp)
        if _alive_since(pid, made):
            return False
        return path is None or not owner_alive_inside(path, pid, made)
    sup = name[len(SUPERVISOR_PREFIX) :] if name.startswith(SUPERVISOR_PREFIX) else ""
    if not _digits(sup) or procinfo.started_epoch(int(sup)) is not None:
        return False
    # a dead supervisor's own leaf: nobody's once empty (systemd trims a scope
    # it is in only some time after the scope empties)
    if project_key is not None:
        return path is not None and _empty(path)
    return path is None or not owner_alive_inside(path, int(sup))


def _empty(path: str) -> bool:
    """Whether the cgroup ``path`` holds no process and no cgroup."""
    try:
        with os.scandir(path) as entries:
            if any(entry.is_dir(follow_symlinks=False) for entry in entries):
                return False
    except OSError:
        return False
    return cgroupfs.try_read(os.path.join(path, "cgroup.procs")) == ""


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
    unprivileged seqbox runs, see backends/systemd/scope.py), found from the user's
    slice among this cgroup's ancestors; only those that are ours: in
    ``app.slice``, and in the slices of locks with a budget (seqbox/ceiling.py,
    ``seqboxlock.slice/seqboxlock-*.slice``)."""
    uid = os.getuid()
    if uid == 0:
        return []
    slice_name = f"user-{uid}.slice"
    path = own
    while path not in ("", "/") and os.path.basename(path) != slice_name:
        path = os.path.dirname(path)
    if os.path.basename(path) != slice_name:
        return []
    manager = os.path.join(path, f"user@{uid}.service")
    slices = [os.path.join(manager, "app.slice")]
    locks = os.path.join(manager, LOCK_SLICES)
    try:
        slices += [os.path.join(locks, name) for name in os.listdir(locks) if name.startswith(LOCK_PREFIX)]
    except OSError:
        pass
    found = []
    for where in slices:
        try:
            names = os.listdir(where)
        except OSError:
            continue
        # only transient scopes (systemd-run's and seqbox's own are run-*.scope), not every app's
        found += [os.path.join(where, name) for name in names if name.startswith("run-")
                  and name.endswith(".scope") and os.access(os.path.join(where, name), os.W_OK)]  # fmt: skip
    return found


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
            parts = lock_dir_parts(name) if name.startswith(LOCK_PREFIX) else None
            if parts is not None and (project_key is None or parts[1] == project_key):
                spots.append(os.path.join(place, name))  # runs of a lock with a budget (seqbox/ceiling.py)
            elif name.startswith(NAME_PREFIX):
                path = os.path.join(place, name)
                if is_leftover(name, project_key, path) and os.path.isdir(path):
                    found.append(path)
    if trees is not None:
        try:
            names = os.listdir(trees)
        except OSError:
            names = []
        for name in names:
            stem = name.removesuffix(treerecord.SUFFIX)
            if name.startswith(NAME_PREFIX) and stem != name and is_leftover(stem, project_key):
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
        if os.path.basename(path).startswith(NAME_PREFIX) and os.path.isdir(path) and remove(path):
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
    return not remove_cgroups([path])


def thaw(path: str) -> None:
    """Thaw a cgroup its run froze for the lock's budget (the v1 freezer or v2
    ``cgroup.freeze``, see seqbox/suspend.py): a frozen task cannot die."""
    for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        target = os.path.join(path, name)
        if os.path.exists(target):
            try:
                cgroupfs.write(target, value)
            except BackendError:  # gone meanwhile, or not ours: the kill says what is left
                pass


def remove_cgroups(paths: list[str]) -> list[str]:
    """Kill what runs in each cgroup tree of ``paths`` (all of them first: a
    process of a run is in each of its hierarchies), then remove them. The
    ones that could not be removed, each with the reason."""
    for path in paths:
        thaw(path)  # a tree its crashed run froze for a budget cannot die frozen
        cgroupfs.kill_at_once(path)
        cgroupfs.kill_until_empty(path, rounds=50, pause=0.01)  # and wait until they are gone
    failed = []
    for path in paths:
        try:
            cgroupfs.remove_tree(path, attempts=50)
        except BackendError as err:
            failed.append(f"{path} ({err})")
    return failed
