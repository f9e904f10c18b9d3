"""flock(2) helpers: locks the kernel releases when their holder dies, however
it dies. Files are opened relative to a directory fd, with O_NOFOLLOW, and
close-on-exec (a command's leftover daemon never inherits a lock).

Blocking waits happen in the main thread, woken every ``tick`` seconds by an
interval timer so the caller can redraw its status line or give up: no polling
loop, no threads.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat

from seqbox.errors import StateError

FILE_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


class Tick(Exception):
    """The wait's interval timer fired."""


def _on_alarm(signum: int, frame: object) -> None:
    raise Tick


def open_file(dir_fd: int, name: str, *, create: bool = True) -> int | None:
    """Open ``name`` under ``dir_fd`` for locking; None when it does not exist.

    Anything but a regular file there (a planted symlink, a FIFO, a directory)
    is refused with a StateError: seqbox never follows or blocks on it."""
    flags = FILE_FLAGS | os.O_NONBLOCK | (os.O_CREAT if create else 0)
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR, errno.EMLINK):
            raise _not_a_file(name) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_file(name)
    return fd  # O_NONBLOCK stays: flock and pread of a regular file ignore it


def _not_a_file(name: str) -> StateError:
    return StateError(
        f"refusing to use {name!r} in seqbox's state directory: it is not a regular file "
        "(a symlink, a directory or a FIFO was put there)",
        hint="remove it; seqbox recreates it ('seqbox doctor' shows the state dir)",
    )


def try_lock(fd: int, *, exclusive: bool = True) -> bool:
    """Take the lock without waiting; False when someone else holds it."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def wait_lock(fd: int, *, exclusive: bool, tick: float | None) -> bool:
    """Block until the lock is ours (True), or until ``tick`` seconds pass (False)."""
    operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    if tick is None:
        fcntl.flock(fd, operation)
        return True
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, max(tick, 0.001))
        try:
            fcntl.flock(fd, operation)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return True
    except Tick:
        # The timer may fire just after flock succeeded: a retry then returns at once.
        return try_lock(fd, exclusive=exclusive)
    finally:
        signal.signal(signal.SIGALRM, previous)


def still_linked(dir_fd: int, name: str, fd: int) -> bool:
    """Whether ``name`` in ``dir_fd`` is still the file open as ``fd``.

    A lock on a file that was unlinked (and maybe recreated) protects nothing:
    after taking a lock on a shared file, check this and start over if not.
    """
    try:
        on_disk = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def read_fd(fd: int, limit: int = 65536) -> bytes:
    return os.pread(fd, limit, 0)


def write_fd(fd: int, data: bytes) -> None:
    """Replace the file's content: a reader sees the old content, a prefix of
    the new one, the new one, or (its read took the old length just before the
    cut) zeros where the cut removed the old; readers take a torn read for what
    it is.

    The file is cut to its first byte, not to nothing, when the new content
    starts with the same byte (every entry is a JSON object; every ticket
    number starts with the same digit for years): ext4 takes a file cut to
    nothing and written again for a replace-by-truncate and starts writing it
    to disk when it is closed (auto_da_alloc). On the queue's hand-over that
    cost the holder 24 us at its close and the next holder 150 us when it cut
    the slot again, waiting for that write (measured on this machine).
    """
    keep = 1 if data and os.pread(fd, 1, 0) == data[:1] else 0
    os.ftruncate(fd, keep)
    os.pwrite(fd, data[keep:], keep)
