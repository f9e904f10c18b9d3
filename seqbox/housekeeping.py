"""Looking after the queue's files from outside a run: listing projects and
their locks, cancelling a lock's waiters (``seqbox kill --all``), and removing
a lock's files once nobody holds or waits for it (the last one out turns off
the light)."""

from __future__ import annotations

import errno
import os

from seqbox import flocks
from seqbox.errors import StateError
from seqbox.queue import CANCEL, DOOR, SLOT_PREFIX, TICKET_PREFIX, LockDir, held, unlink, view
from seqbox.state import open_path, open_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from seqbox.records import Entry


def cancel_waiters(lockdir: LockDir) -> list[Entry]:
    """``seqbox kill --all``: every waiter that has arrived gives up, none starts."""
    door = flocks.open_file(lockdir.fd, DOOR)
    assert door is not None
    try:
        flocks.wait_lock(door, exclusive=True, tick=None)
        text = flocks.read_fd(door).decode().strip()
        last = int(text) if text.isdigit() else 0
        fd = flocks.open_file(lockdir.fd, CANCEL)
        assert fd is not None
        try:
            flocks.write_fd(fd, str(last).encode())
        finally:
            os.close(fd)
        return view(lockdir).waiters
    finally:
        os.close(door)


def tidy(lockdir: LockDir) -> bool:
    """When nobody holds or waits for the lock any more, remove its files and
    directory. Safe against newcomers: they re-check that the files they
    locked are still linked."""
    fd = lockdir.fd
    door = flocks.open_file(fd, DOOR, create=False)
    if door is None:
        return False
    locked: list[int] = []
    try:
        if not flocks.try_lock(door):
            return False
        for name in lockdir.names():
            if name.startswith(".new-"):  # joining holds the door: this joiner died
                unlink(fd, name)
            elif name.startswith(TICKET_PREFIX):
                if held(fd, name):
                    return False
                unlink(fd, name)
        for k in lockdir.slots():
            slot = flocks.open_file(fd, f"{SLOT_PREFIX}{k}", create=False)
            if slot is None:
                continue
            locked.append(slot)
            if not flocks.try_lock(slot):
                return False
        for name in lockdir.names():
            if name != DOOR:
                unlink(fd, name)
        unlink(fd, DOOR)
        _remove_empty_parents(lockdir)
        return True
    finally:
        for slot in locked:
            os.close(slot)
        os.close(door)


def _remove_empty_parents(lockdir: LockDir) -> None:
    """rmdir locks/<name>, then locks/ and projects/<key> when empty."""
    try:
        state = open_state_dir(lockdir.environ)
    except StateError:
        return
    try:
        for path in (
            f"projects/{lockdir.project_key}/locks/{lockdir.lock}",
            f"projects/{lockdir.project_key}/locks",
            f"projects/{lockdir.project_key}",
            "projects",
        ):
            try:
                os.rmdir(path, dir_fd=state)
            except OSError as err:
                if err.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if err.errno != errno.ENOENT:
                    return
    finally:
        os.close(state)


def project_locks(project_key: str, environ: Mapping[str, str] | None = None) -> Iterator[LockDir]:
    """Every lock directory of a project that exists now."""
    state = open_state_dir(environ)
    try:
        names = _listdir_at(state, f"projects/{project_key}/locks")
    finally:
        os.close(state)
    for name in sorted(names):
        try:
            yield LockDir(project_key, name, environ, create=False)
        except StateError:
            continue


def all_projects(environ: Mapping[str, str] | None = None) -> list[str]:
    state = open_state_dir(environ)
    try:
        return sorted(_listdir_at(state, "projects"))
    finally:
        os.close(state)


def _listdir_at(dir_fd: int, relative: str) -> list[str]:
    """The names in ``relative`` under ``dir_fd``, following no symlink."""
    fd = open_path(dir_fd, relative.split("/"), "<state>")
    if fd is None:
        return []
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)
