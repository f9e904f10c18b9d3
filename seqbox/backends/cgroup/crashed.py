"""What crashed runs left, as ``seqbox clean`` and ``seqbox status`` show
it: each run's cgroups grouped across the hierarchies it used, the commands
still running in them, and the records of crashed polled trees. (The run path
finds and removes its own project's leftovers with backends/cgroup/leftovers.py.)
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from seqbox.backends import procinfo
from seqbox.backends.base import NAME_PREFIX
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.cgroup.leftovers import find, is_leftover, remove_cgroups, run_id_of
from seqbox.backends.poll import treerecord

#: how deep ``seqbox clean`` looks for seqbox cgroups below each hierarchy's root
SEARCH_DEPTH = 8


@dataclass
class Leftover:
    """One crashed run's cgroups: the same name in each hierarchy it used."""

    name: str
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.paths = sorted(self.paths)

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
    """A process's command line (its words quoted as a shell takes them), or None
    when it is gone."""
    text = cgroupfs.try_read(f"/proc/{pid}/cmdline")
    if not text:
        return None
    return shlex.join(text.rstrip("\0").split("\0"))  # as a shell takes it: describe.py splits it back


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
            if entry.name.startswith(NAME_PREFIX):
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
                    if is_leftover(os.path.basename(p), project_key, p)
                )
    groups: dict[str, set[str]] = {}
    for path in paths:
        groups.setdefault(os.path.basename(path), set()).add(path)
    return [Leftover(name, list(group)) for name, group in sorted(groups.items())]


def remove_whole(leftover: Leftover) -> tuple[list[str], list[str]]:
    """Kill what runs in every one of the leftover's cgroups, then remove them
    all. Returns (the commands killed, the directories that could not be
    removed, each with the reason)."""
    commands = [c for c in (command_of(pid) for pid in leftover.pids()) if c]
    return commands, remove_cgroups(leftover.paths)


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
